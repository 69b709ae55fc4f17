//! One file per subcommand. `attach` drives the data plane itself; every
//! other command is a client of the daemon's API (`client` holds what they
//! share).

pub mod apply;
pub mod attach;
pub mod cleanup;
pub mod client;
pub mod environment;
pub mod export;
pub mod generate;
pub mod group;
pub mod host;
pub mod nic;
pub mod port_list;
pub mod prefix_list;
pub mod rule;
pub mod run;
pub mod sessions;
pub mod settings;
pub mod snapshot;
pub mod stats;
pub mod status;
pub mod trace;
pub mod verify;

//! sg-agent: the user-space half of sg.
//!
//! What a policy means and how it compiles is the pure `sg_policy` crate; this
//! one puts it in force and serves it.
//! Kernel edges: [`dataplane`] — loading, attaching and reading the eBPF
//! programs; [`netns`] — entering network namespaces.

pub mod api;
pub mod clock;
pub mod daemon;
pub mod dataplane;
pub mod heap;
pub mod iface;
pub mod logging;
pub mod metrics;
pub mod netlink;
pub mod netns;
pub mod reconcile;
pub mod store;
pub mod systemd;

//! `sg-agent settings`: the agent settings that take part in decisions
//! (platform addresses, port 25, session and fragment timeouts, snapshot
//! retention).

use std::path::Path;

use serde_json::Value;
use sg_agent::api::{Request, StateRequest};

use super::client::{self, Output};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
    #[command(flatten)]
    out: Output,
}

#[derive(clap::Subcommand)]
enum Verb {
    /// Show the settings.
    Show,
    /// Change some settings; prints them all afterwards.
    Set {
        /// Drop egress TCP to port 25.
        #[arg(
            long,
            value_name = "true|false",
            action = clap::ArgAction::Set,
            value_parser = clap::builder::BoolishValueParser::new()
        )]
        block_port_25: Option<bool>,
        /// An always-allowed platform address or CIDR; repeat for more. The
        /// ones given replace the current ones.
        #[arg(long = "platform-address", value_name = "CIDR")]
        platform_addresses: Vec<String>,
        /// Remove every platform address.
        #[arg(long, conflicts_with = "platform_addresses")]
        clear_platform_addresses: bool,
        /// Days a group snapshot is kept.
        #[arg(long, value_name = "DAYS")]
        snapshot_retention_days: Option<u32>,
        /// Idle timeout of a TCP session before its handshake completes.
        #[arg(long, value_name = "SECS")]
        tcp_handshake_secs: Option<u32>,
        /// Idle timeout of an established TCP session.
        #[arg(long, value_name = "SECS")]
        tcp_established_secs: Option<u32>,
        /// Idle timeout of a closing TCP session (RST, or FIN both ways).
        #[arg(long, value_name = "SECS")]
        tcp_closing_secs: Option<u32>,
        /// Idle timeout of UDP, ICMP and every other session.
        #[arg(long, value_name = "SECS")]
        other_secs: Option<u32>,
        /// How long a first fragment is remembered for its later fragments
        /// (1..=600).
        #[arg(long, value_name = "SECS")]
        fragment_timeout_secs: Option<u32>,
    },
}

pub fn run(socket: &Path, args: &Args) -> anyhow::Result<()> {
    let request = match &args.verb {
        Verb::Show => Request::State(StateRequest::SettingsShow),
        Verb::Set {
            block_port_25,
            platform_addresses,
            clear_platform_addresses,
            snapshot_retention_days,
            tcp_handshake_secs,
            tcp_established_secs,
            tcp_closing_secs,
            other_secs,
            fragment_timeout_secs,
        } => Request::State(StateRequest::SettingsSet {
            block_port_25: *block_port_25,
            platform_addresses: client::replacement(platform_addresses, *clear_platform_addresses),
            snapshot_retention_days: *snapshot_retention_days,
            tcp_handshake_secs: *tcp_handshake_secs,
            tcp_established_secs: *tcp_established_secs,
            tcp_closing_secs: *tcp_closing_secs,
            other_secs: *other_secs,
            fragment_timeout_secs: *fragment_timeout_secs,
        }),
    };
    let answer = client::request(socket, &request)?;
    // Read as JSON rather than the model, so settings added later show too.
    args.out.show(answer, |settings: Value| {
        client::fields(&client::flatten(&settings))
    })
}

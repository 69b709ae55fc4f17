//! `sg-bench`: the benchmark, run by `cargo xtask bench` and `cargo xtask
//! throughput` (needs root, trafgen, nft, iptables).
//!
//! - with no command: kernel-reported cost per packet (both programs, both
//!   families, 1 to 1,000 rules, sessions, new flows), update latency, map
//!   memory, then throughput unless `--per-packet-only` ([`bench`]);
//! - `throughput`: packets per second through a veth pair, sg against no
//!   filter, nftables and iptables ([`throughput`]).
//!
//! A crate of its own, apart from `xtask`, so that linting does not wait for
//! the agent and its eBPF programs to build.

mod bench;
mod throughput;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sg-bench", args_conflicts_with_subcommands = true)]
struct Cli {
    /// Skip the throughput part (about six minutes).
    #[arg(long)]
    per_packet_only: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Only the throughput part: packets per second through a veth pair with
    /// no filter, sg, nftables and iptables (target/throughput.md).
    Throughput,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => bench::run(cli.per_packet_only),
        Some(Command::Throughput) => throughput::run(),
    }
}

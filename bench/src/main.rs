//! `sg-bench`: the benchmark, run by `cargo xtask bench` and `cargo xtask
//! throughput` (needs root, trafgen, nft, iptables).
//!
//! - with no command: kernel-reported cost per packet (both programs, both
//!   families, 1 to 1,000 rules, sessions, new flows), update latency, map
//!   memory ([`bench`]), then the fleet ([`fleet`]: propagation between
//!   agents of one etcd, convergence and memory at 10,000 remote NICs) and
//!   throughput, unless `--per-packet-only`; `--no-fleet` skips the fleet,
//!   `--fleet-only` runs only it;
//! - `throughput`: packets per second through a veth pair, sg against no
//!   filter, nftables and iptables ([`throughput`]).
//!
//! A crate of its own, apart from `xtask`, so that linting does not wait for
//! the agent and its eBPF programs to build.

mod bench;
mod fleet;
mod host_scale;
mod report;
mod throughput;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sg-bench", args_conflicts_with_subcommands = true)]
struct Cli {
    /// Only the per-packet part (per packet, new flows, updates, memory):
    /// skip the fleet and the throughput parts.
    #[arg(long, conflicts_with_all = ["fleet_only", "no_fleet"])]
    per_packet_only: bool,
    /// Skip the fleet part (about two minutes).
    #[arg(long, conflicts_with = "fleet_only")]
    no_fleet: bool,
    /// Only the fleet part (target/fleet.md).
    #[arg(long)]
    fleet_only: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Only the throughput part: packets per second through a veth pair with
    /// no filter, sg, nftables and iptables (target/throughput.md).
    Throughput,
    /// Only the updates at host scale (100 NICs × 1,000 rules) and the
    /// large group (10,000 members named on 64 NICs), printed.
    HostScale,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => bench::run(bench::Parts {
            per_packet: !cli.fleet_only,
            fleet: !cli.per_packet_only && !cli.no_fleet,
            throughput: !cli.per_packet_only && !cli.fleet_only,
        }),
        Some(Command::Throughput) => throughput::run(),
        Some(Command::HostScale) => {
            let ns = sg_tests::topology::Netns::new("bench-scale")?;
            bench::links(&ns)?;
            print!("{}", host_scale::run(&ns)?);
            print!("{}", host_scale::large(&ns)?);
            Ok(())
        }
    }
}

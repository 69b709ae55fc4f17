//! `cargo xtask …`: the project's helpers.
//!
//! - `demo`: two namespaces, the agent attached to one end, a table of which
//!   probes pass, the agent's counters, and a check that detaching left nothing
//!   (the `sg-demo` crate, run through cargo);
//! - `lint`: formatting, and clippy with warnings as errors for the host crates
//!   and for the eBPF crate on its own target;
//! - `bench`: kernel-reported cost per packet (both programs, both families,
//!   1 to 1,000 rules, sessions, new flows), update latency, map memory, the
//!   fleet (propagation, convergence and memory against a real etcd), then
//!   throughput;
//! - `dist`: a Debian package of the agent (binary, systemd unit, man pages,
//!   completions) in `target/dist/`, built with dpkg-deb;
//! - `throughput`: packets per second through a veth pair, sg against no
//!   filter, nftables and iptables (both the `sg-bench` crate, run through
//!   cargo).
//!
//! xtask itself links none of the workspace's crates: it starts without the
//! agent and its eBPF programs being built first, so `lint` checks formatting
//! even when they do not build.

mod cycles;
mod dist;
mod lint;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the demo (needs root).
    Demo {
        /// Two hosts of one fleet on etcd instead of one host on SQLite.
        #[arg(long)]
        fleet: bool,
    },
    /// Build a Debian package of the agent in target/dist/ (needs dpkg-deb).
    Dist {
        /// Package the dev-profile binary (fast; for tests) instead of a
        /// release build.
        #[arg(long)]
        debug: bool,
    },
    /// Check formatting and run clippy (host crates and the eBPF crate).
    Lint,
    /// The whole benchmark (needs root, trafgen, nft, iptables, etcd): cost
    /// per packet, new flows, updates, memory, the fleet, then throughput;
    /// all tables go to target/bench.md.
    Bench {
        /// Only the per-packet part: skip the fleet and throughput parts.
        #[arg(long, conflicts_with_all = ["fleet_only", "no_fleet"])]
        per_packet_only: bool,
        /// Skip the fleet part (about two minutes).
        #[arg(long, conflicts_with = "fleet_only")]
        no_fleet: bool,
        /// Only the fleet part (target/fleet.md).
        #[arg(long)]
        fleet_only: bool,
    },
    /// Only the throughput part: packets per second through a veth pair with
    /// no filter, sg, nftables and iptables (target/throughput.md).
    Throughput,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo { fleet } => {
            let mut args = vec!["run", "--quiet", "--locked", "--package", "sg-demo"];
            if fleet {
                args.extend(["--", "--fleet"]);
            }
            cargo(&args, &[])
        }
        Command::Dist { debug } => dist::run(debug).map(drop),
        Command::Lint => lint::run(),
        Command::Bench {
            per_packet_only,
            no_fleet,
            fleet_only,
        } => {
            // Compile and map-writing times mean nothing in a debug build.
            let mut args = vec![
                "run",
                "--release",
                "--quiet",
                "--locked",
                "--package",
                "sg-bench",
                "--",
            ];
            for (on, flag) in [
                (per_packet_only, "--per-packet-only"),
                (no_fleet, "--no-fleet"),
                (fleet_only, "--fleet-only"),
            ] {
                if on {
                    args.push(flag);
                }
            }
            cargo(&args, &[])
        }
        Command::Throughput => cargo(
            &[
                "run",
                "--quiet",
                "--locked",
                "--package",
                "sg-bench",
                "--",
                "throughput",
            ],
            &[],
        ),
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where cargo puts build output.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// `cargo ARGS` in the workspace root, with the cargo that runs xtask.
pub fn cargo_command(args: &[&str]) -> std::process::Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = std::process::Command::new(cargo);
    command.args(args).current_dir(root());
    command
}

/// Runs `cargo ARGS` in the workspace root, failing on a non-zero exit.
pub fn cargo(args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<()> {
    let status = cargo_command(args).envs(envs.iter().copied()).status()?;
    anyhow::ensure!(
        status.success(),
        "cargo {} failed: {status}",
        args.join(" ")
    );
    Ok(())
}

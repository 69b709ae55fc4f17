//! `sg-agent`: the command line. One file per subcommand under `cmd/`.

mod cmd;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sg-agent",
    version,
    about = "Cloud-style security groups enforced by eBPF"
)]
struct Cli {
    #[command(flatten)]
    connection: cmd::client::Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Set the whole desired state from a YAML or JSON document, all or
    /// nothing.
    Apply(cmd::apply::Args),
    /// Attach the data plane to an interface until SIGINT or SIGTERM, then
    /// detach and print the packet counters.
    Attach(cmd::attach::Args),
    /// Remove every program, pin and qdisc the agent left (after stopping it).
    Cleanup(cmd::cleanup::Args),
    /// Print the whole state as an `apply` document.
    Export(cmd::export::Args),
    /// Write man pages or shell completions (for packaging).
    #[command(hide = true)]
    Generate(cmd::generate::Args),
    /// Manage security groups.
    Group(cmd::group::Args),
    /// The hosts of a fleet: list them, remove one gone for good.
    Host(cmd::host::Args),
    /// Bind NICs to security groups.
    Nic(cmd::nic::Args),
    /// Manage port lists (`prl-…`).
    PortList(cmd::port_list::Args),
    /// Manage prefix lists (`pl-…`).
    PrefixList(cmd::prefix_list::Args),
    /// Manage a group's rules; list a NIC's merged rules.
    Rule(cmd::rule::Args),
    /// Run the daemon: keep the policy, enforce it, serve the API on the socket.
    Run(cmd::run::Args),
    /// List or flush sessions.
    Sessions(cmd::sessions::Args),
    /// Show or change the agent settings.
    Settings(cmd::settings::Args),
    /// List, show and restore group snapshots.
    Snapshot(cmd::snapshot::Args),
    /// Packet counters, rule hits, decisions by reason, session events.
    Stats(cmd::stats::Args),
    /// The daemon's own state.
    Status(cmd::status::Args),
    /// Explain the verdict for one packet on a NIC.
    Trace(cmd::trace::Args),
    /// Check that the kernel holds exactly the compiled policy; repair it.
    Verify(cmd::verify::Args),
}

/// The command line (and the `SG_AGENT_…` variables its flags read); exits
/// on an error, naming the variable when a refused value came from one.
fn parse() -> Cli {
    let words: Vec<std::ffi::OsString> = std::env::args_os().collect();
    Cli::try_parse_from(&words)
        .unwrap_or_else(|e| cmd::environment::explain(e, &Cli::command(), &words).exit())
}

fn main() -> ExitCode {
    sg_agent::logging::init();
    let cli = parse();
    if !matches!(cli.command, Command::Run(_) | Command::Attach(_)) {
        // A client printing into a closed pipe (`sg-agent rule list | head`)
        // ends there, as other command-line tools do, rather than panicking
        // in `println!`. The daemon keeps Rust's default (ignored: a write
        // to a closed socket is an error it handles).
        // SAFETY: `signal` with the default disposition, before any thread.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let socket = cli.connection.socket.as_path();
    let result = match &cli.command {
        Command::Apply(args) => cmd::apply::run(socket, args),
        Command::Attach(args) => cmd::attach::run(args),
        Command::Cleanup(args) => cmd::cleanup::run(args),
        Command::Export(args) => cmd::export::run(socket, args),
        Command::Generate(args) => cmd::generate::run(args, Cli::command()),
        Command::Group(args) => cmd::group::run(socket, args),
        Command::Host(args) => cmd::host::run(socket, args),
        Command::Nic(args) => cmd::nic::run(socket, args),
        Command::PortList(args) => cmd::port_list::run(socket, args),
        Command::PrefixList(args) => cmd::prefix_list::run(socket, args),
        Command::Rule(args) => cmd::rule::run(socket, args),
        Command::Run(args) => cmd::run::run(socket, args),
        Command::Sessions(args) => cmd::sessions::run(socket, args),
        Command::Settings(args) => cmd::settings::run(socket, args),
        Command::Snapshot(args) => cmd::snapshot::run(socket, args),
        Command::Stats(args) => cmd::stats::run(socket, args),
        Command::Status(args) => cmd::status::run(socket, args),
        Command::Trace(args) => cmd::trace::run(socket, args),
        Command::Verify(args) => cmd::verify::run(socket, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The daemon's messages quote what the user gave.
            eprintln!("sg-agent: {}", cmd::client::printable(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

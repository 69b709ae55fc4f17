//! `sg-agent`: the command line. One file per subcommand under `cmd/`.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sg-agent",
    version,
    about = "Cloud-style security groups enforced by eBPF"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach the data plane to an interface until SIGINT or SIGTERM, then
    /// detach and print the packet counters.
    Attach(cmd::attach::Args),
    /// List or flush the sessions of the agent serving a network namespace.
    Sessions(cmd::sessions::Args),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Attach(args) => cmd::attach::run(&args),
        Command::Sessions(args) => cmd::sessions::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sg-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

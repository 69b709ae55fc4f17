//! `sg-agent host`: the hosts of a fleet (etcd stores only).

use std::path::Path;

use serde_json::Value;
use sg_agent::api::{HostRequest, Request};

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
    /// Every host: live ones (their agents record their revision in force)
    /// and those that bind NICs.
    List,
    /// Remove a host that is gone for good: its NIC bindings leave the fleet,
    /// so its NICs stop being members of their groups everywhere.
    Remove {
        /// The host's name (as its agent's --host).
        name: String,
        /// Remove it although its agent is live.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(socket: &Path, args: &Args) -> anyhow::Result<()> {
    let request = match &args.verb {
        Verb::List => Request::Host(HostRequest::List),
        Verb::Remove { name, force } => Request::Host(HostRequest::Remove {
            host: name.clone(),
            force: *force,
        }),
    };
    let answer = client::request(socket, &request)?;
    match args.verb {
        Verb::List => args.out.show(answer, |hosts: Vec<Value>| {
            let mut t = client::Table::new(&["HOST", "LIVE", "NICS", "REVISION", "BEHIND"]);
            for h in hosts {
                let name = h["host"].as_str().unwrap_or("?");
                t.row(vec![
                    if h["this"] == true {
                        format!("{name} (this)")
                    } else {
                        name.to_owned()
                    },
                    client::yes_no(h["live"] == true),
                    client::cell(&h["nics"]),
                    client::cell(&h["revision"]),
                    client::cell(&h["behind"]),
                ]);
            }
            t.render()
        }),
        Verb::Remove { .. } => args
            .out
            .show(answer, |v: Value| client::fields(&client::flatten(&v))),
    }
}

//! `sg-agent host`: the hosts of a fleet (etcd stores only).

use std::path::Path;

use sg_agent::api::{
    HostRequest, Request,
    reply::{HostRemoved, HostRow},
};

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
        Verb::List => args.out.show(answer, |hosts: Vec<HostRow>| {
            let mut t = client::Table::new(&["HOST", "LIVE", "NICS", "REVISION", "BEHIND"]);
            let maybe = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
            for h in hosts {
                t.row(vec![
                    if h.this {
                        format!("{} (this)", h.host)
                    } else {
                        h.host.clone()
                    },
                    client::yes_no(h.live),
                    h.nics.to_string(),
                    maybe(h.revision),
                    maybe(h.behind),
                ]);
            }
            t.render()
        }),
        Verb::Remove { .. } => args.out.show(answer, |r: HostRemoved| {
            client::fields(&[("host", r.host), ("unbound", r.unbound.to_string())])
        }),
    }
}

//! `sg-agent sessions`: list or flush the daemon's sessions.

use std::path::Path;

use anyhow::bail;
use sg_agent::api::{Request, SessionFilter, SessionRequest};

use sg_agent::api::reply;

use super::client::{self, Output, Table};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    #[command(flatten)]
    out: Output,
}

#[derive(clap::Subcommand)]
enum Action {
    /// List sessions: NIC, tuple, state, age, idle time, policy version.
    List {
        #[command(flatten)]
        select: Select,
        /// At most this many sessions (the daemon streams them; default all).
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Remove sessions; their next packets are decided by the rules again.
    Flush {
        #[command(flatten)]
        select: Select,
        /// Flush every session (required when no filter is given).
        #[arg(long)]
        all: bool,
    },
}

#[derive(clap::Args)]
struct Select {
    /// Only the sessions of this NIC (interface name).
    #[arg(long)]
    nic: Option<String>,
    /// Only this protocol: tcp, udp, icmp, icmpv6, gre or a number.
    #[arg(long)]
    proto: Option<String>,
    /// Only sessions with an endpoint in this address or prefix.
    #[arg(long)]
    addr: Option<String>,
    /// Only sessions with an endpoint on this port (or echo identifier).
    #[arg(long)]
    port: Option<u16>,
}

impl Select {
    fn filter(&self) -> SessionFilter {
        SessionFilter {
            nic: self.nic.clone(),
            protocol: self.proto.clone(),
            address: self.addr.clone(),
            port: self.port,
        }
    }
}

pub fn run(socket: &Path, args: &Args) -> anyhow::Result<()> {
    match &args.action {
        Action::List { select, limit } => {
            let request = Request::Session(SessionRequest::List {
                filter: select.filter(),
                limit: *limit,
            });
            let answer = client::request(socket, &request)?;
            args.out
                .show(answer, |list: Vec<reply::SessionRow>| table(&list))
        }
        Action::Flush { select, all } => {
            let filter = select.filter();
            if filter == SessionFilter::default() && !*all {
                bail!("flush needs a filter (--nic, --proto, --addr, --port) or --all");
            }
            let request = Request::Session(SessionRequest::Flush { filter, all: *all });
            let answer = client::request(socket, &request)?;
            args.out.show(answer, |r: reply::Flushed| {
                format!(
                    "flushed {}\n",
                    client::count(
                        usize::try_from(r.flushed).unwrap_or(usize::MAX),
                        "session",
                        "sessions"
                    )
                )
            })
        }
    }
}

/// `address:port`, the address in brackets for IPv6.
fn endpoint(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

fn table(list: &[reply::SessionRow]) -> String {
    let mut t = Table::new(&[
        "nic",
        "proto",
        "initiator",
        "responder",
        "dir",
        "state",
        "age",
        "idle",
        "version",
    ]);
    for s in list {
        t.row(vec![
            s.nic.clone(),
            s.protocol.clone(),
            endpoint(&s.a, s.a_port),
            endpoint(&s.b, s.b_port),
            s.direction.clone(),
            s.state.clone(),
            format!("{:.1}s", s.age_secs),
            format!("{:.1}s", s.idle_secs),
            s.version.to_string(),
        ]);
    }
    let mut text = if list.is_empty() {
        String::new()
    } else {
        t.render()
    };
    text.push_str(&client::count(list.len(), "session", "sessions"));
    text.push('\n');
    text
}

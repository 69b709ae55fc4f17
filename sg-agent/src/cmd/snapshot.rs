//! `sg-agent snapshot`: the kept copies of groups' rules, and putting one
//! back.

use std::path::Path;

use sg_agent::api::{Request, SnapshotRequest, reply};
use sg_policy::snapshot::{Snapshot, SnapshotInfo};

use super::{
    client::{self, Output, Table},
    rule,
};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
    #[command(flatten)]
    out: Output,
}

#[derive(clap::Subcommand)]
enum Verb {
    /// List snapshots, newest first.
    List {
        /// Only this group's (`sg-…`).
        #[arg(long)]
        group: Option<String>,
    },
    /// Show a snapshot and the rules it holds.
    Show {
        /// The snapshot's number.
        id: u64,
    },
    /// Put a snapshot's rules back into its group, replacing the group's
    /// current rules.
    Restore {
        /// The snapshot's number.
        id: u64,
    },
}

pub fn run(socket: &Path, args: &Args) -> anyhow::Result<()> {
    let out = &args.out;
    let request = match &args.verb {
        Verb::List { group } => Request::Snapshot(SnapshotRequest::List {
            group: group.clone(),
        }),
        Verb::Show { id } => Request::Snapshot(SnapshotRequest::Show { id: *id }),
        Verb::Restore { id } => Request::Snapshot(SnapshotRequest::Restore { id: *id }),
    };
    let answer = client::request(socket, &request)?;
    match &args.verb {
        Verb::List { .. } => out.show(answer, |list: Vec<SnapshotInfo>| {
            if list.is_empty() {
                return "no snapshots\n".to_owned();
            }
            let mut t = Table::new(&[
                "id",
                "group",
                "name",
                "window start (UTC)",
                "taken at (UTC)",
                "rules",
            ]);
            for s in list {
                t.row(vec![
                    s.id.to_string(),
                    s.group.to_string(),
                    s.group_name,
                    utc(s.window_start),
                    utc(s.taken_at),
                    s.rules.to_string(),
                ]);
            }
            t.render()
        }),
        Verb::Show { .. } => out.show(answer, |s: Snapshot| {
            let mut text = client::fields(&[
                ("snapshot", s.id.to_string()),
                ("group", s.group.to_string()),
                ("name", s.group_name),
                ("window start", format!("{} UTC", utc(s.window_start))),
                ("taken at", format!("{} UTC", utc(s.taken_at))),
            ]);
            text.push('\n');
            text.push_str(&rule::render(&s.rules));
            text
        }),
        Verb::Restore { .. } => out.show(answer, |r: reply::Restored| {
            format!(
                "restored {} to {}\n",
                client::count(
                    usize::try_from(r.rules).unwrap_or(usize::MAX),
                    "rule",
                    "rules"
                ),
                r.group
            )
        }),
    }
}

/// Unix seconds as a UTC time.
fn utc(secs: u64) -> String {
    sg_agent::clock::utc(i64::try_from(secs).unwrap_or(i64::MAX))
}

//! `sg-agent snapshot`: the kept copies of groups' rules, and putting one
//! back.

use std::path::Path;

use serde::Deserialize;
use sg_agent::api::{Request, SnapshotRequest};
use sg_policy::Rule;

use sg_agent::api::reply;

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

/// A snapshot; times are Unix seconds.
#[derive(Deserialize)]
struct Snapshot<R> {
    id: u64,
    group: String,
    group_name: String,
    window_start: i64,
    taken_at: i64,
    /// A count in a list, the rules themselves in `show`.
    rules: R,
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
        Verb::List { .. } => out.show(answer, |list: Vec<Snapshot<u64>>| {
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
                    s.group,
                    s.group_name,
                    sg_agent::clock::utc(s.window_start),
                    sg_agent::clock::utc(s.taken_at),
                    s.rules.to_string(),
                ]);
            }
            t.render()
        }),
        Verb::Show { .. } => out.show(answer, |s: Snapshot<Vec<Rule>>| {
            let mut text = client::fields(&[
                ("snapshot", s.id.to_string()),
                ("group", s.group),
                ("name", s.group_name),
                (
                    "window start",
                    format!("{} UTC", sg_agent::clock::utc(s.window_start)),
                ),
                (
                    "taken at",
                    format!("{} UTC", sg_agent::clock::utc(s.taken_at)),
                ),
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

//! `sg-agent port-list`: named sets of port ranges (`prl-…`) that rules can
//! name as their destination ports.

use std::path::Path;

use sg_agent::api::{PortListRequest, Request};
use sg_policy::PortList;

use sg_agent::api::reply;

use super::client::{self, Output, Table};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
    #[command(flatten)]
    out: Output,
}

#[derive(clap::Subcommand)]
enum Verb {
    /// Create a port list; prints its id.
    Create {
        /// The list's name.
        name: String,
        /// The most entries the list may hold (counts toward quotas).
        #[arg(long)]
        max_entries: u32,
        /// What the list is for.
        #[arg(long, default_value = "")]
        description: String,
        /// An entry, `a/b` or `a/b description…`; repeat for more.
        #[arg(long = "entry", value_name = "ENTRY")]
        entries: Vec<String>,
    },
    /// Change a port list; entries given replace all of its entries.
    Modify {
        /// The list (`prl-…`).
        id: String,
        /// The new name.
        #[arg(long)]
        name: Option<String>,
        /// The new description.
        #[arg(long)]
        description: Option<String>,
        /// The new most entries.
        #[arg(long)]
        max_entries: Option<u32>,
        /// An entry, `a/b` or `a/b description…`; repeat for more.
        #[arg(long = "entry", value_name = "ENTRY")]
        entries: Vec<String>,
        /// Remove every entry.
        #[arg(long, conflicts_with = "entries")]
        clear_entries: bool,
    },
    /// Delete a port list (refused while a rule names it).
    Delete {
        /// The list (`prl-…`).
        id: String,
    },
    /// List port lists.
    List,
    /// Show a port list and its entries.
    Show {
        /// The list (`prl-…`).
        id: String,
    },
}

pub fn run(socket: &Path, args: &Args) -> anyhow::Result<()> {
    let out = &args.out;
    let request = match &args.verb {
        Verb::Create {
            name,
            max_entries,
            description,
            entries,
        } => Request::PortList(PortListRequest::Create {
            name: name.clone(),
            description: description.clone(),
            max_entries: *max_entries,
            entries: entries.clone(),
        }),
        Verb::Modify {
            id,
            name,
            description,
            max_entries,
            entries,
            clear_entries,
        } => Request::PortList(PortListRequest::Modify {
            id: id.clone(),
            name: name.clone(),
            description: description.clone(),
            max_entries: *max_entries,
            entries: client::replacement(entries, *clear_entries),
        }),
        Verb::Delete { id } => Request::PortList(PortListRequest::Delete { id: id.clone() }),
        Verb::List => Request::PortList(PortListRequest::List),
        Verb::Show { id } => Request::PortList(PortListRequest::Show { id: id.clone() }),
    };
    let answer = client::request(socket, &request)?;
    match &args.verb {
        Verb::Create { .. } => out.show(answer, |r: reply::Changed| format!("{}\n", r.id)),
        Verb::Modify { .. } => out.show(answer, |r: reply::Changed| format!("modified {}\n", r.id)),
        Verb::Delete { .. } => out.show(answer, |r: reply::Deleted| {
            format!("deleted {}\n", r.deleted)
        }),
        Verb::List => out.show(answer, |lists: Vec<PortList>| {
            if lists.is_empty() {
                return "no port lists\n".to_owned();
            }
            let mut t = Table::new(&["id", "name", "entries", "max", "description"]);
            for l in lists {
                t.row(vec![
                    l.id.to_string(),
                    l.name,
                    l.entries.len().to_string(),
                    l.max_entries.to_string(),
                    l.description,
                ]);
            }
            t.render()
        }),
        Verb::Show { .. } => out.show(answer, |l: PortList| {
            let mut text = client::fields(&[
                ("id", l.id.to_string()),
                ("name", l.name),
                ("description", l.description),
                ("max entries", l.max_entries.to_string()),
            ]);
            text.push('\n');
            if l.entries.is_empty() {
                text.push_str("no entries\n");
            } else {
                let mut t = Table::new(&["ports", "description"]);
                for e in l.entries {
                    t.row(vec![e.range.to_string(), e.description]);
                }
                text.push_str(&t.render());
            }
            text
        }),
    }
}

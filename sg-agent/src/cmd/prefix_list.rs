//! `sg-agent prefix-list`: named sets of CIDRs (`pl-…`) that rules can name
//! as their peer.

use std::path::Path;

use sg_agent::api::{PrefixListRequest, Request};
use sg_policy::PrefixList;

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
    /// Create a prefix list; prints its id.
    Create {
        /// The list's name.
        name: String,
        /// `ipv4` or `ipv6`: every entry is of this family.
        #[arg(long)]
        family: String,
        /// The most entries the list may hold (counts toward quotas).
        #[arg(long)]
        max_entries: u32,
        /// What the list is for.
        #[arg(long, default_value = "")]
        description: String,
        /// An entry, `CIDR` or `CIDR description…`; repeat for more.
        #[arg(long = "entry", value_name = "ENTRY")]
        entries: Vec<String>,
    },
    /// Change a prefix list; entries given replace all of its entries.
    Modify {
        /// The list (`pl-…`).
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
        /// An entry, `CIDR` or `CIDR description…`; repeat for more.
        #[arg(long = "entry", value_name = "ENTRY")]
        entries: Vec<String>,
        /// Remove every entry.
        #[arg(long, conflicts_with = "entries")]
        clear_entries: bool,
    },
    /// Delete a prefix list (refused while a rule names it).
    Delete {
        /// The list (`pl-…`).
        id: String,
    },
    /// List prefix lists.
    List,
    /// Show a prefix list and its entries.
    Show {
        /// The list (`pl-…`).
        id: String,
    },
}

pub fn run(socket: &Path, args: &Args) -> anyhow::Result<()> {
    let out = &args.out;
    let request = match &args.verb {
        Verb::Create {
            name,
            family,
            max_entries,
            description,
            entries,
        } => Request::PrefixList(PrefixListRequest::Create {
            name: name.clone(),
            description: description.clone(),
            family: family.clone(),
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
        } => Request::PrefixList(PrefixListRequest::Modify {
            id: id.clone(),
            name: name.clone(),
            description: description.clone(),
            max_entries: *max_entries,
            entries: client::replacement(entries, *clear_entries),
        }),
        Verb::Delete { id } => Request::PrefixList(PrefixListRequest::Delete { id: id.clone() }),
        Verb::List => Request::PrefixList(PrefixListRequest::List),
        Verb::Show { id } => Request::PrefixList(PrefixListRequest::Show { id: id.clone() }),
    };
    let answer = client::request(socket, &request)?;
    match &args.verb {
        Verb::Create { .. } => out.show(answer, |r: reply::Changed| format!("{}\n", r.id)),
        Verb::Modify { .. } => out.show(answer, |r: reply::Changed| format!("modified {}\n", r.id)),
        Verb::Delete { .. } => out.show(answer, |r: reply::Deleted| {
            format!("deleted {}\n", r.deleted)
        }),
        Verb::List => out.show(answer, |lists: Vec<PrefixList>| {
            if lists.is_empty() {
                return "no prefix lists\n".to_owned();
            }
            let mut t = Table::new(&["id", "name", "family", "entries", "max", "description"]);
            for l in lists {
                t.row(vec![
                    l.id.to_string(),
                    l.name,
                    l.family.to_string(),
                    l.entries.len().to_string(),
                    l.max_entries.to_string(),
                    l.description,
                ]);
            }
            t.render()
        }),
        Verb::Show { .. } => out.show(answer, |l: PrefixList| {
            let mut text = client::fields(&[
                ("id", l.id.to_string()),
                ("name", l.name),
                ("description", l.description),
                ("family", l.family.to_string()),
                ("max entries", l.max_entries.to_string()),
            ]);
            text.push('\n');
            if l.entries.is_empty() {
                text.push_str("no entries\n");
            } else {
                let mut t = Table::new(&["cidr", "description"]);
                for e in l.entries {
                    t.row(vec![e.cidr.to_string(), e.description]);
                }
                text.push_str(&t.render());
            }
            text
        }),
    }
}

//! `sg-agent group`: create, list, show, modify, delete and clone security
//! groups; set a basic group's inner policy; find redundant rules.

use std::path::Path;

use sg_agent::api::{GroupCreate, GroupRequest, Request};
use sg_policy::SecurityGroup;

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
    /// Create a security group; prints its id.
    Create {
        /// The group's name.
        name: String,
        /// What the group is for.
        #[arg(long, default_value = "")]
        description: String,
        /// `basic` (default) or `enterprise`.
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// Traffic between the group's own NICs: `Accept` or `Drop` (basic
        /// groups only).
        #[arg(long, value_name = "POLICY")]
        inner_policy: Option<String>,
        /// Refuse to delete the group until protection is turned off.
        #[arg(long)]
        deletion_protection: bool,
        /// A tag; repeat for more.
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = client::key_value)]
        tags: Vec<(String, String)>,
        /// Start with a template's rules: `default`, `Sys-WebServer` or
        /// `Sys-FullAccess`.
        #[arg(long, value_name = "NAME")]
        template: Option<String>,
    },
    /// List every group with its rule count.
    List,
    /// Show a group, its member NICs and its rules.
    Show {
        /// The group (`sg-…`).
        id: String,
    },
    /// Change a group's name, description, deletion protection or tags.
    Modify {
        /// The group (`sg-…`).
        id: String,
        /// The new name.
        #[arg(long)]
        name: Option<String>,
        /// The new description.
        #[arg(long)]
        description: Option<String>,
        /// Turn deletion protection on or off.
        #[arg(
            long,
            value_name = "true|false",
            action = clap::ArgAction::Set,
            value_parser = clap::builder::BoolishValueParser::new()
        )]
        deletion_protection: Option<bool>,
        /// Replace the tags with these; repeat for more.
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = client::key_value)]
        tags: Vec<(String, String)>,
        /// Remove every tag.
        #[arg(long, conflicts_with = "tags")]
        clear_tags: bool,
    },
    /// Set a basic group's inner policy: whether its NICs reach each other.
    SetInnerPolicy {
        /// The group (`sg-…`).
        id: String,
        /// `Accept` or `Drop`.
        policy: String,
    },
    /// Delete a group (refused while NICs use it, rules name it, or it is
    /// protected).
    Delete {
        /// The group (`sg-…`).
        id: String,
    },
    /// Copy a group; prints the copy's id.
    Clone {
        /// The group to copy (`sg-…`).
        id: String,
        /// The copy's name (default: the original's).
        #[arg(long)]
        name: Option<String>,
        /// Copy the rules too.
        #[arg(long)]
        keep_rules: bool,
        /// Copy the tags too.
        #[arg(long)]
        copy_tags: bool,
    },
    /// List redundant rules: rules another rule of the group already covers.
    Health {
        /// Only this group (`sg-…`; default: every group).
        id: Option<String>,
    },
}

pub fn run(socket: &Path, args: &Args) -> anyhow::Result<()> {
    let out = &args.out;
    let request = match &args.verb {
        Verb::Create {
            name,
            description,
            kind,
            inner_policy,
            deletion_protection,
            tags,
            template,
        } => Request::Group(GroupRequest::Create(GroupCreate {
            name: name.clone(),
            description: description.clone(),
            kind: kind.clone(),
            inner_policy: inner_policy.clone(),
            deletion_protection: *deletion_protection,
            tags: client::tags(tags)?,
            template: template.clone(),
        })),
        Verb::List => Request::Group(GroupRequest::List),
        Verb::Show { id } => Request::Group(GroupRequest::Show { id: id.clone() }),
        Verb::Modify {
            id,
            name,
            description,
            deletion_protection,
            tags,
            clear_tags,
        } => Request::Group(GroupRequest::Modify {
            id: id.clone(),
            name: name.clone(),
            description: description.clone(),
            deletion_protection: *deletion_protection,
            tags: (*clear_tags || !tags.is_empty())
                .then(|| client::tags(tags))
                .transpose()?,
        }),
        Verb::SetInnerPolicy { id, policy } => Request::Group(GroupRequest::SetInnerPolicy {
            id: id.clone(),
            policy: policy.clone(),
        }),
        Verb::Delete { id } => Request::Group(GroupRequest::Delete { id: id.clone() }),
        Verb::Clone {
            id,
            name,
            keep_rules,
            copy_tags,
        } => Request::Group(GroupRequest::Clone {
            id: id.clone(),
            name: name.clone(),
            keep_rules: *keep_rules,
            copy_tags: *copy_tags,
        }),
        Verb::Health { id } => Request::Group(GroupRequest::Health { id: id.clone() }),
    };
    let answer = client::request(socket, &request)?;
    match &args.verb {
        Verb::Create { .. } | Verb::Clone { .. } => {
            out.show(answer, |r: reply::Changed| format!("{}\n", r.id))
        }
        Verb::Modify { .. } | Verb::SetInnerPolicy { .. } => {
            out.show(answer, |r: reply::Changed| format!("modified {}\n", r.id))
        }
        Verb::Delete { .. } => out.show(answer, |r: reply::Deleted| {
            format!("deleted {}\n", r.deleted)
        }),
        Verb::List => out.show(answer, |groups: Vec<SecurityGroup>| list(&groups)),
        Verb::Show { .. } => out.show(answer, |s: reply::GroupShown| show(&s)),
        Verb::Health { .. } => out.show(answer, |found: Vec<reply::Redundant>| {
            if found.is_empty() {
                return "no redundant rules\n".to_owned();
            }
            let mut t = Table::new(&["group", "rule", "covered by"]);
            for r in found {
                t.row(vec![r.group, r.rule, r.covered_by]);
            }
            t.render()
        }),
    }
}

fn list(groups: &[SecurityGroup]) -> String {
    if groups.is_empty() {
        return "no groups\n".to_owned();
    }
    let mut t = Table::new(&[
        "id",
        "name",
        "type",
        "inner policy",
        "rules",
        "protected",
        "tags",
        "description",
    ]);
    for g in groups {
        t.row(vec![
            g.id.to_string(),
            g.name.clone(),
            g.kind.to_string(),
            format!("{:?}", g.inner_policy),
            g.rules.len().to_string(),
            client::yes_no(g.deletion_protection),
            tag_text(g),
            g.description.clone(),
        ]);
    }
    t.render()
}

fn tag_text(g: &SecurityGroup) -> String {
    let tags: Vec<String> = g.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    tags.join(", ")
}

fn show(s: &reply::GroupShown) -> String {
    let g = &s.group;
    let mut text = client::fields(&[
        ("id", g.id.to_string()),
        ("name", g.name.clone()),
        ("description", g.description.clone()),
        ("type", g.kind.to_string()),
        ("inner policy", format!("{:?}", g.inner_policy)),
        ("deletion protection", client::yes_no(g.deletion_protection)),
        ("managed", client::yes_no(g.managed)),
        ("tags", tag_text(g)),
        ("members", client::joined(&s.members)),
    ]);
    text.push('\n');
    text.push_str(&rule::render(&g.rules));
    text
}

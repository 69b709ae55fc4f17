//! `sg-agent nic`: bind NICs to security groups and change their groups and
//! addresses; list and show them with their data-plane state.

use std::path::Path;

use sg_agent::api::{NicRequest, Request};
use sg_policy::NicBinding;

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
    /// Bind a NIC: its mode, addresses and ordered groups. The data plane
    /// attaches to it as soon as the interface exists.
    Bind {
        /// The interface name.
        name: String,
        /// `local` (the workload's own NIC) or `port` (the host side of its
        /// veth or tap).
        #[arg(long)]
        mode: String,
        /// One of the NIC's private addresses; repeat for more.
        #[arg(long = "address", value_name = "ADDRESS")]
        addresses: Vec<String>,
        /// An extra allowed address or CIDR, counted as the NIC's own; repeat
        /// for more.
        #[arg(long = "extra-allowed", value_name = "CIDR")]
        extra_allowed: Vec<String>,
        /// Anti-spoofing on or off (default: on for `port`, off for `local`).
        #[arg(
            long,
            value_name = "true|false",
            action = clap::ArgAction::Set,
            value_parser = clap::builder::BoolishValueParser::new()
        )]
        anti_spoof: Option<bool>,
        /// A group (`sg-…`); repeat for more, in the order they apply.
        #[arg(long = "group", value_name = "GROUP", required = true)]
        groups: Vec<String>,
    },
    /// Unbind a NIC: the data plane lets go of it.
    Unbind {
        /// The interface name.
        name: String,
    },
    /// Add a group to a NIC, after its others.
    Join {
        /// The interface name.
        name: String,
        /// The group (`sg-…`).
        group: String,
    },
    /// Remove a group from a NIC.
    Leave {
        /// The interface name.
        name: String,
        /// The group (`sg-…`).
        group: String,
    },
    /// Replace a NIC's groups.
    SetGroups {
        /// The interface name.
        name: String,
        /// A group (`sg-…`); repeat for more, in the order they apply.
        #[arg(long = "group", value_name = "GROUP", required = true)]
        groups: Vec<String>,
    },
    /// Replace a NIC's addresses and extra allowed addresses.
    SetAddresses {
        /// The interface name.
        name: String,
        /// One of the NIC's private addresses; repeat for more.
        #[arg(long = "address", value_name = "ADDRESS")]
        addresses: Vec<String>,
        /// An extra allowed address or CIDR; repeat for more.
        #[arg(long = "extra-allowed", value_name = "CIDR")]
        extra_allowed: Vec<String>,
    },
    /// List bound NICs: groups, addresses, and whether the data plane is
    /// attached.
    List,
    /// Show one bound NIC.
    Show {
        /// The interface name.
        name: String,
    },
}

pub fn run(socket: &Path, args: &Args) -> anyhow::Result<()> {
    let out = &args.out;
    let request = match &args.verb {
        Verb::Bind {
            name,
            mode,
            addresses,
            extra_allowed,
            anti_spoof,
            groups,
        } => Request::Nic(NicRequest::Bind {
            name: name.clone(),
            mode: mode.clone(),
            addresses: addresses.clone(),
            extra_allowed: extra_allowed.clone(),
            anti_spoof: *anti_spoof,
            groups: groups.clone(),
        }),
        Verb::Unbind { name } => Request::Nic(NicRequest::Unbind { name: name.clone() }),
        Verb::Join { name, group } => Request::Nic(NicRequest::Join {
            name: name.clone(),
            group: group.clone(),
        }),
        Verb::Leave { name, group } => Request::Nic(NicRequest::Leave {
            name: name.clone(),
            group: group.clone(),
        }),
        Verb::SetGroups { name, groups } => Request::Nic(NicRequest::SetGroups {
            name: name.clone(),
            groups: groups.clone(),
        }),
        Verb::SetAddresses {
            name,
            addresses,
            extra_allowed,
        } => Request::Nic(NicRequest::SetAddresses {
            name: name.clone(),
            addresses: addresses.clone(),
            extra_allowed: extra_allowed.clone(),
        }),
        Verb::List => Request::Nic(NicRequest::List),
        Verb::Show { name } => Request::Nic(NicRequest::Show { name: name.clone() }),
    };
    let answer = client::request(socket, &request)?;
    let done = match &args.verb {
        Verb::Bind { .. } => "bound",
        Verb::Unbind { .. } => "unbound",
        Verb::List => return out.show(answer, |nics: Vec<reply::NicShown>| list(&nics)),
        Verb::Show { .. } => return out.show(answer, |nic: reply::NicShown| show(&nic)),
        _ => "updated",
    };
    out.show(answer, |r: reply::NicChanged| format!("{done} {}\n", r.nic))
}

fn optional<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn list(nics: &[reply::NicShown]) -> String {
    if nics.is_empty() {
        return "no NICs bound\n".to_owned();
    }
    let mut t = Table::new(&[
        "nic",
        "mode",
        "ifindex",
        "attached",
        "version",
        "anti-spoof",
        "addresses",
        "groups",
    ]);
    for n in nics {
        let b = &n.binding;
        t.row(vec![
            b.name.clone(),
            mode(b),
            optional(n.ifindex),
            client::yes_no(n.attached),
            optional(n.version),
            client::yes_no(b.anti_spoof_enabled()),
            client::joined(&b.addresses)
                + &extra(b).map(|e| format!(" (+{e})")).unwrap_or_default(),
            client::joined(&b.groups),
        ]);
    }
    t.render()
}

fn mode(b: &NicBinding) -> String {
    serde_json::to_value(b.mode)
        .map(|v| client::cell(&v))
        .unwrap_or_default()
}

fn extra(b: &NicBinding) -> Option<String> {
    (!b.extra_allowed.is_empty()).then(|| client::joined(&b.extra_allowed))
}

fn show(n: &reply::NicShown) -> String {
    let b = &n.binding;
    client::fields(&[
        ("nic", b.name.clone()),
        ("mode", mode(b)),
        ("addresses", client::joined(&b.addresses)),
        ("extra allowed", client::joined(&b.extra_allowed)),
        ("anti-spoof", client::yes_no(b.anti_spoof_enabled())),
        ("groups", client::joined(&b.groups)),
        ("ifindex", optional(n.ifindex)),
        ("attached", client::yes_no(n.attached)),
        ("version", optional(n.version)),
    ])
}

//! `sg-agent sessions`: list or flush the sessions of a running agent, through
//! the maps it pinned for its network namespace.

use std::{fmt::Write as _, path::PathBuf};

use anyhow::{Context as _, bail};
use sg_agent::{
    dataplane::sessions::{Filter, Pinned, Session, pin_dir},
    enforce::ifindex,
    netns,
    policy::Cidr,
};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// List sessions: NIC, tuple, state, age, idle time, policy version.
    List {
        #[command(flatten)]
        select: Select,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
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
    /// Network namespace of the agent (as given to `attach --netns`).
    #[arg(long)]
    netns: Option<String>,
    /// Only the sessions of this NIC (interface name).
    #[arg(long)]
    nic: Option<String>,
    /// Only this protocol: tcp, udp, icmp, icmpv6 or a number.
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
    fn is_empty(&self) -> bool {
        self.nic.is_none() && self.proto.is_none() && self.addr.is_none() && self.port.is_none()
    }
}

fn protocol(text: &str) -> anyhow::Result<u8> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" => 58,
        "gre" => 47,
        n => n
            .parse()
            .with_context(|| format!("--proto {text}: not tcp, udp, icmp, icmpv6, gre or 0-255"))?,
    })
}

fn protocol_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        47 => "gre".into(),
        n => n.to_string(),
    }
}

/// The inode of the calling thread's network namespace: the pin directory's key.
fn netns_inode() -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata("/proc/thread-self/ns/net")
        .context("reading this thread's network namespace")?
        .ino())
}

/// The pin directory for the calling thread's network namespace.
pub fn this_pin_dir() -> anyhow::Result<PathBuf> {
    Ok(pin_dir(netns_inode()?))
}

fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes into buf.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    Some(
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let select = match &args.action {
        Action::List { select, .. } | Action::Flush { select, .. } => select,
    };
    if let Some(ns) = &select.netns {
        netns::enter_named_or_path(ns)
            .with_context(|| format!("entering network namespace {ns}"))?;
    }
    let dir = this_pin_dir()?;
    let mut pinned = Pinned::open(&dir).with_context(|| {
        format!(
            "no agent serves this network namespace ({} is missing); start `sg-agent attach` first",
            dir.display()
        )
    })?;
    let mut filter = Filter::default();
    if let Some(nic) = &select.nic {
        let idx = ifindex(nic).with_context(|| format!("--nic {nic}: no such interface here"))?;
        filter.nic = Some(
            pinned
                .nic_of(idx)
                .with_context(|| format!("--nic {nic}: not bound by the agent"))?,
        );
    }
    if let Some(p) = &select.proto {
        filter.protocol = Some(protocol(p)?);
    }
    if let Some(a) = &select.addr {
        filter.address = Some(Cidr::parse("--addr", a)?);
    }
    filter.port = select.port;
    match &args.action {
        Action::List { json, .. } => {
            let list = pinned.list(&filter)?;
            let name = |nic: u32| {
                pinned
                    .ifindex_of(nic)
                    .and_then(ifname)
                    .unwrap_or_else(|| format!("nic#{nic}"))
            };
            if *json {
                let rows: Vec<serde_json::Value> = list
                    .iter()
                    .map(|s| {
                        let mut v = serde_json::to_value(s).unwrap_or_default();
                        v["nic"] = serde_json::Value::String(name(s.nic));
                        v["protocol"] = serde_json::Value::String(protocol_name(s.protocol));
                        v["age_secs"] = s.age.as_secs_f64().into();
                        v["idle_secs"] = s.idle.as_secs_f64().into();
                        v
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", table(&list, name));
            }
        }
        Action::Flush { all, .. } => {
            if select.is_empty() && !*all {
                bail!("flush needs a filter (--nic, --proto, --addr, --port) or --all");
            }
            let n = pinned.flush(&filter);
            println!("flushed {n} session{}", if n == 1 { "" } else { "s" });
        }
    }
    Ok(())
}

fn table(list: &[Session], name: impl Fn(u32) -> String) -> String {
    let mut out = format!(
        "{:<12} {:<7} {:<42} {:<42} {:<8} {:<12} {:>9} {:>9} {:>8}\n",
        "nic", "proto", "initiator", "responder", "dir", "state", "age", "idle", "version"
    );
    for s in list {
        let ep = |e: &sg_agent::dataplane::sessions::Endpoint| {
            if e.address.is_ipv6() {
                format!("[{}]:{}", e.address, e.port)
            } else {
                format!("{}:{}", e.address, e.port)
            }
        };
        let state = if s.live { s.state } else { "expired" };
        let _ = writeln!(
            out,
            "{:<12} {:<7} {:<42} {:<42} {:<8} {:<12} {:>8.1}s {:>8.1}s {:>8}",
            name(s.nic),
            protocol_name(s.protocol),
            ep(&s.initiator),
            ep(&s.responder),
            s.direction,
            state,
            s.age.as_secs_f64(),
            s.idle.as_secs_f64(),
            s.policy_version
        );
    }
    let _ = writeln!(
        out,
        "{} session{}",
        list.len(),
        if list.len() == 1 { "" } else { "s" }
    );
    out
}

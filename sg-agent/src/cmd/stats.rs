//! `sg-agent stats`: packet counters, per-rule hits and decisions by reason
//! per NIC, session events, and the drop log's own counts.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use serde::Deserialize;
use serde_json::{Map, Value};
use sg_agent::api::{ObserveRequest, Request};

use super::client::{self, Output, Table};

#[derive(clap::Args)]
pub struct Args {
    /// Only this NIC's rule hits and reasons (interface name).
    #[arg(long)]
    nic: Option<String>,
    #[command(flatten)]
    out: Output,
}

#[derive(Deserialize)]
struct Stats {
    counters: Counters,
    #[serde(default)]
    nics: BTreeMap<String, NicStats>,
    #[serde(default)]
    sessions: Map<String, Value>,
    #[serde(default)]
    drop_log: Option<DropLog>,
}

/// Counter name to count, per direction.
#[derive(Deserialize)]
struct Counters {
    #[serde(default)]
    ingress: Map<String, Value>,
    #[serde(default)]
    egress: Map<String, Value>,
}

#[derive(Deserialize)]
struct NicStats {
    #[serde(default)]
    rules: Vec<Hit>,
    #[serde(default)]
    reasons: Vec<ByReason>,
}

#[derive(Deserialize)]
struct Hit {
    dir: String,
    rule: String,
    packets: u64,
    bytes: u64,
}

#[derive(Deserialize)]
struct ByReason {
    dir: String,
    reason: String,
    packets: u64,
}

#[derive(Deserialize)]
struct DropLog {
    logged: u64,
    suppressed: u64,
    ringbuf_full: u64,
}

pub fn run(socket: &Path, args: &Args) -> anyhow::Result<()> {
    let request = Request::Observe(ObserveRequest::Stats {
        nic: args.nic.clone(),
    });
    let answer = client::request(socket, &request)?;
    args.out.show(answer, |s: Stats| render(&s))
}

fn render(s: &Stats) -> String {
    let mut t = Table::new(&["counter", "ingress", "egress"]);
    let names = s.counters.ingress.keys().chain(
        s.counters
            .egress
            .keys()
            .filter(|k| !s.counters.ingress.contains_key(*k)),
    );
    for name in names {
        t.row(vec![
            name.clone(),
            s.counters
                .ingress
                .get(name)
                .map(client::cell)
                .unwrap_or_default(),
            s.counters
                .egress
                .get(name)
                .map(client::cell)
                .unwrap_or_default(),
        ]);
    }
    let mut text = t.render();
    for (nic, n) in &s.nics {
        let _ = write!(text, "\n{nic}: rule hits\n");
        let mut hits = Table::new(&["dir", "rule", "packets", "bytes"]);
        for h in &n.rules {
            hits.row(vec![
                h.dir.clone(),
                h.rule.clone(),
                h.packets.to_string(),
                h.bytes.to_string(),
            ]);
        }
        text.push_str(&hits.render());
        let _ = write!(text, "\n{nic}: decisions by reason\n");
        let mut reasons = Table::new(&["dir", "reason", "packets"]);
        for r in &n.reasons {
            reasons.row(vec![r.dir.clone(), r.reason.clone(), r.packets.to_string()]);
        }
        text.push_str(&reasons.render());
    }
    if !s.sessions.is_empty() {
        let mut events = Table::new(&["session event", "count"]);
        for (event, n) in &s.sessions {
            events.row(vec![event.clone(), client::cell(n)]);
        }
        text.push('\n');
        text.push_str(&events.render());
    }
    if let Some(d) = &s.drop_log {
        let _ = write!(
            text,
            "\ndrop log: {} logged, {} suppressed, {} lost to a full ring buffer\n",
            d.logged, d.suppressed, d.ringbuf_full
        );
    }
    text
}

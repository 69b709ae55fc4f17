//! `sg-agent stats`: packet counters, per-rule hits and decisions by reason
//! per NIC, session events, and the drop log's own counts.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use sg_agent::api::{ObserveRequest, Request, STATS_PAGE, STATS_PAGE_MAX, reply::Stats};

use super::client::{self, Output, Table};

#[derive(clap::Args)]
pub struct Args {
    /// Only this NIC's rule hits and reasons (interface name).
    #[arg(long)]
    nic: Option<String>,
    /// Only this direction's rule hits.
    #[arg(long, value_parser = ["ingress", "egress"])]
    dir: Option<String>,
    /// Only rules that decided at least N packets (1: rules with hits).
    #[arg(long, value_name = "N")]
    min_packets: Option<u64>,
    /// At most N rule-hit rows (default: all, asked for a page at a time);
    /// the output then ends with where the next ones start.
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// Start after this row: the `next` that a --limit output ended with.
    #[arg(long, value_name = "NEXT")]
    after: Option<String>,
    #[command(flatten)]
    out: Output,
}

pub fn run(socket: &Path, args: &Args) -> anyhow::Result<()> {
    let mut after = args.after.clone();
    let mut left = args.limit;
    let mut all: Option<Stats> = None;
    loop {
        // A --limit of 0 goes to the daemon as it is, which refuses it.
        let limit = left.map_or(STATS_PAGE, |l| l.min(STATS_PAGE_MAX));
        let request = Request::Observe(ObserveRequest::Stats {
            nic: args.nic.clone(),
            dir: args.dir.clone(),
            min_packets: args.min_packets,
            limit: Some(limit),
            after: after.take(),
        });
        let page: Stats = client::decode(client::request(socket, &request)?)?;
        let rows: usize = page.nics.values().map(|n| n.rules.len()).sum();
        left = left.map(|l| l.saturating_sub(u32::try_from(rows).unwrap_or(u32::MAX)));
        let next = page.next.clone();
        all = Some(match all {
            None => page,
            Some(mut so_far) => {
                // The counters and reasons of the first page; the rule hits
                // of every page.
                for (nic, n) in page.nics {
                    so_far.nics.entry(nic).or_default().rules.extend(n.rules);
                }
                so_far.next = page.next;
                so_far
            }
        });
        match next {
            Some(n) if left != Some(0) => after = Some(n),
            _ => break,
        }
    }
    let all = all.expect("one page at least");
    args.out
        .show(serde_json::to_value(&all)?, |s: Stats| render(&s))
}

fn render(s: &Stats) -> String {
    let empty = BTreeMap::new();
    let ingress = s.counters.get("ingress").unwrap_or(&empty);
    let egress = s.counters.get("egress").unwrap_or(&empty);
    let count = |side: &BTreeMap<String, u64>, name: &str| {
        side.get(name).map(u64::to_string).unwrap_or_default()
    };
    let mut t = Table::new(&["counter", "ingress", "egress"]);
    let names = ingress
        .keys()
        .chain(egress.keys().filter(|k| !ingress.contains_key(*k)));
    for name in names {
        t.row(vec![
            name.clone(),
            count(ingress, name),
            count(egress, name),
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
            events.row(vec![event.clone(), n.to_string()]);
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
    if let Some(next) = &s.next {
        let _ = write!(text, "\nmore rule hits: --after {next}\n");
    }
    text
}

//! `sg-agent trace`: the verdict for one packet on a NIC and what decided
//! it, from the compiled policy the kernel holds.

use std::path::Path;

use sg_agent::api::{ObserveRequest, Request, TraceText};

use sg_agent::api::reply;

use super::client::{self, Output};

#[derive(clap::Args)]
pub struct Args {
    /// The NIC (interface name).
    #[arg(long)]
    nic: String,
    /// The workload's direction: `ingress` (towards it) or `egress` (from it).
    #[arg(long)]
    direction: String,
    /// `TCP`, `UDP`, `ICMP`, `ICMPv6`, `GRE` or a protocol number.
    #[arg(long)]
    protocol: String,
    /// The packet's source address.
    #[arg(long, value_name = "ADDRESS")]
    src: String,
    /// The packet's destination address.
    #[arg(long, value_name = "ADDRESS")]
    dst: String,
    /// The source port (TCP, UDP).
    #[arg(long, value_name = "PORT")]
    sport: Option<u16>,
    /// The destination port (TCP, UDP).
    #[arg(long, value_name = "PORT")]
    dport: Option<u16>,
    /// The ICMP type (default: an echo request).
    #[arg(long, value_name = "TYPE")]
    icmp_type: Option<u8>,
    /// The ICMP code.
    #[arg(long, value_name = "CODE")]
    icmp_code: Option<u8>,
    #[command(flatten)]
    out: Output,
}

pub fn run(socket: &Path, args: &Args) -> anyhow::Result<()> {
    let request = Request::Observe(ObserveRequest::Trace(TraceText {
        nic: args.nic.clone(),
        direction: args.direction.clone(),
        protocol: args.protocol.clone(),
        source: args.src.clone(),
        destination: args.dst.clone(),
        source_port: args.sport,
        destination_port: args.dport,
        icmp_type: args.icmp_type,
        icmp_code: args.icmp_code,
    }));
    let answer = client::request(socket, &request)?;
    args.out.show(answer, |t: reply::Traced| {
        let mut pairs = vec![("verdict", t.verdict), ("reason", t.reason)];
        pairs.extend(t.rule.map(|r| ("rule", r)));
        pairs.extend(t.group.map(|g| ("group", g)));
        pairs.extend(t.priority.map(|p| ("priority", p.to_string())));
        pairs.push(("detail", t.detail));
        client::fields(&pairs)
    })
}

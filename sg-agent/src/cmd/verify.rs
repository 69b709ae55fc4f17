//! `sg-agent verify`: read every map back, compare it with the compiled
//! policy of every bound NIC, name each difference and repair it.

use std::path::Path;

use anyhow::bail;
use sg_agent::api::{ObserveRequest, Request};

use sg_agent::api::reply;

use super::client::{self, Output, Table};

#[derive(clap::Args)]
pub struct Args {
    /// Only report the differences; change nothing.
    #[arg(long)]
    no_repair: bool,
    #[command(flatten)]
    out: Output,
}

pub fn run(socket: &Path, args: &Args) -> anyhow::Result<()> {
    let answer = client::request(
        socket,
        &Request::Observe(ObserveRequest::Verify {
            no_repair: args.no_repair,
        }),
    )?;
    let parsed: reply::Verified = client::decode(answer.clone())?;
    args.out.show(answer, |a: reply::Verified| {
        if a.drift.is_empty() {
            return "the kernel holds exactly the compiled policy\n".to_owned();
        }
        let mut t = Table::new(&["NIC", "DIFFERENCE", "REPAIR"]);
        for d in a.drift {
            t.row(vec![
                d.nic.unwrap_or_else(|| "-".to_owned()),
                d.what,
                d.repair,
            ]);
        }
        let mut out = t.render();
        if a.repaired {
            out.push_str("repaired\n");
        }
        out
    })?;
    if !parsed.degraded.is_empty() {
        bail!(
            "not repaired: {}",
            parsed
                .degraded
                .iter()
                .map(|(n, why)| format!("{n}: {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if args.no_repair && !parsed.drift.is_empty() {
        bail!(
            "{} differences (not repaired: --no-repair)",
            parsed.drift.len()
        );
    }
    Ok(())
}

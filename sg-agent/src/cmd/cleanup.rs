//! `sg-agent cleanup`: remove every program, pin and qdisc the agent left.

use anyhow::Context as _;
use sg_agent::{dataplane, netns};

#[derive(clap::Args)]
pub struct Args {
    /// Network namespace to clean: a name made by `ip netns add`, or a path
    /// such as /proc/PID/ns/net. Default: the agent's own.
    #[arg(long)]
    netns: Option<String>,
    /// Print what was removed as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    dataplane::faults::arm();
    if let Some(ns) = &args.netns {
        netns::enter_named_or_path(ns)
            .with_context(|| format!("entering network namespace {ns}"))?;
    }
    let root = dataplane::pin_root(netns::current_inode()?);
    // Held for the whole cleanup: no agent can start serving the namespace
    // meanwhile, and none is serving it now, whatever socket it listens on.
    let lock = dataplane::NamespaceLock::acquire(&root).context("cleanup refused")?;
    let report = dataplane::cleanup(&lock).context("removing the pins")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.links.is_empty() && report.maps.is_empty() {
        println!("nothing to clean at {}", root.display());
    } else {
        println!(
            "detached {} links ({}), removed {} map pins and {} directories; \
             no qdiscs to remove (tcx needs none)",
            report.links.len(),
            report.links.join(", "),
            report.maps.len(),
            report.dirs.len()
        );
    }
    Ok(())
}

//! `sg-agent run`: the daemon (see `sg_agent::daemon`).

use std::path::PathBuf;

use anyhow::Context as _;
use sg_agent::{
    daemon::{self, Config},
    dataplane::{AttachMode, Limits},
    netns,
};

use super::attach::XdpModeArg;

#[derive(clap::Args)]
pub struct Args {
    /// The policy store (SQLite); created if missing.
    #[arg(long, default_value = "/var/lib/sg-agent/state.db")]
    store: PathBuf,
    /// Network namespace whose interfaces to serve: a name made by `ip netns
    /// add`, or a path such as /proc/PID/ns/net. Default: the agent's own.
    #[arg(long)]
    netns: Option<String>,
    /// How the receive side is attached: XDP (auto, native, generic), or `tc`
    /// for a TC ingress program instead of XDP. `auto`: TC ingress on veth,
    /// XDP elsewhere.
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    xdp_mode: XdpModeArg,
    /// Sessions the table holds; when full, the least recently used goes.
    /// Fixed for the life of the pinned maps (`cleanup` to change it).
    #[arg(long, default_value_t = sg_common::maps::SESSION_ENTRIES)]
    session_capacity: u32,
    /// NICs this agent can bind, 1 to 128. Fixed for the life of the pinned
    /// maps.
    #[arg(long, default_value_t = sg_common::policy::DEFAULT_NICS)]
    max_nics: u32,
}

/// Serves the API on `socket` (the global `--socket`; owner-only, mode 0600).
pub fn run(socket: &std::path::Path, args: &Args) -> anyhow::Result<()> {
    // Enter the namespace before any thread exists, so the runtime's threads
    // (netlink, interface lookups, pins) all live in it.
    if let Some(ns) = &args.netns {
        netns::enter_named_or_path(ns)
            .with_context(|| format!("entering network namespace {ns}"))?;
    }
    if let Some(dir) = args.store.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let config = Config {
        socket: socket.to_owned(),
        store: args.store.clone(),
        limits: Limits {
            sessions: args.session_capacity,
            nics: args.max_nics,
        },
        mode: AttachMode::from(args.xdp_mode),
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(daemon::run(config))
}

//! `sg-agent run`: the daemon (see `sg_agent::daemon`).

use std::path::PathBuf;

use anyhow::Context as _;
use sg_agent::{
    daemon::{self, Config},
    dataplane::{AttachMode, Limits, droplog::DropLogRate},
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
    /// Serve the counters as Prometheus text at `/metrics` on ADDR (off
    /// unless given; e.g. 127.0.0.1:9469). Loopback only, unless
    /// --metrics-any-address.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Allow --metrics on an address other than loopback.
    #[arg(long, requires = "metrics")]
    metrics_any_address: bool,
    /// Log dropped packets into the agent's log, at most `PER_SEC` a second per
    /// CPU with bursts of `BURST` (default `PER_SEC`): `--drop-log 10` or
    /// `--drop-log 10/50`. Each 1 to 10,000.
    #[arg(long, value_name = "PER_SEC[/BURST]", value_parser = parse_rate)]
    drop_log: Option<DropLogRate>,
    /// Start even though the data plane pinned in this namespace enforces a
    /// policy the store does not hold (the store is new, another one, or
    /// behind what was acknowledged): the store's policy replaces it, and
    /// NICs the store does not bind are unbound. Without it the agent
    /// refuses to start and says why.
    #[arg(long)]
    replace_enforced_policy: bool,
    /// Every SECS seconds, read every map back, compare it with the policy
    /// and repair what differs (0: never; `sg-agent verify` does it on demand).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    self_check: u64,
}

/// `PER_SEC` or `PER_SEC/BURST`, checked against the data plane's limits.
fn parse_rate(text: &str) -> Result<DropLogRate, String> {
    let (per_sec, burst) = match text.split_once('/') {
        Some((p, b)) => (p, Some(b)),
        None => (text, None),
    };
    let num = |field: &str, t: &str| {
        t.trim()
            .parse::<u32>()
            .map_err(|_| format!("drop_log.{field}: {t:?} is not a whole number"))
    };
    let per_sec = num("per_sec", per_sec)?;
    let rate = DropLogRate {
        per_sec,
        burst: burst
            .map(|b| num("burst", b))
            .transpose()?
            .unwrap_or(per_sec),
    };
    rate.validate().map_err(|e| e.to_string())?;
    Ok(rate)
}

/// Serves the API on `socket` (the global `--socket`; owner-only, mode 0600).
pub fn run(socket: &std::path::Path, args: &Args) -> anyhow::Result<()> {
    // The metrics endpoint listens in the agent's own namespace, not in the
    // workload's it serves (where any local user could read the counters):
    // bound before entering that one.
    let metrics = match args.metrics {
        Some(addr) => {
            sg_agent::metrics::check_listen_addr(addr, args.metrics_any_address)
                .map_err(|e| anyhow::anyhow!("--metrics: {e}"))?;
            Some(
                std::net::TcpListener::bind(addr)
                    .with_context(|| format!("binding the metrics endpoint {addr}"))?,
            )
        }
        None => None,
    };
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
        metrics,
        drop_log: args.drop_log,
        replace_enforced_policy: args.replace_enforced_policy,
        self_check: (args.self_check > 0).then(|| std::time::Duration::from_secs(args.self_check)),
    };
    // Two workers: connections answer reads and sessions while the task that
    // owns the data plane handles a change or an interface event.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(daemon::run(config))
}

//! `sg-agent run`: the daemon (see `sg_agent::daemon`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::builder::BoolishValueParser;
use sg_agent::{
    daemon::{self, Config, StoreChoice},
    dataplane::{AttachMode, Limits, droplog::DropLogRate},
    netns,
    store::{EtcdConfig, EtcdStore},
};

use super::attach::XdpModeArg;

// Every flag can also be given in the environment as `SG_AGENT_<FLAG>`, for
// a unit's `EnvironmentFile` (docs/operations.md); the command line wins.
#[derive(clap::Args)]
#[command(after_help = ENV_HELP)]
pub struct Args {
    /// The policy store: a SQLite file (one host; created if missing), or a
    /// fleet's etcd, `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]` (`etcds://`
    /// for TLS; see docs/fleet.md).
    #[arg(
        long,
        env = "SG_AGENT_STORE",
        default_value = "/var/lib/sg-agent/state.db"
    )]
    store: String,
    /// This host's name in the fleet (etcd stores only): its NIC bindings
    /// are kept under it. Default: the kernel's host name.
    #[arg(long, env = "SG_AGENT_HOST")]
    host: Option<String>,
    /// A CA certificate (PEM) to check the etcd servers with.
    #[arg(long, env = "SG_AGENT_ETCD_CA", value_name = "FILE")]
    etcd_ca: Option<PathBuf>,
    /// This host's client certificate (PEM) for etcd, with --etcd-key.
    #[arg(
        long,
        env = "SG_AGENT_ETCD_CERT",
        value_name = "FILE",
        requires = "etcd_key"
    )]
    etcd_cert: Option<PathBuf>,
    /// The key (PEM) of --etcd-cert.
    #[arg(
        long,
        env = "SG_AGENT_ETCD_KEY",
        value_name = "FILE",
        requires = "etcd_cert"
    )]
    etcd_key: Option<PathBuf>,
    /// An etcd user (etcd's own authentication), with --etcd-password-file.
    #[arg(
        long,
        env = "SG_AGENT_ETCD_USER",
        value_name = "NAME",
        requires = "etcd_password_file"
    )]
    etcd_user: Option<String>,
    /// A file whose first line is the password of --etcd-user.
    #[arg(
        long,
        env = "SG_AGENT_ETCD_PASSWORD_FILE",
        value_name = "FILE",
        requires = "etcd_user"
    )]
    etcd_password_file: Option<PathBuf>,
    /// Where this host keeps a copy of the fleet's policy as last in force,
    /// to start from (and enforce, and answer reads from) while etcd is
    /// away (etcd stores only).
    #[arg(
        long,
        env = "SG_AGENT_FLEET_CACHE",
        value_name = "FILE",
        default_value = "/var/lib/sg-agent/fleet-cache.json"
    )]
    fleet_cache: PathBuf,
    /// Network namespace whose interfaces to serve: a name made by `ip netns
    /// add`, or a path such as /proc/PID/ns/net. Default: the agent's own.
    #[arg(long, env = "SG_AGENT_NETNS")]
    netns: Option<String>,
    /// How the receive side is attached: XDP (auto, native, generic), or `tc`
    /// for a TC ingress program instead of XDP. `auto`: TC ingress on veth,
    /// XDP elsewhere.
    #[arg(long, env = "SG_AGENT_XDP_MODE", value_enum, default_value_t = XdpModeArg::Auto)]
    xdp_mode: XdpModeArg,
    /// Sessions the table holds; when full, the least recently used goes.
    /// Fixed for the life of the pinned maps (`cleanup` to change it).
    #[arg(long, env = "SG_AGENT_SESSION_CAPACITY", default_value_t = sg_common::maps::SESSION_ENTRIES)]
    session_capacity: u32,
    /// NICs this agent can bind, 1 to 128. Fixed for the life of the pinned
    /// maps.
    #[arg(long, env = "SG_AGENT_MAX_NICS", default_value_t = sg_common::policy::DEFAULT_NICS)]
    max_nics: u32,
    /// Serve the counters as Prometheus text at `/metrics` on ADDR (off
    /// unless given; e.g. 127.0.0.1:9469). Loopback only, unless
    /// --metrics-any-address.
    #[arg(long, env = "SG_AGENT_METRICS", value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Allow --metrics on an address other than loopback.
    // Needing --metrics is checked in `run`, not by clap's `requires`, which
    // would count `false` from the environment as given.
    #[arg(long, env = "SG_AGENT_METRICS_ANY_ADDRESS", value_parser = BoolishValueParser::new())]
    metrics_any_address: bool,
    /// Per-rule hit series shown at most (a series: one NIC, direction and
    /// rule); rules without hits are never shown, and over the limit those
    /// with the most packets are. 0: no per-rule series (and the per-rule
    /// counters are not read for a scrape).
    #[arg(long, env = "SG_AGENT_METRICS_RULE_SERIES", value_name = "N", requires = "metrics", default_value_t = sg_agent::metrics::DEFAULT_RULE_SERIES)]
    metrics_rule_series: usize,
    /// Log dropped packets into the agent's log, at most `PER_SEC` a second per
    /// CPU with bursts of `BURST` (default `PER_SEC`): `--drop-log 10` or
    /// `--drop-log 10/50`. Each 1 to 10,000.
    #[arg(long, env = "SG_AGENT_DROP_LOG", value_name = "PER_SEC[/BURST]", value_parser = parse_rate)]
    drop_log: Option<DropLogRate>,
    /// Start even though the data plane pinned in this namespace enforces a
    /// policy the store does not hold (the store is new, another one, or
    /// behind what was acknowledged): the store's policy replaces it, and
    /// NICs the store does not bind are unbound. Without it the agent
    /// refuses to start and says why.
    #[arg(long, env = "SG_AGENT_REPLACE_ENFORCED_POLICY", value_parser = BoolishValueParser::new())]
    replace_enforced_policy: bool,
    /// Every SECS seconds, read every map back, compare it with the policy
    /// and repair what differs (0: never; `sg-agent verify` does it on demand).
    #[arg(
        long,
        env = "SG_AGENT_SELF_CHECK",
        value_name = "SECS",
        default_value_t = 30
    )]
    self_check: u64,
    /// Let the members of GROUP (a name or a number) use the API socket: the
    /// socket is made mode 0660 and owned by the group (a directory the agent
    /// creates for it, 0750). Default: root only (0600, in a 0700 directory).
    #[arg(long, env = "SG_AGENT_SOCKET_GROUP", value_name = "GROUP")]
    socket_group: Option<String>,
    /// Also serve the API's reads (every GET, and trace) on a second socket
    /// at PATH, for monitoring: changes there are refused (403,
    /// `read_only`). Root only unless --read-only-socket-group.
    #[arg(long, env = "SG_AGENT_READ_ONLY_SOCKET", value_name = "PATH")]
    read_only_socket: Option<PathBuf>,
    /// Let the members of GROUP (a name or a number) use the read-only
    /// socket (made 0660 and the group's).
    #[arg(
        long,
        env = "SG_AGENT_READ_ONLY_SOCKET_GROUP",
        value_name = "GROUP",
        requires = "read_only_socket"
    )]
    read_only_socket_group: Option<String>,
}

/// What `run --help` says after the flags.
const ENV_HELP: &str = "Every flag can also be set in the environment, as shown: SG_AGENT_ and the \
flag in capitals (--max-nics as SG_AGENT_MAX_NICS). The command line wins. Switches take \
true or false there (also 1/0, yes/no, on/off).";

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

/// The store `--store` names: a fleet's etcd (connected now), or a SQLite
/// path (its directory made); with its name for messages.
fn open_store(args: &Args) -> anyhow::Result<(StoreChoice, String)> {
    let fleet = args.store.starts_with("etcd://") || args.store.starts_with("etcds://");
    if !fleet {
        let tls = args.etcd_ca.is_some() || args.etcd_cert.is_some() || args.etcd_user.is_some();
        if args.host.is_some() || tls {
            anyhow::bail!(
                "--host and --etcd-* are for an etcd store (--store etcd://...); --store {} is a SQLite file",
                args.store
            );
        }
        let path = PathBuf::from(&args.store);
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        return Ok((StoreChoice::Sqlite(path), args.store.clone()));
    }
    let host = match &args.host {
        Some(h) => h.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the host name (give --host)")?
            .trim()
            .to_owned(),
    };
    let mut config = EtcdConfig::parse(&args.store, &host).map_err(anyhow::Error::msg)?;
    config.ca.clone_from(&args.etcd_ca);
    if let Some(dir) = args.fleet_cache.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    config.cache = Some(args.fleet_cache.clone());
    config.identity = args.etcd_cert.clone().zip(args.etcd_key.clone());
    if let (Some(user), Some(file)) = (&args.etcd_user, &args.etcd_password_file) {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("--etcd-password-file {}", file.display()))?;
        let password = text.lines().next().unwrap_or_default().to_owned();
        config.user = Some((user.clone(), password));
    }
    let name = format!("{} (host {host})", args.store);
    let store =
        EtcdStore::open(config).with_context(|| format!("opening the fleet store {name}"))?;
    Ok((StoreChoice::Fleet(Box::new(store)), name))
}

/// Serves the API on `socket` (the global `--socket`; owner-only, mode 0600,
/// unless `--socket-group`).
pub fn run(socket: &std::path::Path, args: &Args) -> anyhow::Result<()> {
    sg_agent::heap::fix_mmap_threshold();
    // The service manager's socket, made in the agent's own namespace.
    sg_agent::systemd::init();
    // The metrics endpoint listens in the agent's own namespace, not in the
    // workload's it serves (where any local user could read the counters):
    // bound before entering that one.
    if args.metrics_any_address && args.metrics.is_none() {
        anyhow::bail!("--metrics-any-address is given without --metrics ADDR");
    }
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
    // The fleet's etcd is reached from the agent's own namespace too, like
    // the metrics: its client's thread is made before entering the served one.
    let (store, store_name) = open_store(args)?;
    // Enter the namespace before any other thread exists, so the runtime's
    // threads (netlink, interface lookups, pins) all live in it.
    if let Some(ns) = &args.netns {
        netns::enter_named_or_path(ns)
            .with_context(|| format!("entering network namespace {ns}"))?;
    }
    let socket_group = args
        .socket_group
        .as_deref()
        .map(daemon::group_id)
        .transpose()
        .context("--socket-group")?;
    let read_only_group = args
        .read_only_socket_group
        .as_deref()
        .map(daemon::group_id)
        .transpose()
        .context("--read-only-socket-group")?;
    if args.read_only_socket.as_deref() == Some(socket) {
        anyhow::bail!(
            "--read-only-socket {}: that is the main socket's path; give it one of its own",
            socket.display()
        );
    }
    let config = Config {
        socket: socket.to_owned(),
        socket_group,
        read_only_socket: args.read_only_socket.clone().map(|p| (p, read_only_group)),
        store,
        store_name,
        limits: Limits {
            sessions: args.session_capacity,
            nics: args.max_nics,
        },
        mode: AttachMode::from(args.xdp_mode),
        metrics,
        metrics_rule_series: args.metrics_rule_series,
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

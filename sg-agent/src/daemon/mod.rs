//! `sg-agent run`: the daemon. It loads the policy from its store, takes over
//! (or creates) the pinned data plane of its network namespace, puts the
//! policy in force, and serves the API (`crate::api`) on a Unix socket until
//! SIGTERM or SIGINT. It exits without detaching anything: the pinned links
//! keep enforcing the policy until the next agent adopts them, or until
//! `sg-agent cleanup` removes them.
//!
//! One task owns the [`Service`]; connection tasks hand it requests over a
//! channel, so requests are handled one at a time, in arrival order.

mod http;
pub mod reads;
pub mod service;
mod supervisor;

use std::{
    io::ErrorKind,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use tokio::{
    io::unix::AsyncFd,
    net::UnixListener,
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
};

pub use service::{Info, Service};

use crate::{
    api::{Reply, Request},
    dataplane::{
        AttachMode, Dataplane, Enforced, Limits, NamespaceLock,
        droplog::{DropLogRate, DropLogReader},
    },
    netlink::{LinkEvent, LinkWatcher},
    reconcile::Reconciler,
    store::{EtcdStore, SqliteStore, Store, StoreId, StorePosition},
};
use sg_policy::State;

/// Where the policy lives.
pub enum StoreChoice {
    /// A local SQLite database (one host): its path.
    Sqlite(PathBuf),
    /// The fleet's etcd, connected from the agent's own network namespace
    /// before it entered the one it serves.
    Fleet(Box<EtcdStore>),
    /// Taken by the daemon.
    Taken,
}

impl std::fmt::Debug for StoreChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
            Self::Fleet(s) => write!(f, "Fleet(host {})", s.layout().host),
            Self::Taken => f.write_str("Taken"),
        }
    }
}

/// How the daemon runs.
#[derive(Debug)]
pub struct Config {
    pub socket: PathBuf,
    /// The group whose members may use the socket (`--socket-group`);
    /// `None`: root only.
    pub socket_group: Option<u32>,
    /// A second socket that serves only reads (`--read-only-socket`), and
    /// the group that may use it (`None`: root only).
    pub read_only_socket: Option<(PathBuf, Option<u32>)>,
    pub store: StoreChoice,
    /// How the store is named in messages and `status`: the SQLite path,
    /// or the etcd endpoints and this host's name.
    pub store_name: String,
    pub limits: Limits,
    pub mode: AttachMode,
    /// Serve Prometheus text on this listener (`--metrics`): bound, in the
    /// agent's own network namespace, before it entered the one it serves.
    pub metrics: Option<std::net::TcpListener>,
    /// Per-rule hit series a scrape shows at most (`--metrics-rule-series`).
    pub metrics_rule_series: usize,
    /// Log dropped packets at this rate (`--drop-log`).
    pub drop_log: Option<DropLogRate>,
    /// Put the store's policy in force even though the pinned data plane
    /// enforces a state the store does not hold (`--replace-enforced-policy`).
    pub replace_enforced_policy: bool,
    /// How often the daemon reads every map back and repairs what drifted
    /// (`None`: never).
    pub self_check: Option<std::time::Duration>,
}

type Job = (Request, oneshot::Sender<Reply>);

/// The id of group `name` (or `name` itself when it is a number), as the
/// system's group database (NSS) knows it.
pub fn group_id(name: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let c = std::ffi::CString::new(name).context("a group name has no NUL")?;
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is to memory this frame owns, of the sizes given.
    let rc = unsafe {
        libc::getgrnam_r(
            c.as_ptr(),
            &raw mut group,
            buf.as_mut_ptr(),
            buf.len(),
            &raw mut found,
        )
    };
    if rc != 0 {
        bail!(
            "looking up group {name}: {}",
            std::io::Error::from_raw_os_error(rc)
        );
    }
    if found.is_null() {
        bail!("no group named {name:?} (give a group name or a number)");
    }
    Ok(group.gr_gid)
}

/// Binds the API socket at `path`: owner-only (0600) in an owner-only
/// directory, or, with a `group`, 0660 owned by that group (a directory it
/// creates, 0750 and the group's). A socket file left by a dead agent is
/// replaced; one a live agent answers on is not.
fn bind_socket(path: &Path, group: Option<u32>) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::os::unix::fs::chown(dir, None, group)
            .with_context(|| format!("giving {} to group {group:?}", dir.display()))?;
        let mode = if group.is_some() { 0o750 } else { 0o700 };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    } else if let (Some(gid), Some(dir)) = (group, path.parent()) {
        warn_unless_traversable(dir, gid);
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another sg-agent answers on {}: stop it first, or give --socket another path",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    // Created with no permissions for group and others from the start; the
    // group's are given once the socket is the group's.
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above, restoring it.
    unsafe { libc::umask(old) };
    let listener = listener.with_context(|| format!("binding {}", path.display()))?;
    let mode = match group {
        Some(gid) => {
            std::os::unix::fs::chown(path, None, Some(gid))
                .with_context(|| format!("giving {} to group {gid}", path.display()))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Warns when the members of `gid` cannot reach a socket in `dir`, a
/// directory the agent did not make (a unit's `RuntimeDirectory=`, 0700 by
/// default): the socket group is then useless until the directory lets them
/// through. Not a refusal: the socket stays root's, which is safe.
fn warn_unless_traversable(dir: &Path, gid: u32) {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let mode = meta.mode();
    let through = mode & 0o001 != 0 || (meta.gid() == gid && mode & 0o010 != 0);
    if !through {
        log::warn!(
            "--socket-group: the members of group {gid} cannot enter {} (mode {:o}, group {}), so \
             they cannot reach the socket; let them through (under systemd: \
             RuntimeDirectoryMode=0755 in a drop-in; the socket's own 0660 keeps others out)",
            dir.display(),
            mode & 0o7777,
            meta.gid()
        );
    }
}

/// What a connection needs: the owner's queue for changes, the published
/// view for reads, the session table.
#[derive(Clone)]
struct Ends {
    jobs: mpsc::Sender<Job>,
    views: tokio::sync::watch::Receiver<std::sync::Arc<reads::View>>,
    sessions: std::sync::Arc<std::sync::Mutex<crate::dataplane::session_table::SessionTable>>,
    /// The read-only socket's: changes are refused.
    read_only: bool,
}

/// How long a rendered metrics text is served again before it is rendered
/// anew: scrapes, however many, cost the owner task one render a second.
const METRICS_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// What the owner task keeps for the metrics endpoint between scrapes.
#[derive(Default)]
struct Scrapes {
    /// The text last rendered, and when.
    last: Option<(std::time::Instant, String)>,
    /// Failed map reads over every scrape (`sg_scrape_errors_total`):
    /// counted when a text is rendered, not when a kept one is served.
    errors: crate::metrics::ScrapeErrors,
    /// Per-rule hit series shown at most.
    rule_series: usize,
}

impl Scrapes {
    /// The text for a scrape: the kept one while fresh, else rendered anew.
    fn text(&mut self, service: &mut Service) -> String {
        match &self.last {
            Some((at, text)) if at.elapsed() < METRICS_FRESH => text.clone(),
            _ => {
                let text = service.metrics(&mut self.errors, self.rule_series);
                self.last = Some((std::time::Instant::now(), text.clone()));
                text
            }
        }
    }
}

/// A started daemon: its service, the interface watcher, the drop log's
/// reader and the metrics endpoint's questions.
struct Started {
    service: Service,
    watcher: Option<LinkWatcher>,
    drops: Option<AsyncFd<DropLogReader>>,
    metrics: mpsc::Receiver<oneshot::Sender<String>>,
    /// Requests for the owner task, from the connections.
    jobs: mpsc::Receiver<Job>,
}

/// Takes the namespace, checks the store against what the kernel enforces,
/// puts the policy in force and starts serving the API.
fn start(config: &mut Config) -> anyhow::Result<Started> {
    crate::dataplane::faults::arm();
    // One agent per namespace: held until the process ends (see `lock.rs`).
    let root = crate::dataplane::pin_root(crate::netns::current_inode()?);
    let mut lock = NamespaceLock::acquire(&root)?;
    let mut enforced = crate::dataplane::inspect(&root).context("reading the pinned data plane")?;
    if enforced.as_ref().is_some_and(Enforced::is_stale) {
        // Pins of a namespace that is gone, whose inode this one got: they
        // enforce nothing here (their interfaces went with it).
        log::warn!(
            "the pins at {} belong to a network namespace that no longer exists (its inode was reused): removing them",
            root.display()
        );
        crate::dataplane::cleanup(&lock).context("removing the stale pins")?;
        // The directory went with them: lock the one made anew.
        drop(lock);
        lock = NamespaceLock::acquire(&root)?;
        enforced = None;
    }
    let (store, state) = open_store(config, enforced.as_ref())?;
    let mut service = start_service(config, lock, store, state)?;
    let watcher = Some(LinkWatcher::new().context("watching interfaces over netlink")?);
    let drops = start_drop_log(&mut service, config.drop_log)?;
    let (metrics_tx, metrics) = mpsc::channel::<oneshot::Sender<String>>(8);
    if let Some(listener) = config.metrics.take() {
        start_metrics(listener, metrics_tx)?;
    }
    let listener = bind_socket(&config.socket, config.socket_group)?;
    let (jobs_tx, jobs) = mpsc::channel::<Job>(64);
    let ends = Ends {
        jobs: jobs_tx,
        views: service.views(),
        sessions: service.session_table(),
        read_only: false,
    };
    if let Some((path, group)) = &config.read_only_socket {
        let reads = bind_socket(path, *group).context("--read-only-socket")?;
        log::info!("serving reads only on {}", path.display());
        let ends = Ends {
            read_only: true,
            ..ends.clone()
        };
        tokio::spawn(http::accept(reads, ends));
    }
    tokio::spawn(http::accept(listener, ends));
    log::info!(
        "serving the API on {} (program ids: {})",
        config.socket.display(),
        service
            .reconciler()
            .dataplane()
            .program_ids()
            .iter()
            .map(|(n, id)| format!("{n} {id}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Started {
        service,
        watcher,
        drops,
        metrics,
        jobs,
    })
}

/// Removes the API's socket files as the daemon stops.
fn remove_sockets(config: &Config) {
    let _ = std::fs::remove_file(&config.socket);
    if let Some((path, _)) = &config.read_only_socket {
        let _ = std::fs::remove_file(path);
    }
}

/// Runs the daemon until SIGTERM or SIGINT. Must run on a runtime whose
/// threads are in the network namespace to serve.
pub async fn run(mut config: Config) -> anyhow::Result<()> {
    let Started {
        mut service,
        mut watcher,
        mut drops,
        metrics: mut metrics_rx,
        mut jobs,
    } = start(&mut config)?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut prune = tokio::time::interval(std::time::Duration::from_secs(3600));
    let mut check = self_check_timer(config.self_check).await;
    let mut retry = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut scrapes = Scrapes {
        rule_series: config.metrics_rule_series,
        ..Scrapes::default()
    };
    // A fleet store's feed of other hosts' changes; taken again a second
    // after it broke (the store away), from the revision in force.
    let fleet = service.is_fleet();
    let mut feed = service.feed();
    let mut refollow = tokio::time::interval(std::time::Duration::from_secs(1));
    // Writes what the store's rate limits held back (the status record,
    // the local copy) and republishes the fleet's health when it moved.
    let mut tend = tokio::time::interval(std::time::Duration::from_millis(200));
    // The socket is bound and the stored policy in force (`start`).
    let mut supervisor = supervisor::Supervisor::ready(&mut service);
    loop {
        // Biased: signals, then interface events (an interface that appears
        // must be enforced before anything else), then requests.
        tokio::select! {
            biased;
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            // Early in the order: a flood of requests must not starve it.
            () = supervisor.tick(), if supervisor.watched() => supervisor::Supervisor::ping(),
            events = async { watcher.as_mut().expect("guarded").next().await }, if watcher.is_some() => match events {
                Ok(events) => interfaces_changed(&mut service, &events),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::error!("netlink: {e}; watching again, and reconciling every second meanwhile");
                    watcher = None;
                }
            },
            _ = retry.tick(), if watcher.is_none() => {
                match LinkWatcher::new() {
                    Ok(w) => {
                        watcher = Some(w);
                        log::info!("watching interfaces over netlink again");
                    }
                    Err(e) => log::error!("netlink: watching interfaces: {e}"),
                }
                reconcile(&mut service, "netlink resync");
            }
            Some((request, reply)) = jobs.recv() => {
                // What other hosts committed first goes first: the change is
                // made on the newest policy this host has heard of.
                drain_feed(&mut service, &mut feed);
                let answer = match service.handle(request) {
                    Ok(v) => Reply::Ok(v),
                    Err(e) => Reply::Error(e),
                };
                let _ = reply.send(answer);
            }
            // A broken feed (or one whose watch ended) is taken again later.
            batch = async { feed.as_mut().expect("guarded").recv().await }, if feed.is_some() => match batch {
                Some(first) => follow_feed(&mut service, &mut feed, Some(first)),
                None => feed = None,
            },
            _ = refollow.tick(), if fleet && feed.is_none() => feed = service.feed(),
            _ = tend.tick(), if fleet => service.tend_fleet(),
            _ = sighup.recv() => reconcile(&mut service, "SIGHUP"),
            _ = check.tick(), if config.self_check.is_some() => {
                if let Ok(drift) = service.self_check(true)
                    && !drift.is_empty()
                {
                    log::error!("self-check: {} differences between the maps and the policy, repaired where possible", drift.len());
                }
            }
            Some(reply) = metrics_rx.recv() => {
                let _ = reply.send(scrapes.text(&mut service));
            }
            ready = async { drops.as_mut().expect("guarded").readable_mut().await }, if drops.is_some() => match ready {
                Ok(mut guard) => {
                    let mut events = Vec::new();
                    guard.get_inner_mut().drain(&mut events);
                    guard.clear_ready();
                    for line in service.drop_lines(&events) {
                        log::warn!("{line}");
                    }
                }
                Err(e) => {
                    log::error!("the drop log stopped: {e}; dropped packets are no longer logged (their counters go on)");
                    drops = None;
                }
            },
            _ = prune.tick() => service.prune_snapshots(),
        }
        supervisor.update(&mut service);
    }
    supervisor::Supervisor::stopping();
    remove_sockets(&config);
    service.depart();
    log::info!(
        "stopping; the data plane stays attached and pinned at {} (sg-agent cleanup removes it)",
        service.info().pins.display()
    );
    Ok(())
}

/// Folds in every batch of the fleet store's feed that is waiting.
fn drain_feed(
    service: &mut Service,
    feed: &mut Option<tokio::sync::mpsc::UnboundedReceiver<crate::store::Feed>>,
) {
    follow_feed(service, feed, None);
}

/// Folds in `first` and every batch of the feed waiting behind it, joined
/// (`Feed::coalesce`): what a host fell behind by is put in force at once.
fn follow_feed(
    service: &mut Service,
    feed: &mut Option<tokio::sync::mpsc::UnboundedReceiver<crate::store::Feed>>,
    first: Option<crate::store::Feed>,
) {
    let mut waiting: Vec<crate::store::Feed> = first.into_iter().collect();
    if let Some(f) = feed.as_mut() {
        loop {
            match f.try_recv() {
                Ok(batch) => waiting.push(batch),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    *feed = None;
                    break;
                }
            }
        }
    }
    for batch in crate::store::Feed::coalesce(waiting) {
        if service.follow(batch) {
            *feed = None;
        }
    }
}

/// Reconciles when a batch of interface events concerns a bound NIC.
fn interfaces_changed(service: &mut Service, events: &[LinkEvent]) {
    let bound = |n: &str| service.state().nics.contains_key(n);
    let relevant: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            LinkEvent::Added { name, .. } | LinkEvent::Removed { name, .. } if bound(name) => {
                Some(name.clone())
            }
            LinkEvent::Resync => Some("(resync)".to_owned()),
            _ => None,
        })
        .collect();
    if !relevant.is_empty() {
        reconcile(
            service,
            &format!("interfaces changed: {}", relevant.join(", ")),
        );
    }
}

/// The timer of the periodic self-check, its first tick taken (a year
/// apart when it is off: the loop's branch is disabled then anyway).
async fn self_check_timer(every: Option<std::time::Duration>) -> tokio::time::Interval {
    let mut t = tokio::time::interval(every.unwrap_or(std::time::Duration::from_hours(24 * 365)));
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t.tick().await;
    t
}

/// Loads (or adopts) the pinned data plane and puts `state` in force.
fn start_service(
    config: &Config,
    lock: NamespaceLock,
    store: Box<dyn Store>,
    state: State,
) -> anyhow::Result<Service> {
    let root = lock.root().to_path_buf();
    let adopting = root.join("maps").exists();
    let dp = Dataplane::load_pinned(config.limits, lock).context("loading the data plane")?;
    crate::dataplane::faults::point("start.loaded");
    log::info!(
        "{} the data plane pinned at {}",
        if adopting { "adopted" } else { "created" },
        root.display()
    );
    let reconciler = Reconciler::new(dp, Some(config.mode));
    let info = Info {
        socket: config.socket.clone(),
        store: config.store_name.clone(),
        pins: root.clone(),
    };
    let sessions = crate::dataplane::session_table::SessionTable::open(&root)
        .context("opening the pinned session table")?;
    let mut service = Service::new(state, store, reconciler, info, sessions);
    match service.reconcile() {
        Ok(report) => log::info!("policy in force: {report:?}"),
        // The maps keep what was in force; say so loudly and go on serving,
        // so the operator can fix the policy through the API.
        Err(e) => log::error!("putting the stored policy in force: {e}"),
    }
    let keep: Vec<String> = service.state().nics.keys().cloned().collect();
    for pin in service.reconciler().dataplane().prune_links(&keep) {
        log::info!("removed the pinned link {pin}: no bound NIC uses it");
    }
    crate::dataplane::faults::point("start.reconciled");
    service.record_in_kernel();
    Ok(service)
}

/// Opens the store and the policy in it. A new store starts empty, unless
/// the pinned data plane enforces a state this store does not hold: then the
/// agent refuses to start (see [`store_matches`]) and changes nothing, not
/// even by creating the store file.
fn open_store(
    config: &mut Config,
    enforced: Option<&Enforced>,
) -> anyhow::Result<(Box<dyn Store>, State)> {
    let guard = enforced.filter(|e| !e.is_empty() && !config.replace_enforced_policy);
    let mut store: Box<dyn Store> = match std::mem::replace(&mut config.store, StoreChoice::Taken) {
        StoreChoice::Sqlite(path) => {
            if let Some(e) = guard
                && !path.exists()
            {
                bail!(refusal(
                    config,
                    e,
                    &format!("the store {} does not exist", path.display())
                ));
            }
            Box::new(
                SqliteStore::open(&path)
                    .with_context(|| format!("opening the store {}", path.display()))?,
            )
        }
        StoreChoice::Fleet(store) => store,
        StoreChoice::Taken => bail!("the store was taken already"),
    };
    let loaded = store.load().context("loading the policy from the store")?;
    if let Some(e) = guard
        && let Err(why) = store_matches(e, loaded.is_some(), store.position())
    {
        bail!(refusal(config, e, &why));
    }
    if let Some(s) = loaded {
        return Ok((store, s));
    }
    let name = &config.store_name;
    if enforced.is_some_and(|e| !e.is_empty()) {
        log::warn!(
            "new store at {name}: replacing the enforced policy with an empty one, as --replace-enforced-policy asks"
        );
    } else {
        log::info!("new store at {name}: starting with no policy");
    }
    let s = State::new();
    store.commit(&s, &[]).context("initialising the store")?;
    Ok((store, s))
}

/// Whether a store (holding a state or not, at `position`) holds what the
/// pinned data plane `enforced` enforces: the same store, at the generation
/// recorded in the kernel or later. `Err` says why not.
pub fn store_matches(
    enforced: &Enforced,
    has_state: bool,
    position: StorePosition,
) -> Result<(), String> {
    let record = &enforced.record;
    if !has_state {
        return Err("the store holds no policy (it is new, empty or truncated)".to_owned());
    }
    let recorded = StoreId(record.store_id);
    if record.store_id != [0; 16] && recorded != position.id {
        return Err(format!(
            "the data plane enforces the state of another store (id {recorded}, generation {}); this store is id {}",
            record.generation, position.id
        ));
    }
    if position.generation < record.generation {
        return Err(format!(
            "the store is at generation {}, behind generation {} that the data plane enforces: changes that were acknowledged are missing from it (a restored backup, a lost write-ahead log?)",
            position.generation, record.generation
        ));
    }
    Ok(())
}

/// Why the agent refuses to start over an enforcing data plane, and how to go on.
fn refusal(config: &Config, enforced: &Enforced, why: &str) -> String {
    let names: Vec<String> = enforced
        .interfaces
        .iter()
        .map(|(i, n)| n.clone().unwrap_or_else(|| format!("ifindex {i} (gone)")))
        .collect();
    let record = &enforced.record;
    let source = if record.store_id == [0; 16] {
        String::new()
    } else {
        format!(
            ", put in force from store {} at generation {}",
            StoreId(record.store_id),
            record.generation
        )
    };
    format!(
        "refusing to start: {why}, but the data plane pinned here enforces a policy on {} NIC(s) ({}){source}. \
         Starting would replace that policy and unbind every NIC the store does not bind, so they pass traffic unfiltered. \
         If --store {} is not the right store, start with the right one; to put this store's policy in force anyway, \
         start with --replace-enforced-policy",
        names.len(),
        if names.is_empty() {
            "none bound now".to_owned()
        } else {
            names.join(", ")
        },
        config.store_name
    )
}

/// Turns the drop log on at `rate` and returns its reader, or turns it off
/// (an adopted data plane may have had it on).
fn start_drop_log(
    service: &mut Service,
    rate: Option<DropLogRate>,
) -> anyhow::Result<Option<AsyncFd<DropLogReader>>> {
    let dp = service.reconciler().dataplane();
    let Some(rate) = rate else {
        dp.maps_mut()
            .set_drop_log(None)
            .context("turning the drop log off")?;
        return Ok(None);
    };
    dp.maps_mut()
        .set_drop_log(Some(rate))
        .context("turning the drop log on")?;
    let reader = dp
        .maps_mut()
        .take_drop_log()
        .context("reading the drop log")?;
    log::info!(
        "logging dropped packets, at most {} a second per CPU (bursts of {})",
        rate.per_sec,
        rate.burst
    );
    // SAFETY: the reader owns its ring buffer fd and moves into the AsyncFd,
    // which deregisters it before the fd is closed on drop.
    Ok(Some(unsafe {
        AsyncFd::register_with_interest(reader, tokio::io::Interest::READABLE)?
    }))
}

/// Serves Prometheus text on `listener`. The endpoint renders on the
/// blocking pool: it asks the task that owns the data plane (over `ask`)
/// and waits.
fn start_metrics(
    listener: std::net::TcpListener,
    ask: mpsc::Sender<oneshot::Sender<String>>,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    log::info!(
        "serving Prometheus text on http://{}/metrics",
        listener.local_addr()?
    );
    let render = std::sync::Arc::new(move || {
        let (tx, rx) = oneshot::channel();
        if ask.blocking_send(tx).is_err() {
            return String::new();
        }
        rx.blocking_recv().unwrap_or_default()
    });
    tokio::spawn(async move {
        if let Err(e) = crate::metrics::serve(listener, render).await {
            log::error!("the metrics endpoint stopped: {e}");
        }
    });
    Ok(())
}

fn reconcile(service: &mut Service, why: &str) {
    match service.reconcile() {
        Ok(report) => log::info!("{why}: {report:?}"),
        Err(e) => log::error!("{why}: {e}"),
    }
}

//! `sg-agent run`: the daemon. It loads the policy from its store, takes over
//! (or creates) the pinned data plane of its network namespace, puts the
//! policy in force, and serves the API (`crate::api`) on a Unix socket until
//! SIGTERM or SIGINT. It exits without detaching anything: the pinned links
//! keep enforcing the policy until the next agent adopts them, or until
//! `sg-agent cleanup` removes them.
//!
//! One task owns the [`Service`]; connection tasks hand it requests over a
//! channel, so requests are handled one at a time, in arrival order.

pub mod service;

use std::{
    io::ErrorKind,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use tokio::{
    io::unix::AsyncFd,
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
};

pub use service::{Info, Service};

use crate::{
    api::{MAX_REQUEST_BYTES, Reply, Request},
    dataplane::{
        AttachMode, Dataplane, Enforced, Limits, NamespaceLock,
        droplog::{DropLogRate, DropLogReader},
    },
    enforce::Enforcer,
    netlink::{LinkEvent, LinkWatcher},
    policy::State,
    store::{SqliteStore, Store, StoreId, StorePosition},
};

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    pub store: PathBuf,
    pub limits: Limits,
    pub mode: AttachMode,
    /// Serve Prometheus text on this address (`--metrics`); checked by
    /// `metrics::check_listen_addr` before the daemon starts.
    pub metrics: Option<std::net::SocketAddr>,
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

/// Binds the API socket at `path`: owner-only (0600) in an owner-only
/// directory. A socket file left by a dead agent is replaced; one a live
/// agent answers on is not.
fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
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
    // Created with no permissions for group and others from the start.
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above, restoring it.
    unsafe { libc::umask(old) };
    let listener = listener.with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Reads request lines from one client and answers each.
async fn connection(stream: UnixStream, jobs: mpsc::Sender<Job>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let limit = u64::try_from(MAX_REQUEST_BYTES).unwrap_or(u64::MAX) + 1;
        match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let reply = if line.len() > MAX_REQUEST_BYTES {
            Reply::Error(format!(
                "request: longer than the limit of {MAX_REQUEST_BYTES} bytes"
            ))
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Err(e) => Reply::Error(format!("request: {e}")),
                Ok(req) => {
                    let (tx, rx) = oneshot::channel();
                    if jobs.send((req, tx)).await.is_err() {
                        return;
                    }
                    match rx.await {
                        Ok(r) => r,
                        Err(_) => return,
                    }
                }
            }
        };
        let mut out = serde_json::to_vec(&reply).unwrap_or_default();
        out.push(b'\n');
        if write.write_all(&out).await.is_err() {
            return;
        }
        if line.len() > MAX_REQUEST_BYTES {
            return;
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT. Must run on a runtime whose
/// threads are in the network namespace to serve.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // One agent per namespace: held until the process ends (see `lock.rs`).
    let root = crate::dataplane::pin_root(crate::netns::current_inode()?);
    let lock = NamespaceLock::acquire(&root)?;
    let enforced = crate::dataplane::inspect(&root).context("reading the pinned data plane")?;
    let (store, state) = open_store(&config, enforced.as_ref())?;
    let mut service = start_service(&config, lock, store, state)?;
    let mut watcher = LinkWatcher::new().context("watching interfaces over netlink")?;
    let mut drops = start_drop_log(&mut service, config.drop_log)?;
    let (metrics_tx, mut metrics_rx) = mpsc::channel::<oneshot::Sender<String>>(8);
    if let Some(addr) = config.metrics {
        start_metrics(addr, metrics_tx).await?;
    }
    let listener = bind_socket(&config.socket)?;
    log::info!(
        "serving the API on {} (program ids: {})",
        config.socket.display(),
        service
            .enforcer()
            .dataplane()
            .program_ids()
            .iter()
            .map(|(n, id)| format!("{n} {id}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (jobs_tx, mut jobs) = mpsc::channel::<Job>(64);
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut prune = tokio::time::interval(std::time::Duration::from_secs(3600));
    let mut check = self_check_timer(config.self_check).await;
    crate::dataplane::faults::arm();
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => reconcile(&mut service, "SIGHUP"),
            _ = prune.tick() => service.prune_snapshots(),
            _ = check.tick(), if config.self_check.is_some() => {
                if let Ok(drift) = service.self_check(true)
                    && !drift.is_empty()
                {
                    log::error!("self-check: {} differences between the maps and the policy, repaired where possible", drift.len());
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { tokio::spawn(connection(stream, jobs_tx.clone())); }
                Err(e) => log::warn!("accepting an API connection: {e}"),
            },
            Some((request, reply)) = jobs.recv() => {
                let answer = match service.handle(request) {
                    Ok(v) => Reply::Ok(v),
                    Err(e) => Reply::Error(e),
                };
                let _ = reply.send(answer);
            }
            Some(reply) = metrics_rx.recv() => {
                let _ = reply.send(service.metrics());
            }
            ready = async { drops.as_mut().expect("guarded").readable_mut().await }, if drops.is_some() => {
                let mut guard = ready?;
                let mut events = Vec::new();
                guard.get_inner_mut().drain(&mut events);
                guard.clear_ready();
                for line in service.drop_lines(&events) {
                    log::warn!("{line}");
                }
            }
            events = watcher.next() => match events {
                Ok(events) => {
                    let bound = |n: &str| service.state().nics.contains_key(n);
                    let relevant: Vec<String> = events.iter().filter_map(|e| match e {
                        LinkEvent::Added { name, .. } | LinkEvent::Removed { name, .. } if bound(name) => Some(name.clone()),
                        LinkEvent::Resync => Some("(resync)".to_owned()),
                        _ => None,
                    }).collect();
                    if !relevant.is_empty() {
                        reconcile(&mut service, &format!("interfaces changed: {}", relevant.join(", ")));
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::error!("netlink: {e}; watching again");
                    watcher = LinkWatcher::new().context("watching interfaces over netlink")?;
                    reconcile(&mut service, "netlink resync");
                }
            },
        }
    }
    let _ = std::fs::remove_file(&config.socket);
    log::info!(
        "stopping; the data plane stays attached and pinned at {} (sg-agent cleanup removes it)",
        service.info().pins.display()
    );
    Ok(())
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
    store: SqliteStore,
    state: State,
) -> anyhow::Result<Service> {
    let root = lock.root().to_path_buf();
    let adopting = root.join("maps").exists();
    let dp = Dataplane::load_pinned(config.limits, lock).context("loading the data plane")?;
    log::info!(
        "{} the data plane pinned at {}",
        if adopting { "adopted" } else { "created" },
        root.display()
    );
    let enforcer = Enforcer::new(dp, Some(config.mode));
    let info = Info {
        socket: config.socket.clone(),
        store: config.store.clone(),
        pins: root.clone(),
    };
    let mut service = Service::new(state, Box::new(store), enforcer, info);
    match service.reconcile() {
        Ok(report) => log::info!("policy in force: {report:?}"),
        // The maps keep what was in force; say so loudly and go on serving,
        // so the operator can fix the policy through the API.
        Err(e) => log::error!("putting the stored policy in force: {e}"),
    }
    let keep: Vec<String> = service.state().nics.keys().cloned().collect();
    for pin in service.enforcer().dataplane().prune_links(&keep) {
        log::info!("removed the pinned link {pin}: no bound NIC uses it");
    }
    service.record_in_kernel();
    Ok(service)
}

/// Opens the store and the policy in it. A new store starts empty, unless
/// the pinned data plane enforces a state this store does not hold: then the
/// agent refuses to start (see [`store_matches`]) and changes nothing, not
/// even by creating the store file.
fn open_store(
    config: &Config,
    enforced: Option<&Enforced>,
) -> anyhow::Result<(SqliteStore, State)> {
    let path = &config.store;
    let guard = enforced.filter(|e| !e.is_empty() && !config.replace_enforced_policy);
    if let Some(e) = guard
        && !path.exists()
    {
        bail!(refusal(
            config,
            e,
            &format!("the store {} does not exist", path.display())
        ));
    }
    let mut store =
        SqliteStore::open(path).with_context(|| format!("opening the store {}", path.display()))?;
    let loaded = store.load().context("loading the policy from the store")?;
    if let Some(e) = guard
        && let Err(why) = store_matches(e, loaded.is_some(), store.position())
    {
        bail!(refusal(config, e, &why));
    }
    if let Some(s) = loaded {
        return Ok((store, s));
    }
    if enforced.is_some_and(|e| !e.is_empty()) {
        log::warn!(
            "new store at {}: replacing the enforced policy with an empty one, as --replace-enforced-policy asks",
            path.display()
        );
    } else {
        log::info!("new store at {}: starting with no policy", path.display());
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
         If --store {} is not the right path, start with the right one; to put this store's policy in force anyway, \
         start with --replace-enforced-policy",
        names.len(),
        if names.is_empty() {
            "none bound now".to_owned()
        } else {
            names.join(", ")
        },
        config.store.display()
    )
}

/// Turns the drop log on at `rate` and returns its reader, or turns it off
/// (an adopted data plane may have had it on).
fn start_drop_log(
    service: &mut Service,
    rate: Option<DropLogRate>,
) -> anyhow::Result<Option<AsyncFd<DropLogReader>>> {
    let dp = service.enforcer().dataplane();
    let Some(rate) = rate else {
        dp.set_drop_log(None).context("turning the drop log off")?;
        return Ok(None);
    };
    dp.set_drop_log(Some(rate))
        .context("turning the drop log on")?;
    let reader = dp.take_drop_log().context("reading the drop log")?;
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

/// Serves Prometheus text on `addr`. The endpoint renders on the blocking
/// pool: it asks the task that owns the data plane (over `ask`) and waits.
async fn start_metrics(
    addr: std::net::SocketAddr,
    ask: mpsc::Sender<oneshot::Sender<String>>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {addr}"))?;
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

//! [`Store`] on etcd: one policy for a fleet of hosts (`docs/fleet.md`).
//!
//! The store keeps a mirror of the policy keys (see `fleet_keys.rs`) at a
//! known revision (`fleet_mirror.rs`), in which the other hosts' NICs that
//! no group of this host names are only counted (`sg_policy::census`). A
//! commit is one transaction conditioned on the generation key not having
//! been written since that revision; its writes
//! are the keys whose values the new state changes. Changes other hosts
//! commit arrive over a watch of the policy prefix ([`EtcdStore::take_feed`])
//! and are folded into the mirror by [`EtcdStore::catch_up`].
//!
//! The trait is synchronous and the daemon calls it from its own runtime:
//! the client runs on a runtime of the store's own (one thread), and each
//! call waits for its answer on a channel, with a deadline.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    TlsOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::mpsc;

use super::{
    Snapshot, SnapshotInfo, Store, StoreError, StoreHealth, StoreId, StorePosition,
    fleet_keys::{FLEET_SCHEMA, HostStatus, Layout, Settled},
    fleet_mirror::Mirror,
};
use sg_policy::{GroupId, State, validate_state};

/// How long one call to etcd may take before the store counts as
/// unreachable for it.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// How long one attempt of a call may take: a member that does not answer
/// (down, cut off, or in a cluster electing a leader) is left for another
/// within [`CALL_TIMEOUT`].
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a starting agent tries to read the policy before it starts
/// from its copy instead.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// The status records of this host: one every `REPORT_EVERY` sustained, in
/// bursts of up to `REPORT_BURST` (an operator's few changes in a row are
/// each recorded at once; a fleet following a hundred changes a second
/// writes five records a second per host, not a hundred).
const REPORT_EVERY: Duration = Duration::from_millis(200);
const REPORT_BURST: u32 = 5;

/// The shortest time between two writes of the local copy.
const COPY_EVERY: Duration = Duration::from_secs(1);

/// How long no member may answer before the store counts as away.
const AWAY_AFTER: Duration = Duration::from_secs(2);

/// How long a host's status outlives its agent: the lease's time to live.
const STATUS_TTL_SECS: i64 = 10;

/// How to reach the fleet's etcd and who this host is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs (`http://` or, with TLS, `https://`).
    pub endpoints: Vec<String>,
    /// This host's name in the fleet.
    pub host: String,
    /// Where the fleet's keys live; ends with `/`.
    pub prefix: String,
    /// A CA to check the servers' certificates with (TLS).
    pub ca: Option<PathBuf>,
    /// This host's client certificate and key (TLS client authentication).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// etcd's own authentication: a user and its password.
    pub user: Option<(String, String)>,
    /// Where this host keeps a copy of the fleet's policy keys as last in
    /// force, to start from while the store is away (`--fleet-cache`).
    pub cache: Option<PathBuf>,
}

impl EtcdConfig {
    /// Reads `--store etcd://HOST:PORT[,HOST:PORT…]` (or `etcds://` for
    /// TLS) for host `host`; the other fields stay at their defaults.
    pub fn parse(url: &str, host: &str) -> Result<Self, String> {
        let (scheme, rest) = if let Some(r) = url.strip_prefix("etcd://") {
            ("http", r)
        } else if let Some(r) = url.strip_prefix("etcds://") {
            ("https", r)
        } else {
            return Err(format!(
                "--store {url:?}: an etcd store is etcd://HOST:PORT[,HOST:PORT...] (etcds:// for TLS)"
            ));
        };
        let (list, prefix) = match rest.split_once('/') {
            Some((l, p)) if !p.is_empty() => (l, format!("/{}/", p.trim_matches('/'))),
            Some((l, _)) => (l, "/sg/v1/".to_owned()),
            None => (rest, "/sg/v1/".to_owned()),
        };
        let mut endpoints = Vec::new();
        for ep in list.split(',') {
            let ok = ep
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(format!(
                    "--store {url:?}: endpoint {ep:?} is not HOST:PORT (port 1..=65535)"
                ));
            }
            endpoints.push(format!("{scheme}://{ep}"));
        }
        super::fleet_keys::check_host(host)?;
        Ok(Self {
            endpoints,
            host: host.to_owned(),
            prefix,
            ca: None,
            identity: None,
            user: None,
            cache: None,
        })
    }

    fn options(&self) -> Result<ConnectOptions, StoreError> {
        let mut o = ConnectOptions::new()
            .with_connect_timeout(ATTEMPT_TIMEOUT)
            .with_timeout(ATTEMPT_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            // A watch on a member cut off from the others waits for a leader
            // that will not come: fail it, so another member is asked.
            .with_require_leader(true);
        if let Some((user, password)) = &self.user {
            // etcd's simple tokens lapse after five idle minutes: the
            // client authenticates again when one has.
            o = o
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        if self.ca.is_some() || self.identity.is_some() {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|source| StoreError::Create {
                    path: p.display().to_string(),
                    source,
                })
            };
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.ca {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let Some((cert, key)) = &self.identity {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            o = o.with_tls(tls);
        }
        Ok(o)
    }
}

/// A put (`Some`) or a delete (`None`) of one key.
type Write = (String, Option<Vec<u8>>);

/// A batch of changes to the policy keys, as a watch delivered them.
#[derive(Debug)]
pub enum Feed {
    /// Puts (`Some`) and deletes (`None`) of policy keys, in revision order,
    /// each with its revision.
    Changes(Vec<(i64, String, Option<Vec<u8>>)>),
    /// The watch broke (the store is unreachable, or the revision it
    /// started from was compacted): reload the whole policy.
    Lost(String),
}

impl Feed {
    /// Batches as they arrived, consecutive changes joined into one (they
    /// are in revision order across batches too): a host that fell behind
    /// folds in everything waiting at once and puts the result in force
    /// once, rather than once per commit it missed.
    pub fn coalesce(batches: impl IntoIterator<Item = Self>) -> Vec<Self> {
        let mut out: Vec<Self> = Vec::new();
        for b in batches {
            match (out.last_mut(), b) {
                (Some(Self::Changes(all)), Self::Changes(more)) => all.extend(more),
                (_, b) => out.push(b),
            }
        }
        out
    }
}

/// The fleet store of one host.
pub struct EtcdStore {
    /// Taken only when the store is dropped.
    rt: Rt,
    client: Client,
    config: EtcdConfig,
    layout: Layout,
    mirror: Mirror,
    /// A change named groups whose members the mirror only counted, and
    /// reading them whole failed: the mirror is as before that change, and
    /// the next [`EtcdStore::catch_up`] reads the policy again first.
    reload_pending: bool,
    position: StorePosition,
    /// The status key's lease, and whether its keepalives stopped.
    lease: Option<(i64, Arc<AtomicBool>)>,
    /// The revision last recorded under `status/<host>`.
    reported: Option<i64>,
    /// What the background watch of `status/` and the calls learn.
    shared: Arc<Shared>,
    /// The revision of the copy on disk.
    copied: i64,
    /// What the status record's rate limit allows; when the copy was last
    /// written.
    report_budget: Budget,
    last_copy: Option<std::time::Instant>,
}

/// What the store's background tasks and its calls share.
#[derive(Default)]
struct Shared {
    /// Every live host's status, by host, as the watch of `status/` has it.
    hosts: Mutex<BTreeMap<String, HostStatus>>,
    /// Whether the store answered last time anything asked.
    unreachable: AtomicBool,
    /// Since when it has not (unix seconds), or when it came back.
    since: AtomicU64,
}

impl Shared {
    fn set_reachable(&self, ok: bool) {
        if self.unreachable.swap(!ok, Ordering::Relaxed) == ok {
            self.since.store(unix_now(), Ordering::Relaxed);
            if ok {
                log::info!("fleet store: reachable again");
            } else {
                log::error!(
                    "fleet store: unreachable; enforcing the policy last in force, refusing changes"
                );
            }
        }
    }
}

/// The store's runtime, shut down without waiting when the store goes: a
/// store may be dropped inside the daemon's runtime, where waiting for
/// another runtime's threads is not allowed.
struct Rt(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for Rt {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("taken only on drop")
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl EtcdStore {
    /// Connects to the fleet's etcd and reads the policy keys. Fails if no
    /// endpoint answers within the call timeout.
    pub fn open(config: EtcdConfig) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sg-etcd")
            .enable_all()
            .build()
            .map_err(|source| StoreError::Create {
                path: "the etcd client's runtime".to_owned(),
                source,
            })?;
        let options = config.options()?;
        let endpoints = config.endpoints.clone();
        let client = wait(&rt, async move {
            Client::connect(endpoints, Some(options)).await
        })
        .map_err(|e| etcd_err(&config, "connecting", e))?;
        let layout = Layout {
            prefix: config.prefix.clone(),
            host: config.host.clone(),
        };
        let mut store = Self {
            rt: Rt(Some(rt)),
            client,
            config,
            layout,
            mirror: Mirror::default(),
            reload_pending: false,
            position: StorePosition::default(),
            lease: None,
            reported: None,
            shared: Arc::default(),
            copied: 0,
            report_budget: Budget::new(REPORT_BURST, REPORT_EVERY),
            last_copy: None,
        };
        store.rt.spawn(watch_hosts(
            store.client.clone(),
            store.layout.other("status/"),
            Arc::clone(&store.shared),
        ));
        match store.reload_within(START_TIMEOUT, &BTreeSet::new()) {
            Ok(()) => {}
            Err(e) if store.shared.unreachable.load(Ordering::Relaxed) => {
                // Away: start from this host's copy of what it had in force
                // (fail-static), and catch up from its revision later.
                store.mirror = store.read_copy().map_err(|why| StoreError::Unreachable {
                    store: store.config.endpoints.join(","),
                    why: format!("{e}; and no copy of the policy to start from: {why}"),
                })?;
                let (id, generation) = store.layout.position(&store.mirror.kvs)?;
                store.position = StorePosition { id, generation };
                store.copied = store.mirror.revision;
                log::warn!(
                    "fleet store unreachable ({e}): starting from this host's copy of the policy at revision {}",
                    store.mirror.revision
                );
            }
            Err(e) => return Err(e),
        }
        Ok(store)
    }

    /// Writes this host's copy of the policy keys, if the revision in force
    /// moved since the last: a whole new file, renamed over the old.
    pub fn keep_copy(&mut self) {
        let Some(path) = &self.config.cache else {
            return;
        };
        if self.copied == self.mirror.revision
            || self.last_copy.is_some_and(|t| t.elapsed() < COPY_EVERY)
        {
            return;
        }
        self.last_copy = Some(std::time::Instant::now());
        match self.mirror.write_copy(path) {
            Ok(()) => self.copied = self.mirror.revision,
            Err(e) => log::warn!(
                "writing the copy of the fleet's policy to {}: {e}",
                path.display()
            ),
        }
    }

    fn read_copy(&self) -> Result<Mirror, String> {
        let Some(path) = &self.config.cache else {
            return Err("--fleet-cache is not set".to_owned());
        };
        Mirror::read_copy(path)
    }

    /// Runs `f` with a client on the store's runtime and waits for it;
    /// runs it again, for up to [`CALL_TIMEOUT`], while it fails in a way
    /// another member may not (a member down, a leader election).
    fn call<
        T: Send + 'static,
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    >(
        &self,
        what: &str,
        f: impl Fn(Client) -> F,
    ) -> Result<T, StoreError> {
        self.call_within(CALL_TIMEOUT, what, f)
    }

    /// [`EtcdStore::call`], trying again for up to `within`.
    fn call_within<
        T: Send + 'static,
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    >(
        &self,
        within: Duration,
        what: &str,
        f: impl Fn(Client) -> F,
    ) -> Result<T, StoreError> {
        let deadline = std::time::Instant::now() + within;
        let mut attempt: u64 = 0;
        loop {
            match wait(&self.rt, f(self.client.clone())) {
                Ok(v) => {
                    self.shared.set_reachable(true);
                    return Ok(v);
                }
                Err(e) if transient(&e) && std::time::Instant::now() < deadline => {
                    attempt += 1;
                    log::info!("etcd: {what}: {e}; trying again (attempt {attempt})");
                    std::thread::sleep(Duration::from_millis(10 * attempt.min(20)));
                }
                Err(e) => {
                    if transient(&e) {
                        self.shared.set_reachable(false);
                    }
                    return Err(etcd_err(&self.config, what, e));
                }
            }
        }
    }

    /// Reads every policy key afresh.
    fn reload(&mut self) -> Result<(), StoreError> {
        self.reload_within(CALL_TIMEOUT, &BTreeSet::new())
    }

    /// [`EtcdStore::reload`], trying for up to `within`.
    fn reload_within(
        &mut self,
        within: Duration,
        also: &BTreeSet<GroupId>,
    ) -> Result<(), StoreError> {
        let prefix = self.layout.policy();
        let resp = self.call_within(within, "reading the policy", move |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })?;
        let revision = resp
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        let gen_key = self.layout.generation();
        let mut gen_rev = 0;
        let read: Vec<_> = resp
            .kvs()
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                if key == gen_key {
                    gen_rev = kv.mod_revision();
                }
                (key, kv.value())
            })
            .collect();
        let (kvs, census) = self.layout.split(&read, also)?;
        drop(read);
        drop(resp);
        // The whole policy as read is freed: give it back to the system.
        crate::heap::trim();
        self.mirror = Mirror {
            kvs,
            census: Arc::new(census),
            revision,
            gen_rev,
        };
        self.reload_pending = false;
        let (id, generation) = self.layout.position(&self.mirror.kvs)?;
        self.position = StorePosition { id, generation };
        Ok(())
    }

    /// The store's revision the state is as of.
    pub fn revision(&self) -> i64 {
        self.mirror.revision
    }

    /// The layout, for the status of every host.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Starts a watch of the policy keys from just after the mirror's
    /// revision; its batches arrive on the receiver until it breaks (a
    /// [`Feed::Lost`] is the last). Call again after a reload.
    pub fn take_feed(&mut self) -> mpsc::UnboundedReceiver<Feed> {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = self.client.clone();
        let prefix = self.layout.policy();
        let from = self.mirror.revision + 1;
        self.rt.spawn(async move {
            let lost = follow(client, prefix, from, &tx).await;
            let _ = tx.send(Feed::Lost(lost));
        });
        rx
    }

    /// Folds a batch of the feed into the mirror. Returns the new state if
    /// the batch changed the policy (changes at or before the mirror's
    /// revision, this host's own commits among them, are skipped); on
    /// [`Feed::Lost`], reloads the whole policy and returns it.
    pub fn catch_up(&mut self, feed: Feed) -> Result<Option<State>, StoreError> {
        match feed {
            Feed::Lost(why) if self.shared.unreachable.load(Ordering::Relaxed) => {
                // Nothing to reload from: the next feed starts from the
                // revision in force, and brings what was missed once the
                // store answers (or breaks again, compacted, and reloads).
                log::debug!("fleet store: the watch broke ({why}) while the store is away");
                return Ok(None);
            }
            Feed::Lost(why) => {
                log::warn!("fleet store: the watch broke ({why}); reloading the policy");
                // Briefly: the daemon waits meanwhile. If the store does
                // not answer, the next feed starts from the revision in
                // force and the reload is tried again if it breaks again.
                if let Err(e) = self.reload_within(ATTEMPT_TIMEOUT, &BTreeSet::new()) {
                    log::warn!(
                        "fleet store: reloading the policy: {e}; following from revision {}",
                        self.mirror.revision
                    );
                    return Ok(None);
                }
            }
            Feed::Changes(_) if self.reload_pending => {
                // A reload supersedes the batch (its changes are older or
                // are read with it; later ones fold in on top).
                if let Err(e) = self.reload_within(ATTEMPT_TIMEOUT, &BTreeSet::new()) {
                    log::warn!("fleet store: reading the policy again: {e}");
                    return Ok(None);
                }
            }
            Feed::Changes(batch) => {
                let Some(undo) = self.mirror.fold(&self.layout, batch) else {
                    return Ok(None);
                };
                match self.layout.settle(
                    &mut self.mirror.kvs,
                    &mut self.mirror.census,
                    &BTreeSet::new(),
                )? {
                    Settled::State(s) => {
                        self.set_position()?;
                        return Ok(Some(s.unwrap_or_default()));
                    }
                    Settled::Unheld(groups) => {
                        log::info!(
                            "fleet store: this host's rules now name {groups:?}, whose members on other hosts it only counted; reading the policy again"
                        );
                        if let Err(e) = self.reload_within(ATTEMPT_TIMEOUT, &BTreeSet::new()) {
                            // Fail-static: what is in force stays, and so
                            // does the mirror it came from.
                            self.mirror.undo(undo);
                            self.reload_pending = true;
                            log::warn!(
                                "fleet store: reading the policy again: {e}; keeping revision {} in force until it answers",
                                self.mirror.revision
                            );
                            return Ok(None);
                        }
                    }
                }
            }
        }
        self.settled(&BTreeSet::new())
            .map(Option::unwrap_or_default)
            .map(Some)
    }

    /// The state the mirror holds, after [`Layout::settle`] counted the NICs
    /// no group of this host (nor `also`) names; reads the policy again
    /// whole first if it named one the mirror only counted.
    fn settled(&mut self, also: &BTreeSet<GroupId>) -> Result<Option<State>, StoreError> {
        let mut reread = false;
        loop {
            let found = self
                .layout
                .settle(&mut self.mirror.kvs, &mut self.mirror.census, also)?;
            match found {
                Settled::State(s) => {
                    self.set_position()?;
                    return Ok(s);
                }
                // Read whole, nothing is counted: settling cannot find
                // this twice.
                Settled::Unheld(groups) if reread => {
                    return Err(StoreError::CorruptKey {
                        key: self.layout.policy(),
                        reason: format!("the members of {groups:?} stay counted after a reload"),
                    });
                }
                Settled::Unheld(_) => {
                    self.reload_within(CALL_TIMEOUT, also)?;
                    reread = true;
                }
            }
        }
    }

    fn set_position(&mut self) -> Result<(), StoreError> {
        let (id, generation) = self.layout.position(&self.mirror.kvs)?;
        self.position = StorePosition { id, generation };
        Ok(())
    }

    /// Records under `status/<host>` (under a lease, so that a host whose
    /// agent is gone drops out) what this host has in force.
    pub fn report_status(&mut self) -> Result<(), StoreError> {
        if self
            .lease
            .as_ref()
            .is_some_and(|(_, lost)| lost.load(Ordering::Relaxed))
        {
            // Its keepalives stopped (the store was away): the key went
            // with the lease; take a new one.
            self.lease = None;
        }
        if self.lease.is_some() && self.reported == Some(self.mirror.revision) {
            return Ok(());
        }
        // Rate-limited: a fleet of hundreds of hosts following a hundred
        // changes a second would otherwise write tens of thousands a
        // second. The daemon's periodic call writes what was held back.
        if self.lease.is_some() && !self.report_budget.take(std::time::Instant::now()) {
            return Ok(());
        }
        let lease = if let Some((l, _)) = &self.lease {
            *l
        } else {
            let l = self
                .call("granting the status lease", |mut c| async move {
                    c.lease_grant(STATUS_TTL_SECS, None).await
                })?
                .id();
            let lost = Arc::new(AtomicBool::new(false));
            self.rt
                .spawn(keep_alive(self.client.clone(), l, Arc::clone(&lost)));
            self.lease = Some((l, lost));
            l
        };
        let status = HostStatus {
            host: self.layout.host.clone(),
            revision: self.mirror.revision,
            generation: self.position.generation,
            at: unix_now(),
            agent: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let key = self.layout.status(&self.layout.host);
        let value = serde_json::to_vec(&status).map_err(|source| StoreError::Encode {
            path: self.layout.prefix.clone(),
            what: key.clone(),
            source,
        })?;
        let r = self.call("recording this host's status", move |mut c| {
            let key = key.clone();
            let value = value.clone();
            async move {
                c.put(
                    key,
                    value,
                    Some(etcd_client::PutOptions::new().with_lease(lease)),
                )
                .await
            }
        });
        match r {
            Ok(_) => {
                self.reported = Some(status.revision);
                Ok(())
            }
            Err(e) => {
                // The lease may be gone (the store was away longer than
                // its time to live): take a new one next time.
                if let Some((_, lost)) = self.lease.take() {
                    lost.store(true, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }

    /// What every live host has in force, as the watch of `status/` last
    /// saw it (no call: it answers while the store is away).
    pub fn host_status(&self) -> Vec<HostStatus> {
        self.shared
            .hosts
            .lock()
            .map(|h| h.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Makes a new store: writes its schema and identity, if no one did.
    fn create(&mut self) -> Result<(), StoreError> {
        let id = StoreId::random().map_err(|source| StoreError::Create {
            path: self.layout.prefix.clone(),
            source,
        })?;
        let schema = self.layout.key("schema");
        let ops = vec![
            TxnOp::put(schema.clone(), FLEET_SCHEMA.to_string(), None),
            TxnOp::put(self.layout.key("store-id"), id.to_string(), None),
        ];
        self.call("creating the store", move |mut c| {
            let ops = ops.clone();
            let schema = schema.clone();
            async move {
                c.txn(
                    Txn::new()
                        .when(vec![Compare::version(schema, CompareOp::Equal, 0)])
                        .and_then(ops),
                )
                .await
            }
        })?;
        self.reload()
    }

    /// The last snapshot id given out, and the revision it was written at.
    fn snapshot_seq(&self) -> Result<(i64, u64), StoreError> {
        let key = self.layout.other("snapshot-seq");
        let resp = self.call("reading the snapshot sequence", move |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })?;
        let (rev, last) = match resp.kvs().first() {
            None => (0, 0),
            Some(kv) => (
                kv.mod_revision(),
                std::str::from_utf8(kv.value())
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| StoreError::CorruptKey {
                        key: self.layout.other("snapshot-seq"),
                        reason: "not a number".to_owned(),
                    })?,
            ),
        };
        Ok((rev, last))
    }
}

/// Waits for `f` on `rt` from any thread, also one of another runtime.
fn wait<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    f: impl Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
) -> Result<T, etcd_client::Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let r = tokio::time::timeout(ATTEMPT_TIMEOUT + Duration::from_millis(500), f).await;
        let _ = tx.send(r);
    });
    match rx.recv() {
        Ok(Ok(r)) => r,
        Ok(Err(_)) | Err(_) => Err(etcd_client::Error::IoError(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {ATTEMPT_TIMEOUT:?}"),
        ))),
    }
}

/// Whether `e` may go away by asking again: the member asked is down or
/// cut off, or the cluster is electing a leader. Such a failure of a write
/// is ambiguous (it may have been applied): see [`EtcdStore::commit`].
fn transient(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            matches!(
                s.code(),
                Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
            )
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

fn etcd_err(config: &EtcdConfig, what: &str, source: etcd_client::Error) -> StoreError {
    StoreError::Etcd {
        endpoints: config.endpoints.join(","),
        what: what.to_owned(),
        source: Box::new(source),
    }
}

/// A token bucket: up to `burst` at once, one more every `every`.
#[derive(Debug, Clone)]
pub struct Budget {
    burst: u32,
    every: Duration,
    /// When the bucket would be full again (at or before now: it is full).
    full_at: Option<std::time::Instant>,
}

impl Budget {
    pub fn new(burst: u32, every: Duration) -> Self {
        Self {
            burst: burst.max(1),
            every,
            full_at: None,
        }
    }

    /// Takes one if there is one at `now`.
    pub fn take(&mut self, now: std::time::Instant) -> bool {
        let window = self.every * self.burst;
        let full_at = self.full_at.filter(|t| *t > now).unwrap_or(now);
        // Empty once full_at is a whole window away; a hundredth of a
        // period's slack, so that a timer of exactly `every` finds one.
        if full_at.saturating_duration_since(now) + self.every > window + self.every / 100 {
            return false;
        }
        self.full_at = Some(full_at + self.every);
        true
    }
}

/// Forwards the watch of `prefix` from revision `from`; returns why it
/// stopped.
async fn follow(
    mut client: Client,
    prefix: String,
    from: i64,
    tx: &mpsc::UnboundedSender<Feed>,
) -> String {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(from)
        .with_progress_notify();
    let mut stream = match client.watch(prefix, Some(options)).await {
        Ok(s) => s,
        Err(e) => return format!("starting the watch: {e}"),
    };
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return "the watch ended".to_owned(),
            Err(e) => return format!("the watch failed: {e}"),
        };
        if msg.compact_revision() > 0 {
            return format!(
                "revision {from} was compacted (the store keeps from {})",
                msg.compact_revision()
            );
        }
        if msg.canceled() {
            return format!("the watch was cancelled: {}", msg.cancel_reason());
        }
        let changes: Vec<_> = msg
            .events()
            .iter()
            .filter_map(|e| {
                let kv = e.kv()?;
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let value = (e.event_type() == EventType::Put).then(|| kv.value().to_vec());
                Some((kv.mod_revision(), key, value))
            })
            .collect();
        if !changes.is_empty() && tx.send(Feed::Changes(changes)).is_err() {
            return "nobody follows the feed".to_owned();
        }
    }
}

/// Keeps `shared.hosts` what `status/` holds: reads it, then follows it;
/// reads it again a second after the watch broke (marking the store
/// unreachable meanwhile).
async fn watch_hosts(mut client: Client, prefix: String, shared: Arc<Shared>) {
    let parse = |v: &[u8]| serde_json::from_slice::<HostStatus>(v).ok();
    // A member going away breaks the watch; another may answer at once, so
    // the store counts as away only once none has for a while.
    let mut failing_since: Option<std::time::Instant> = None;
    loop {
        let got = client
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await;
        let Ok(resp) = got else {
            let since = *failing_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= AWAY_AFTER {
                shared.set_reachable(false);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        failing_since = None;
        shared.set_reachable(true);
        let from = resp
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision)
            + 1;
        if let Ok(mut h) = shared.hosts.lock() {
            *h = resp
                .kvs()
                .iter()
                .filter_map(|kv| parse(kv.value()))
                .map(|s| (s.host.clone(), s))
                .collect();
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from)
            .with_progress_notify();
        if let Ok(mut stream) = client.watch(prefix.clone(), Some(options)).await {
            while let Ok(Some(msg)) = stream.message().await {
                if msg.canceled() {
                    break;
                }
                let Ok(mut h) = shared.hosts.lock() else {
                    break;
                };
                for e in msg.events() {
                    let Some(kv) = e.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let host = key.strip_prefix(&prefix).unwrap_or(&key).to_owned();
                    match (e.event_type(), parse(kv.value())) {
                        (EventType::Put, Some(s)) => h.insert(host, s),
                        _ => h.remove(&host),
                    };
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn keep_alive(mut client: Client, lease: i64, lost: Arc<AtomicBool>) {
    let period = Duration::from_secs((STATUS_TTL_SECS / 3).max(1).unsigned_abs());
    if let Ok((mut keeper, mut stream)) = client.lease_keep_alive(lease).await {
        while !lost.load(Ordering::Relaxed) && keeper.keep_alive().await.is_ok() {
            match stream.message().await {
                Ok(Some(r)) if r.ttl() > 0 => tokio::time::sleep(period).await,
                _ => break,
            }
        }
    }
    lost.store(true, Ordering::Relaxed);
}

impl Store for EtcdStore {
    fn load(&mut self) -> Result<Option<State>, StoreError> {
        match self.reload() {
            Ok(()) => {}
            // Away, with a policy already in hand (the copy this agent
            // started from, or what it followed): that one, as it stands.
            Err(e)
                if self.shared.unreachable.load(Ordering::Relaxed) && self.mirror.revision > 0 =>
            {
                log::warn!(
                    "fleet store: {e}; going on with the policy at revision {}",
                    self.mirror.revision
                );
            }
            Err(e) => return Err(e),
        }
        self.settled(&BTreeSet::new())
    }

    fn load_holding(&mut self, groups: &BTreeSet<GroupId>) -> Result<Option<State>, StoreError> {
        self.reload_within(CALL_TIMEOUT, groups)?;
        self.settled(groups)
    }

    fn commit(&mut self, state: &State, snapshots: &[Snapshot]) -> Result<(), StoreError> {
        validate_state(state).map_err(|source| StoreError::Refused {
            path: self.layout.prefix.clone(),
            source: Box::new(source),
        })?;
        if !self.mirror.kvs.contains_key(&self.layout.key("schema")) {
            self.create()?;
        }
        let want = self.layout.encode(state)?;
        let (mut ops, mut writes) = self.diff(&want, state);
        let generation = self.position.generation + 1;
        let gen_key = self.layout.generation();
        ops.push(TxnOp::put(gen_key.clone(), generation.to_string(), None));
        // Which commit this is: a commit whose answer was lost (a member
        // went down meanwhile) is tried again, finds the generation moved,
        // and recognises its own write here instead of calling it a conflict.
        let token = format!(
            "{}:{generation}:{}",
            self.layout.host,
            StoreId::random().map_or_else(|_| unix_now().to_string(), |id| id.to_string())
        );
        let token_key = self.layout.key("last-commit");
        ops.push(TxnOp::put(token_key.clone(), token.clone(), None));
        writes.push((token_key.clone(), Some(token.clone().into_bytes())));
        writes.push((gen_key.clone(), Some(generation.to_string().into_bytes())));
        // The generation key as this host last read it: if anyone committed
        // since, it moved, and this commit holds nothing.
        let mut when = vec![Compare::mod_revision(
            gen_key,
            CompareOp::Equal,
            self.mirror.gen_rev,
        )];
        if !snapshots.is_empty() {
            self.snapshot_ops(snapshots, &mut when, &mut ops)?;
        }
        let txn = Txn::new().when(when).and_then(ops);
        let resp = self.call("committing the change", move |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })?;
        let revision = self.landed(&resp, token_key, &token)?;
        for (k, v) in writes {
            match v {
                Some(v) => self.mirror.kvs.insert(k, v),
                None => self.mirror.kvs.remove(&k),
            };
        }
        self.mirror.census = Arc::clone(&state.census);
        self.mirror.revision = revision;
        self.mirror.gen_rev = revision;
        self.position.generation = generation;
        Ok(())
    }

    fn has_snapshot(&mut self, group: &GroupId, window_start: u64) -> Result<bool, StoreError> {
        let window = self
            .layout
            .other(&format!("snapshot-windows/{group}/{window_start}"));
        self.has_window(&window)
    }

    fn snapshots(&mut self, group: Option<&GroupId>) -> Result<Vec<SnapshotInfo>, StoreError> {
        let mut out: Vec<SnapshotInfo> = self
            .all_snapshots()?
            .into_iter()
            .filter(|s| group.is_none_or(|g| &s.group == g))
            .map(|s| s.info())
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.id));
        Ok(out)
    }

    fn snapshot(&mut self, id: u64) -> Result<Option<Snapshot>, StoreError> {
        let key = self.layout.other(&format!("snapshots/{id:020}"));
        let resp = self.call("reading a snapshot", move |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })?;
        resp.kvs()
            .first()
            .map(|kv| {
                serde_json::from_slice(kv.value()).map_err(|e| StoreError::CorruptKey {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    fn prune_snapshots(&mut self, before: u64) -> Result<usize, StoreError> {
        let old: Vec<Snapshot> = self
            .all_snapshots()?
            .into_iter()
            .filter(|s| s.taken_at < before)
            .collect();
        for s in &old {
            let ops = vec![
                TxnOp::delete(self.layout.other(&format!("snapshots/{:020}", s.id)), None),
                TxnOp::delete(
                    self.layout
                        .other(&format!("snapshot-windows/{}/{}", s.group, s.window_start)),
                    None,
                ),
            ];
            self.call("deleting an old snapshot", move |mut c| {
                let ops = ops.clone();
                async move { c.txn(Txn::new().and_then(ops)).await }
            })?;
        }
        Ok(old.len())
    }

    fn position(&self) -> StorePosition {
        self.position
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn follow(&mut self) -> Option<mpsc::UnboundedReceiver<Feed>> {
        Some(self.take_feed())
    }

    fn catch_up(&mut self, feed: Feed) -> Result<Option<State>, StoreError> {
        EtcdStore::catch_up(self, feed)
    }

    fn report_in_force(&mut self) -> Result<(), StoreError> {
        self.report_status()
    }

    fn hosts(&self) -> Vec<HostStatus> {
        self.host_status()
    }

    fn keep_copy(&mut self) {
        EtcdStore::keep_copy(self);
    }

    fn is_current(&mut self) -> bool {
        let key = self.layout.generation();
        let got = self.call_within(ATTEMPT_TIMEOUT, "checking the generation", move |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        });
        match got {
            Ok(resp) => {
                resp.kvs()
                    .first()
                    .map_or(0, etcd_client::KeyValue::mod_revision)
                    == self.mirror.gen_rev
            }
            Err(_) => true,
        }
    }

    fn probe(&mut self) -> bool {
        let key = self.layout.generation();
        self.call_within(ATTEMPT_TIMEOUT, "probing the store", move |mut c| {
            let key = key.clone();
            async move { c.get(key, Some(GetOptions::new().with_count_only())).await }
        })
        .is_ok()
    }

    fn depart(&mut self) {
        EtcdStore::keep_copy(self);
        if let Some((lease, lost)) = self.lease.take() {
            lost.store(true, Ordering::Relaxed);
            let r = self.call_within(
                ATTEMPT_TIMEOUT,
                "revoking the status lease",
                move |mut c| async move { c.lease_revoke(lease).await },
            );
            if let Err(e) = r {
                log::warn!("{e}: other hosts count this one as live until its lease runs out");
            }
        }
    }

    fn health(&self) -> StoreHealth {
        StoreHealth {
            reachable: !self.shared.unreachable.load(Ordering::Relaxed),
            since: self.shared.since.load(Ordering::Relaxed),
            revision: self.mirror.revision,
            host: Some(self.layout.host.clone()),
        }
    }
}

impl EtcdStore {
    fn has_window(&self, key: &str) -> Result<bool, StoreError> {
        let key = key.to_owned();
        let resp = self.call("looking up a snapshot", move |mut c| {
            let key = key.clone();
            async move { c.get(key, Some(GetOptions::new().with_count_only())).await }
        })?;
        Ok(resp.count() > 0)
    }

    fn all_snapshots(&self) -> Result<Vec<Snapshot>, StoreError> {
        let prefix = self.layout.other("snapshots/");
        let resp = self.call("reading the snapshots", move |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })?;
        resp.kvs()
            .iter()
            .map(|kv| {
                serde_json::from_slice(kv.value()).map_err(|e| StoreError::CorruptKey {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }
}

impl EtcdStore {
    /// The writes that make the policy keys hold `want` (`state`, encoded)
    /// and the NICs `state` counts: puts of what changed, deletes of what
    /// went (the store's own keys stay); as transaction operations and as
    /// what they leave in the mirror. A host none of whose NICs is left
    /// (`host remove`) goes with one delete of its prefix.
    fn diff(&self, want: &BTreeMap<String, Vec<u8>>, state: &State) -> (Vec<TxnOp>, Vec<Write>) {
        let policy = self.layout.policy();
        let keep = |k: &str| {
            ["schema", "store-id", "generation", "last-commit"]
                .iter()
                .any(|n| k == self.layout.key(n))
        };
        let mut ops = Vec::new();
        let mut writes = Vec::new();
        for (k, v) in want {
            if self.mirror.kvs.get(k) != Some(v) {
                ops.push(TxnOp::put(k.clone(), v.clone(), None));
                writes.push((k.clone(), Some(v.clone())));
            }
        }
        // Hosts with counted NICs in the mirror and none left at all.
        let census = &state.census;
        let same = Arc::ptr_eq(&self.mirror.census, census);
        let gone: BTreeSet<&str> = self
            .mirror
            .census
            .hosts()
            .map(|(h, _)| h)
            .filter(|h| {
                !same && census.nics_of(h).next().is_none() && !state.remote.contains_key(*h)
            })
            .collect();
        for h in &gone {
            let prefix = self.layout.key(&format!("hosts/{h}/"));
            ops.push(TxnOp::delete(
                prefix,
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            ));
        }
        let under_gone = |k: &str| {
            self.layout
                .remote_nic(k)
                .is_some_and(|(h, _)| gone.contains(h))
        };
        for k in self.mirror.kvs.keys() {
            if k.starts_with(&policy) && !keep(k) && !want.contains_key(k) {
                if !under_gone(k) {
                    ops.push(TxnOp::delete(k.clone(), None));
                }
                writes.push((k.clone(), None));
            }
        }
        // Counted NICs of hosts that stay, no longer counted.
        let stay = self
            .mirror
            .census
            .hosts()
            .filter(|(h, _)| !same && !gone.contains(h));
        for (h, _) in stay {
            for (name, _) in self.mirror.census.nics_of(h) {
                if !census.contains(h, name) {
                    ops.push(TxnOp::delete(self.layout.nic_key(h, name), None));
                }
            }
        }
        (ops, writes)
    }

    /// Adds to a commit the snapshots it takes, with fresh ids: each window
    /// of a group keeps its first snapshot.
    fn snapshot_ops(
        &self,
        snapshots: &[Snapshot],
        when: &mut Vec<Compare>,
        ops: &mut Vec<TxnOp>,
    ) -> Result<(), StoreError> {
        let (seq_rev, last) = self.snapshot_seq()?;
        let seq_key = self.layout.other("snapshot-seq");
        when.push(Compare::mod_revision(
            seq_key.clone(),
            CompareOp::Equal,
            seq_rev,
        ));
        let mut next = last;
        for s in snapshots {
            let window = self
                .layout
                .other(&format!("snapshot-windows/{}/{}", s.group, s.window_start));
            if self.has_window(&window)? {
                continue;
            }
            next += 1;
            let mut s = s.clone();
            s.id = next;
            let value = serde_json::to_vec(&s).map_err(|source| StoreError::Encode {
                path: self.layout.prefix.clone(),
                what: format!("snapshot {next}"),
                source,
            })?;
            ops.push(TxnOp::put(
                self.layout.other(&format!("snapshots/{next:020}")),
                value,
                None,
            ));
            ops.push(TxnOp::put(window, next.to_string(), None));
        }
        ops.push(TxnOp::put(seq_key, next.to_string(), None));
        Ok(())
    }

    /// The revision a commit landed at: its own, or, when it was tried
    /// again after an answer got lost, that of its first try (its token is
    /// in the store); a conflict otherwise.
    fn landed(
        &self,
        resp: &etcd_client::TxnResponse,
        token_key: String,
        token: &str,
    ) -> Result<i64, StoreError> {
        if resp.succeeded() {
            return Ok(resp
                .header()
                .map_or(self.mirror.revision, etcd_client::ResponseHeader::revision));
        }
        let mine = self.call("checking the commit", move |mut c| {
            let key = token_key.clone();
            async move { c.get(key, None).await }
        })?;
        match mine.kvs().first() {
            Some(kv) if kv.value() == token.as_bytes() => Ok(kv.mod_revision()),
            _ => Err(StoreError::Conflict {
                generation: self.position.generation,
            }),
        }
    }
}

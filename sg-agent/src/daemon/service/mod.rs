//! The daemon's state machine: the policy, its store and the data plane, and
//! the change every handler goes through. The handlers live one family of
//! requests per file: groups, rules, NICs, lists, the whole state
//! (settings, apply, snapshots), observing (verify, status, stats, metrics)
//! and trace; `input` reads request texts into model values.
//!
//! A change runs on a copy of the state; the copy is put in force on the data
//! plane, then committed to the store, and only then becomes the state and is
//! acknowledged. If the data plane refuses it, nothing changed; if the store
//! refuses it, the data plane is put back. So an acknowledged change is both
//! in force and durable, and a crash at any point leaves the store holding
//! either the old or the new state, never a mix (the store's transaction).

mod groups;
mod hosts;
mod input;
mod lists;
mod nics;
mod observe;
mod rules;
mod state;
mod trace;

use std::{collections::BTreeMap, path::PathBuf, time::Instant};

use serde_json::Value;

use super::reads;
use crate::{
    api::{ApiError, Request},
    clock::unix_now,
    dataplane::session_table::SessionTable,
    reconcile::Reconciler,
    store::Store,
};
use sg_policy::snapshot;
use sg_policy::{PolicyError, State};

pub use input::rule_spec;

/// What the daemon was started with, for `status`.
#[derive(Debug, Clone)]
pub struct Info {
    pub socket: PathBuf,
    /// The SQLite path, or the etcd endpoints and this host's name.
    pub store: String,
    pub pins: PathBuf,
}

pub struct Service {
    state: State,
    store: Box<dyn Store>,
    reconciler: Reconciler,
    info: Info,
    started: Instant,
    checks: SelfChecks,
    /// What the reads answer from.
    views: tokio::sync::watch::Sender<std::sync::Arc<reads::View>>,
    /// The fleet store's health and hosts as last published.
    fleet_seen: Option<(crate::store::StoreHealth, Vec<crate::store::HostStatus>)>,
    /// The session table, opened apart from the data plane so connections
    /// can list and flush on their own threads.
    sessions: std::sync::Arc<std::sync::Mutex<SessionTable>>,
}

/// What the periodic self-check (and `verify`) found so far.
#[derive(Debug, Default, Clone)]
pub struct SelfChecks {
    /// Checks run.
    pub runs: u64,
    /// Differences found, over all runs.
    pub drift_total: u64,
    /// Differences the last run found.
    pub last_drift: Vec<crate::dataplane::Drift>,
    /// Checks that could not read the maps.
    pub errors: u64,
    /// When the last one ran (unix seconds).
    pub last_at: u64,
}

type Answer = Result<Value, ApiError>;

/// How many times a change is tried when other hosts keep committing first.
const CONFLICT_ATTEMPTS: u32 = 16;

/// Why a commit did not land.
enum Failed {
    /// Another host committed first; the state is now the newer one.
    Conflict(ApiError),
    /// The change names groups whose members on other hosts the state only
    /// counted: they were read, the state is now one that holds them.
    Reread(ApiError),
    Other(ApiError),
}

fn err(e: impl Into<ApiError>) -> ApiError {
    e.into()
}

/// A policy error of the element `at` of a list (`rules[2]`): its field
/// and its message name the element.
fn within(at: &str, e: PolicyError) -> ApiError {
    let mut out = ApiError::from(e);
    out.field = Some(
        out.field
            .map_or_else(|| at.to_owned(), |f| format!("{at}.{f}")),
    );
    out.message = format!("{at}: {}", out.message);
    out
}

/// The store (or the data plane) could not take it: 503, with the reason.
fn unavailable(message: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(message.to_string())
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl Service {
    /// A service over `state` (as loaded from `store`), enforcing through
    /// `reconciler`. The caller applies the state once before serving.
    pub fn new(
        state: State,
        store: Box<dyn Store>,
        reconciler: Reconciler,
        info: Info,
        sessions: SessionTable,
    ) -> Self {
        let mut service = Self {
            state,
            store,
            reconciler,
            info,
            started: Instant::now(),
            checks: SelfChecks::default(),
            fleet_seen: None,
            sessions: std::sync::Arc::new(std::sync::Mutex::new(sessions)),
            views: tokio::sync::watch::Sender::new(std::sync::Arc::new(reads::View::new(
                State::new(),
                BTreeMap::new(),
                BTreeMap::new(),
                crate::api::reply::Status::default(),
                Instant::now(),
            ))),
        };
        service.publish();
        service
    }

    /// Reads every map back, compares it with the policy, and repairs what
    /// differs (`repair`), or only reports it. Counted for `status` and the
    /// metrics.
    pub fn self_check(&mut self, repair: bool) -> Result<Vec<crate::dataplane::Drift>, ApiError> {
        let found = if repair {
            self.reconciler.verify_and_repair(&self.state)
        } else {
            self.reconciler.verify(&self.state)
        };
        self.checks.runs += 1;
        self.checks.last_at = unix_now();
        let found = found.inspect(|_| self.publish());
        match found {
            Ok(drift) => {
                self.checks.drift_total += drift.len() as u64;
                self.checks.last_drift.clone_from(&drift);
                Ok(drift)
            }
            Err(e) => {
                self.checks.errors += 1;
                log::error!("self-check: reading the maps back: {e}");
                Err(unavailable(format!("verify: reading the maps back: {e}")))
            }
        }
    }

    /// What the self-checks found so far.
    pub fn checks(&self) -> &SelfChecks {
        &self.checks
    }

    /// What the daemon was started with.
    pub fn info(&self) -> &Info {
        &self.info
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn reconciler(&mut self) -> &mut Reconciler {
        &mut self.reconciler
    }

    /// Puts the state in force again: at start, and when interfaces come
    /// and go. Returns the report for the log.
    pub fn reconcile(&mut self) -> Result<crate::reconcile::ReconcileReport, String> {
        let r = self
            .reconciler
            .reconcile(&self.state)
            .map_err(|e| e.to_string());
        self.publish();
        r
    }

    /// Runs `f` on a copy of the state and makes the result the state: in
    /// force, then durable, then acknowledged (see the module doc). If
    /// another host committed meanwhile (a fleet store), the state is
    /// brought up to date and `f` runs again on it, so the change is
    /// validated against the fleet as it is when it lands.
    fn change<T>(
        &mut self,
        mut f: impl FnMut(&mut State) -> Result<T, PolicyError>,
    ) -> Result<T, ApiError> {
        let mut attempt = 1;
        loop {
            let mut next = self.state.clone();
            let out = match f(&mut next) {
                Ok(out) => out,
                // Refused on this host's copy of the fleet's policy: if
                // another host committed since (the group this change names
                // was just made there), the change is judged again on the
                // newest, as a single host would judge it.
                Err(e) if attempt < CONFLICT_ATTEMPTS && !self.store.is_current() => {
                    log::info!(
                        "change: {e} on a policy another host changed since; judging it again on the newest"
                    );
                    self.refresh()?;
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(err(e)),
            };
            match self.commit_or_conflict(next) {
                Ok(()) => return Ok(out),
                // Made again at once on the state that holds those members.
                Err(Failed::Reread(e)) if attempt < CONFLICT_ATTEMPTS => {
                    log::info!("change: {e}");
                    attempt += 1;
                }
                Err(Failed::Conflict(e)) if attempt < CONFLICT_ATTEMPTS => {
                    log::info!("change: {e}; trying again on the fleet's newer policy");
                    // Writers that keep colliding spread out a little: a
                    // random wait below a bound that doubles, up to 16 ms
                    // (the host that just won needs no reload, so a long
                    // wait here would only hand it the next round too).
                    let bound = 1u64 << attempt.min(4);
                    let nanos = u64::from(
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.subsec_nanos()),
                    );
                    std::thread::sleep(std::time::Duration::from_millis(nanos % bound));
                    attempt += 1;
                }
                Err(Failed::Conflict(e) | Failed::Reread(e) | Failed::Other(e)) => return Err(e),
            }
        }
    }

    /// Makes `next` the state (see [`Service::commit_in_force`]) and
    /// publishes the outcome for the reads, whichever it was: a refused
    /// change may still leave NICs degraded.
    fn commit(&mut self, next: State) -> Result<(), ApiError> {
        self.commit_or_conflict(next)
            .map_err(|(Failed::Conflict(e) | Failed::Reread(e) | Failed::Other(e))| e)
    }

    fn commit_or_conflict(&mut self, next: State) -> Result<(), Failed> {
        if next == self.state {
            return Ok(());
        }
        let r = self.commit_in_force(next);
        self.publish();
        r
    }

    /// Takes the store's state (a fleet's, changed by other hosts) as the
    /// state and puts it in force.
    fn take_stored(&mut self, state: State) {
        if state != self.state {
            if let Err(e) = self.reconciler.reconcile(&state) {
                // As at start: the maps keep what was in force where it
                // could not be written; `status` names those NICs.
                log::error!("putting the fleet's policy in force: {e}");
            }
            self.state = state;
        }
        self.record_in_kernel();
        self.report_in_force();
        self.publish();
    }

    /// Brings the state up to the store's (after a conflict).
    fn refresh(&mut self) -> Result<(), ApiError> {
        match self.store.load() {
            Ok(Some(state)) => {
                self.take_stored(state);
                Ok(())
            }
            Ok(None) => Err(unavailable(
                "store: the fleet's policy is gone from the store",
            )),
            Err(e) => Err(unavailable(format!("store: {e}"))),
        }
    }

    /// Folds in what other hosts changed (a batch of the store's feed) and
    /// puts the result in force. Returns whether the feed must be taken
    /// again (it broke, and the store reloaded).
    pub fn follow(&mut self, feed: crate::store::Feed) -> bool {
        let lost = matches!(feed, crate::store::Feed::Lost(_));
        match self.store.catch_up(feed) {
            Ok(Some(state)) => self.take_stored(state),
            Ok(None) => {}
            Err(e) => log::error!("following the fleet store: {e}"),
        }
        lost
    }

    /// Whether the store is a fleet's, which other hosts write too.
    pub fn is_fleet(&self) -> bool {
        self.store.is_shared()
    }

    /// A feed of other hosts' changes, if the store has any.
    pub fn feed(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<crate::store::Feed>> {
        self.store.follow()
    }

    /// Records in the store what this host has in force.
    pub fn report_in_force(&mut self) {
        if let Err(e) = self.store.report_in_force() {
            log::warn!("recording this host's policy in force in the store: {e}");
        }
    }

    /// The agent stops: a fleet store is told this host leaves.
    pub fn depart(&mut self) {
        self.store.depart();
    }

    /// The periodic look at a fleet store: records what is in force if it
    /// is not recorded yet, and publishes the status again when the store's
    /// health or the hosts changed.
    pub fn tend_fleet(&mut self) {
        if self.store.health().reachable {
            // An empty batch: a reading of the whole policy that failed
            // while following is tried again even if the feed stays quiet.
            self.follow(crate::store::Feed::Changes(Vec::new()));
            self.report_in_force();
        }
        self.store.keep_copy();
        let now = (self.store.health(), self.store.hosts());
        if self.fleet_seen.as_ref() != Some(&now) {
            self.fleet_seen = Some(now);
            self.publish();
        }
    }

    /// In force, then durable, then the state.
    fn commit_in_force(&mut self, next: State) -> Result<(), Failed> {
        // Away as last heard: asked once more (it may be back, or a member
        // may have taken over from one that went) before refusing.
        let health = self.store.health();
        if !health.reachable && !self.store.probe() {
            // Refused before anything is put in force: the policy in force
            // stays the store's last, which every other host enforces too.
            return Err(Failed::Other(unavailable(format!(
                "store: the fleet store {} is unreachable (since {}): changes are refused until it answers again; \
                 the policy in force stays as of revision {}, and reads answer that (marked stale); nothing changed",
                self.info.store, health.since, health.revision
            ))));
        }
        // A change that names groups whose members on other hosts the state
        // only counts (`sg_policy::census`) would compile without them:
        // the store reads them whole and the state is brought up to it,
        // nothing else done (`change` makes the change again on it; `apply`
        // and `restore` are refused once, and succeed when tried again).
        let unheld = next.census.counted_among(&next.named_groups());
        if !unheld.is_empty() {
            log::info!("change: names {unheld:?}; reading their members on other hosts");
            return Err(match self.store.load_holding(&unheld) {
                Ok(Some(state)) => {
                    self.take_stored(state);
                    Failed::Reread(ApiError::new(
                        crate::api::ErrorKind::Conflict,
                        None,
                        format!(
                            "store: the change names {unheld:?}, whose members on other hosts were read only now; nothing changed: try again"
                        ),
                    ))
                }
                Ok(None) => Failed::Other(unavailable(
                    "store: the fleet's policy is gone from the store",
                )),
                Err(e) => Failed::Other(unavailable(format!(
                    "store: {e}: the change names {unheld:?}, whose members on other hosts could not be read; nothing changed"
                ))),
            });
        }
        // Every producer of `next` validated it (the operations, apply,
        // restore), and the store checks it again before it writes.
        let now = unix_now();
        let started = Instant::now();
        let store = &mut self.store;
        let snaps = snapshot::due(&self.state, &next, now, |g, w| store.has_snapshot(g, w))
            .map_err(|e| Failed::Other(unavailable(format!("store: {e}; nothing changed"))))?;
        let snapshotted = started.elapsed();
        if let Err(e) = self.reconciler.reconcile(&next) {
            return Err(Failed::Other(unavailable(format!(
                "{e}; {}",
                self.put_back("a refused change")
            ))));
        }
        let in_force = started.elapsed();
        crate::dataplane::faults::point("change.in-force");
        if let Err(e) = self.store.commit(&next, &snaps) {
            let conflict = matches!(e, crate::store::StoreError::Conflict { .. });
            let text = format!("store: {e}; {}", self.put_back("a failed commit"));
            if conflict {
                // Retried on the newer state if it can be read.
                return Err(match self.refresh() {
                    Ok(()) => {
                        Failed::Conflict(ApiError::new(crate::api::ErrorKind::Conflict, None, text))
                    }
                    Err(why) => Failed::Other(unavailable(format!("{text}; {why}"))),
                });
            }
            return Err(Failed::Other(unavailable(text)));
        }
        log::debug!(
            "change: snapshots {snapshotted:?}, in force {in_force:?}, durable {:?}",
            started.elapsed()
        );
        crate::dataplane::faults::point("change.durable");
        self.state = next;
        self.record_in_kernel();
        self.report_in_force();
        self.prune_snapshots();
        Ok(())
    }

    /// Puts the state before a failed change back in force, and says how
    /// that went (the tail of the change's error).
    fn put_back(&mut self, after: &str) -> String {
        match self.reconciler.reconcile(&self.state) {
            Ok(_) => "nothing changed".to_owned(),
            Err(back) => {
                log::error!("restoring the data plane after {after}: {back}");
                format!(
                    "putting the state before back failed too ({back}): those NICs are degraded, see `sg-agent status`"
                )
            }
        }
    }

    /// Records in the kernel which store's state is in force and how far
    /// into it (read by the next agent before it starts: see
    /// `daemon::store_matches`).
    pub fn record_in_kernel(&mut self) {
        let position = self.store.position();
        let record = sg_common::agent::AgentRecord {
            generation: position.generation,
            store_id: position.id.0,
            netns_cookie: crate::dataplane::netns_cookie().unwrap_or(0),
        };
        if let Err(e) = self.reconciler.dataplane().maps_mut().set_record(&record) {
            log::error!("recording the store's generation in the kernel: {e}");
        }
    }

    /// Removes the snapshots older than the retention period: after every
    /// change, and hourly while nothing changes.
    pub fn prune_snapshots(&mut self) {
        let days = self.state.settings.snapshot_retention_days;
        match self
            .store
            .prune_snapshots(snapshot::retention_cutoff(unix_now(), days))
        {
            Ok(0) => {}
            Ok(n) => log::info!("removed {n} snapshots past their retention of {days} days"),
            Err(e) => log::warn!("pruning snapshots: {e}"),
        }
    }

    /// Answers one request. What a change moves is published by
    /// [`Service::commit`] for the reads (`reads.rs`), which connections
    /// answer themselves.
    pub fn handle(&mut self, request: Request) -> Answer {
        match request {
            Request::Group(r) => self.group_request(r),
            Request::Rule(r) => self.rule_request(r),
            Request::Nic(r) => self.nic_request(r),
            Request::PrefixList(r) => self.prefix_list_request(r),
            Request::PortList(r) => self.port_list_request(r),
            Request::Host(r) => self.host_request(r),
            Request::State(r) => self.state_request(r),
            Request::Snapshot(r) => self.snapshot_request(r),
            Request::Observe(r) => self.observe_request(r),
            Request::Session(r) => {
                let table = std::sync::Arc::clone(&self.sessions);
                reads::sessions(&self.views.borrow(), &table, &r)
            }
        }
    }

    /// Answers a read of the published view (the requests connections
    /// answer themselves, when one reaches the owner directly).
    fn read(&self, request: &Request) -> Answer {
        let view = std::sync::Arc::clone(&self.views.borrow());
        reads::answer(&view, request).unwrap_or_else(|| {
            Err(ApiError::internal(format!(
                "{} is not a read of the published view",
                request.op()
            )))
        })
    }

    /// The session table, for connections to list and flush with.
    pub fn session_table(&self) -> std::sync::Arc<std::sync::Mutex<SessionTable>> {
        std::sync::Arc::clone(&self.sessions)
    }

    /// A receiver of the views this service publishes.
    pub fn views(&self) -> tokio::sync::watch::Receiver<std::sync::Arc<reads::View>> {
        self.views.subscribe()
    }

    /// Publishes the state and status as they are now for the reads.
    pub fn publish(&mut self) {
        let names: Vec<String> = self.state.nics.keys().cloned().collect();
        let status = self.status();
        // `nic show` of each NIC is its part of the status, looked up once.
        let nics = status
            .nics
            .iter()
            .map(|n| (n.binding.name.clone(), to_value(n)))
            .collect();
        let dp = self.reconciler.dataplane();
        let ids = names
            .iter()
            .filter_map(|n| dp.nic_id(n).map(|id| (n.clone(), id)))
            .collect();
        let view = reads::View::new(self.state.clone(), nics, ids, status, self.started);
        self.views.send_replace(std::sync::Arc::new(view));
    }
}

//! The daemon's state machine: the policy, its store and the data plane, and
//! one handler per API request.
//!
//! A change runs on a copy of the state; the copy is put in force on the data
//! plane, then committed to the store, and only then becomes the state and is
//! acknowledged. If the data plane refuses it, nothing changed; if the store
//! refuses it, the data plane is put back. So an acknowledged change is both
//! in force and durable, and a crash at any point leaves the store holding
//! either the old or the new state, never a mix (the store's transaction).

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, time::Instant};

use serde_json::{Value, json};

use super::reads;
use crate::{
    api::{Request, RuleText, TraceText},
    clock::unix_now,
    dataplane::{Counters, sessions::SessionTable},
    enforce::Enforcer,
    store::Store,
};
use sg_policy::compile::Rank;
use sg_policy::snapshot;
use sg_policy::{
    self, BindingMode, Cidr, CloneOptions, Direction, Family, GroupChange, GroupId, GroupSpec,
    GroupType, InnerPolicy, NicBinding, Packet, PolicyError, PortListEntry, PortListId,
    PortListSpec, PortRange, PrefixListEntry, PrefixListId, PrefixListSpec, Protocol, RuleId,
    RuleSpec, State, Template,
};

/// What the daemon was started with, for `status`.
#[derive(Debug, Clone)]
pub struct Info {
    pub socket: PathBuf,
    pub store: PathBuf,
    pub pins: PathBuf,
}

pub struct Service {
    state: State,
    store: Box<dyn Store>,
    enforcer: Enforcer,
    info: Info,
    started: Instant,
    checks: SelfChecks,
    /// What the reads answer from.
    views: tokio::sync::watch::Sender<std::sync::Arc<reads::View>>,
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

type Answer = Result<Value, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn group_id(field: &str, text: &str) -> Result<GroupId, PolicyError> {
    GroupId::parse(field, text)
}

/// `VALUE` or `VALUE description…`.
fn split_entry(text: &str) -> (&str, String) {
    let t = text.trim();
    match t.split_once(char::is_whitespace) {
        Some((v, d)) => (v, d.trim().to_owned()),
        None => (t, String::new()),
    }
}

fn prefix_entries(entries: &[String]) -> Result<Vec<PrefixListEntry>, PolicyError> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let (v, description) = split_entry(e);
            Ok(PrefixListEntry {
                cidr: Cidr::parse(&format!("prefix_list.entries[{i}]"), v)?,
                description,
            })
        })
        .collect()
}

fn port_entries(entries: &[String]) -> Result<Vec<PortListEntry>, PolicyError> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let (v, description) = split_entry(e);
            Ok(PortListEntry {
                range: PortRange::parse(&format!("port_list.entries[{i}]"), v)?,
                description,
            })
        })
        .collect()
}

/// One IP address, or an error naming `field`.
fn ip(field: &str, text: &str) -> Result<IpAddr, PolicyError> {
    text.trim()
        .parse()
        .map_err(|_| PolicyError::invalid(field, text, "not an IP address"))
}

fn addresses(field: &str, list: &[String]) -> Result<Vec<IpAddr>, PolicyError> {
    list.iter()
        .enumerate()
        .map(|(i, a)| NicBinding::parse_address(&format!("{field}[{i}]"), a))
        .collect()
}

fn cidrs(field: &str, list: &[String]) -> Result<Vec<Cidr>, PolicyError> {
    list.iter()
        .enumerate()
        .map(|(i, a)| Cidr::parse(&format!("{field}[{i}]"), a))
        .collect()
}

fn group_ids(field: &str, list: &[String]) -> Result<Vec<GroupId>, PolicyError> {
    list.iter()
        .enumerate()
        .map(|(i, g)| group_id(&format!("{field}[{i}]"), g))
        .collect()
}

/// A rule as typed, parsed by the policy's own parsers.
pub fn rule_spec(t: &RuleText) -> Result<RuleSpec, PolicyError> {
    let mut spec = RuleSpec::from_text(
        &t.direction,
        t.policy.as_deref().unwrap_or("Accept"),
        t.priority.as_deref().unwrap_or("1"),
        &t.protocol,
        t.port_range.as_deref().unwrap_or("-1/-1"),
        &t.peer,
    )?;
    if let Some(s) = &t.source_port_range {
        spec.source_ports = Some(PortRange::parse("rule.source_port_range", s)?);
    }
    if let Some(l) = &t.local {
        spec.local = Some(Cidr::parse("rule.local", l)?);
    }
    if let Some(d) = &t.description {
        spec.description.clone_from(d);
    }
    Ok(spec)
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

const DIRS: [&str; 2] = ["ingress", "egress"];

impl Service {
    /// A service over `state` (as loaded from `store`), enforcing through
    /// `enforcer`. The caller applies the state once before serving.
    pub fn new(
        state: State,
        store: Box<dyn Store>,
        enforcer: Enforcer,
        info: Info,
        sessions: SessionTable,
    ) -> Self {
        let mut service = Self {
            state,
            store,
            enforcer,
            info,
            started: Instant::now(),
            checks: SelfChecks::default(),
            sessions: std::sync::Arc::new(std::sync::Mutex::new(sessions)),
            views: tokio::sync::watch::Sender::new(std::sync::Arc::new(reads::View::new(
                State::new(),
                BTreeMap::new(),
                BTreeMap::new(),
                Value::Null,
                Instant::now(),
            ))),
        };
        service.publish();
        service
    }

    /// Reads every map back, compares it with the policy, and repairs what
    /// differs (`repair`), or only reports it. Counted for `status` and the
    /// metrics.
    pub fn self_check(&mut self, repair: bool) -> Result<Vec<crate::dataplane::Drift>, String> {
        let found = if repair {
            self.enforcer.verify_and_repair(&self.state)
        } else {
            self.enforcer.verify(&self.state)
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
                Err(format!("verify: reading the maps back: {e}"))
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

    pub fn enforcer(&mut self) -> &mut Enforcer {
        &mut self.enforcer
    }

    /// Puts the state in force again: at start, and when interfaces come
    /// and go. Returns the report for the log.
    pub fn reconcile(&mut self) -> Result<crate::enforce::ApplyReport, String> {
        let r = self.enforcer.apply(&self.state).map_err(err);
        self.publish();
        r
    }

    /// Runs `f` on a copy of the state and makes the result the state: in
    /// force, then durable, then acknowledged (see the module doc).
    fn change<T>(
        &mut self,
        f: impl FnOnce(&mut State) -> Result<T, PolicyError>,
    ) -> Result<T, String> {
        let mut next = self.state.clone();
        let out = f(&mut next).map_err(err)?;
        self.commit(next)?;
        Ok(out)
    }

    /// Makes `next` the state (see [`Service::commit_in_force`]) and
    /// publishes the outcome for the reads, whichever it was: a refused
    /// change may still leave NICs degraded.
    fn commit(&mut self, next: State) -> Result<(), String> {
        if next == self.state {
            return Ok(());
        }
        let r = self.commit_in_force(next);
        self.publish();
        r
    }

    /// In force, then durable, then the state.
    fn commit_in_force(&mut self, next: State) -> Result<(), String> {
        // Every producer of `next` validated it (the operations, apply,
        // restore), and the store checks it again before it writes.
        let now = unix_now();
        let started = Instant::now();
        let store = &mut self.store;
        let snaps = snapshot::due(&self.state, &next, now, |g, w| store.has_snapshot(g, w))
            .map_err(|e| format!("store: {e}; nothing changed"))?;
        let snapshotted = started.elapsed();
        if let Err(e) = self.enforcer.apply(&next) {
            return Err(format!("{e}; {}", self.put_back("a refused change")));
        }
        let in_force = started.elapsed();
        crate::dataplane::faults::point("change.in-force");
        if let Err(e) = self.store.commit(&next, &snaps) {
            return Err(format!("store: {e}; {}", self.put_back("a failed commit")));
        }
        log::debug!(
            "change: snapshots {snapshotted:?}, in force {in_force:?}, durable {:?}",
            started.elapsed()
        );
        crate::dataplane::faults::point("change.durable");
        self.state = next;
        self.record_in_kernel();
        self.prune_snapshots();
        Ok(())
    }

    /// Puts the state before a failed change back in force, and says how
    /// that went (the tail of the change's error).
    fn put_back(&mut self, after: &str) -> String {
        match self.enforcer.apply(&self.state) {
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
        if let Err(e) = self.enforcer.dataplane().set_record(&record) {
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
            r @ (Request::GroupList
            | Request::GroupShow { .. }
            | Request::GroupHealth { .. }
            | Request::RuleList { .. }
            | Request::RuleExport { .. }
            | Request::NicList
            | Request::NicShow { .. }
            | Request::PrefixListList
            | Request::PrefixListShow { .. }
            | Request::PortListList
            | Request::PortListShow { .. }
            | Request::SettingsShow
            | Request::Export
            | Request::Status) => return reads::answer(&self.views.borrow(), &r),
            r @ (Request::GroupCreate { .. }
            | Request::GroupModify { .. }
            | Request::GroupSetInnerPolicy { .. }
            | Request::GroupDelete { .. }
            | Request::GroupClone { .. }) => self.group_request(r),
            r @ (Request::RuleAuthorize { .. }
            | Request::RuleRevoke { .. }
            | Request::RuleModify { .. }
            | Request::RuleImport { .. }) => self.rule_request(r),
            r @ (Request::NicBind { .. }
            | Request::NicUnbind { .. }
            | Request::NicJoin { .. }
            | Request::NicLeave { .. }
            | Request::NicSetGroups { .. }
            | Request::NicSetAddresses { .. }) => self.nic_request(r),
            r @ (Request::PrefixListCreate { .. }
            | Request::PrefixListModify { .. }
            | Request::PrefixListDelete { .. }) => self.prefix_list_request(r),
            r @ (Request::PortListCreate { .. }
            | Request::PortListModify { .. }
            | Request::PortListDelete { .. }) => self.port_list_request(r),
            r @ (Request::SettingsSet { .. }
            | Request::Apply { .. }
            | Request::SnapshotList { .. }
            | Request::SnapshotShow { .. }
            | Request::SnapshotRestore { .. }) => self.state_request(r),
            r @ (Request::Verify { .. }
            | Request::Trace(..)
            | Request::Stats { .. }
            | Request::SessionList { .. }
            | Request::SessionFlush { .. }) => self.observe_request(r),
        }
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
        let nics = names
            .iter()
            .map(|n| (n.clone(), self.nic_view(n)))
            .collect();
        let status = self.status();
        let dp = self.enforcer.dataplane();
        let ids = names
            .iter()
            .filter_map(|n| dp.nic_id(n).map(|id| (n.clone(), id)))
            .collect();
        let view = reads::View::new(self.state.clone(), nics, ids, status, self.started);
        self.views.send_replace(std::sync::Arc::new(view));
    }

    fn group_request(&mut self, request: Request) -> Answer {
        match request {
            r @ Request::GroupCreate { .. } => self.create_group(r),
            Request::GroupModify {
                id,
                name,
                description,
                deletion_protection,
                tags,
            } => {
                let gid = group_id("group", &id).map_err(err)?;
                let change = GroupChange {
                    name,
                    description,
                    deletion_protection,
                    tags,
                };
                self.change(|s| s.modify_group(&gid, change))?;
                Ok(json!({ "id": gid }))
            }
            Request::GroupSetInnerPolicy { id, policy } => {
                let gid = group_id("group", &id).map_err(err)?;
                let p = InnerPolicy::parse("group.inner_policy", &policy).map_err(err)?;
                self.change(|s| s.set_inner_policy(&gid, p))?;
                Ok(json!({ "id": gid }))
            }
            Request::GroupDelete { id } => {
                let gid = group_id("group", &id).map_err(err)?;
                self.change(|s| s.delete_group(&gid))?;
                Ok(json!({ "deleted": gid }))
            }
            Request::GroupClone {
                id,
                name,
                keep_rules,
                copy_tags,
            } => {
                let gid = group_id("group", &id).map_err(err)?;
                let options = CloneOptions {
                    name,
                    keep_rules,
                    copy_tags,
                };
                let new = self.change(|s| s.clone_group(&gid, &options))?;
                Ok(json!({ "id": new }))
            }
            _ => unreachable!("handle dispatches only these here"),
        }
    }

    fn create_group(&mut self, request: Request) -> Answer {
        let Request::GroupCreate {
            name,
            description,
            kind,
            inner_policy: inner,
            deletion_protection,
            tags,
            template,
        } = request
        else {
            unreachable!("create_group takes GroupCreate")
        };
        let id = if let Some(t) = template {
            let t = Template::by_name(&t).ok_or_else(|| {
                err(PolicyError::invalid(
                    "group.template",
                    &t,
                    "must be one of default, Sys-WebServer, Sys-FullAccess",
                ))
            })?;
            self.change(|s| s.create_from_template(t, Some(&name)))?
        } else {
            let spec = GroupSpec {
                name,
                description,
                kind: kind
                    .as_deref()
                    .map(|t| GroupType::parse("group.type", t))
                    .transpose()
                    .map_err(err)?
                    .unwrap_or(GroupType::Basic),
                inner_policy: inner
                    .as_deref()
                    .map(|t| InnerPolicy::parse("group.inner_policy", t))
                    .transpose()
                    .map_err(err)?,
                deletion_protection,
                managed: false,
                tags,
            };
            self.change(|s| s.create_group(spec))?
        };
        Ok(json!({ "id": id }))
    }

    fn rule_request(&mut self, request: Request) -> Answer {
        match request {
            Request::RuleAuthorize { group, rules } => {
                let gid = group_id("group", &group).map_err(err)?;
                let specs = rules
                    .iter()
                    .enumerate()
                    .map(|(i, r)| rule_spec(r).map_err(|e| format!("rules[{i}]: {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                let ids = self.change(|s| s.authorize_all(&gid, specs))?;
                Ok(json!({ "ids": ids }))
            }
            Request::RuleRevoke { group, rules } => {
                let gid = group_id("group", &group).map_err(err)?;
                let ids = rules
                    .iter()
                    .enumerate()
                    .map(|(i, r)| RuleId::parse(&format!("rules[{i}]"), r))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err)?;
                self.change(|s| {
                    for id in &ids {
                        s.revoke(&gid, id)?;
                    }
                    Ok(())
                })?;
                Ok(json!({ "revoked": ids }))
            }
            Request::RuleModify { group, rule, spec } => {
                let gid = group_id("group", &group).map_err(err)?;
                let rid = RuleId::parse("rule", &rule).map_err(err)?;
                let spec = rule_spec(&spec).map_err(err)?;
                self.change(|s| s.modify_rule(&gid, &rid, spec))?;
                Ok(json!({ "id": rid }))
            }
            Request::RuleImport {
                group,
                format,
                text,
            } => {
                let gid = group_id("group", &group).map_err(err)?;
                let csv = match format.to_ascii_lowercase().as_str() {
                    "json" => false,
                    "csv" => true,
                    _ => {
                        return Err(err(PolicyError::invalid(
                            "format",
                            &format,
                            "must be json or csv",
                        )));
                    }
                };
                let report = self.change(|s| {
                    if csv {
                        sg_policy::import_csv(s, &gid, &text)
                    } else {
                        sg_policy::import_json(s, &gid, &text)
                    }
                })?;
                let imported: Vec<&RuleId> = report.imported.iter().map(|r| &r.id).collect();
                let skipped: Vec<Value> = report
                    .skipped
                    .iter()
                    .map(|s| json!({ "index": s.index, "rule_id": s.rule_id, "reason": s.reason.to_string() }))
                    .collect();
                Ok(json!({ "imported": imported, "skipped": skipped }))
            }
            _ => unreachable!("handle dispatches only these here"),
        }
    }

    fn nic_request(&mut self, request: Request) -> Answer {
        match request {
            Request::NicBind {
                name,
                mode,
                addresses: addrs,
                extra_allowed,
                anti_spoof,
                groups,
            } => {
                let binding = NicBinding {
                    name: name.clone(),
                    mode: BindingMode::parse("nic.mode", &mode).map_err(err)?,
                    addresses: addresses("nic.addresses", &addrs).map_err(err)?,
                    extra_allowed: cidrs("nic.extra_allowed", &extra_allowed).map_err(err)?,
                    anti_spoof,
                    groups: group_ids("nic.groups", &groups).map_err(err)?,
                };
                self.change(|s| s.bind_nic(binding))?;
                Ok(json!({ "nic": name }))
            }
            Request::NicUnbind { name } => {
                self.change(|s| s.unbind_nic(&name))?;
                Ok(json!({ "nic": name }))
            }
            Request::NicJoin { name, group } => {
                let gid = group_id("group", &group).map_err(err)?;
                self.change(|s| s.join(&name, &gid))?;
                Ok(json!({ "nic": name }))
            }
            Request::NicLeave { name, group } => {
                let gid = group_id("group", &group).map_err(err)?;
                self.change(|s| s.leave(&name, &gid))?;
                Ok(json!({ "nic": name }))
            }
            Request::NicSetGroups { name, groups } => {
                let gids = group_ids("nic.groups", &groups).map_err(err)?;
                self.change(|s| s.set_nic_groups(&name, gids))?;
                Ok(json!({ "nic": name }))
            }
            Request::NicSetAddresses {
                name,
                addresses: addrs,
                extra_allowed,
            } => {
                let a = addresses("nic.addresses", &addrs).map_err(err)?;
                let e = cidrs("nic.extra_allowed", &extra_allowed).map_err(err)?;
                self.change(|s| s.set_nic_addresses(&name, a, e))?;
                Ok(json!({ "nic": name }))
            }
            _ => unreachable!("handle dispatches only these here"),
        }
    }

    fn prefix_list_request(&mut self, request: Request) -> Answer {
        match request {
            Request::PrefixListCreate {
                name,
                description,
                family: fam,
                max_entries,
                entries,
            } => {
                let spec = PrefixListSpec {
                    name,
                    description,
                    family: Family::parse("prefix_list.family", &fam).map_err(err)?,
                    max_entries,
                    entries: prefix_entries(&entries).map_err(err)?,
                };
                let id = self.change(|s| s.create_prefix_list(spec))?;
                Ok(json!({ "id": id }))
            }
            Request::PrefixListModify {
                id,
                name,
                description,
                max_entries,
                entries,
            } => {
                let pid = PrefixListId::parse("prefix_list", &id).map_err(err)?;
                let cur = self.state.prefix_lists.get(&pid).ok_or_else(|| {
                    err(PolicyError::not_found(
                        "prefix_list",
                        PrefixListId::KIND,
                        &pid,
                    ))
                })?;
                let spec = PrefixListSpec {
                    name: name.unwrap_or_else(|| cur.name.clone()),
                    description: description.unwrap_or_else(|| cur.description.clone()),
                    family: cur.family,
                    max_entries: max_entries.unwrap_or(cur.max_entries),
                    entries: match entries {
                        Some(e) => prefix_entries(&e).map_err(err)?,
                        None => cur.entries.clone(),
                    },
                };
                self.change(|s| s.modify_prefix_list(&pid, spec))?;
                Ok(json!({ "id": pid }))
            }
            Request::PrefixListDelete { id } => {
                let pid = PrefixListId::parse("prefix_list", &id).map_err(err)?;
                self.change(|s| s.delete_prefix_list(&pid))?;
                Ok(json!({ "deleted": pid }))
            }
            _ => unreachable!("handle dispatches only these here"),
        }
    }

    fn port_list_request(&mut self, request: Request) -> Answer {
        match request {
            Request::PortListCreate {
                name,
                description,
                max_entries,
                entries,
            } => {
                let spec = PortListSpec {
                    name,
                    description,
                    max_entries,
                    entries: port_entries(&entries).map_err(err)?,
                };
                let id = self.change(|s| s.create_port_list(spec))?;
                Ok(json!({ "id": id }))
            }
            Request::PortListModify {
                id,
                name,
                description,
                max_entries,
                entries,
            } => {
                let pid = PortListId::parse("port_list", &id).map_err(err)?;
                let cur = self.state.port_lists.get(&pid).ok_or_else(|| {
                    err(PolicyError::not_found("port_list", PortListId::KIND, &pid))
                })?;
                let spec = PortListSpec {
                    name: name.unwrap_or_else(|| cur.name.clone()),
                    description: description.unwrap_or_else(|| cur.description.clone()),
                    max_entries: max_entries.unwrap_or(cur.max_entries),
                    entries: match entries {
                        Some(e) => port_entries(&e).map_err(err)?,
                        None => cur.entries.clone(),
                    },
                };
                self.change(|s| s.modify_port_list(&pid, spec))?;
                Ok(json!({ "id": pid }))
            }
            Request::PortListDelete { id } => {
                let pid = PortListId::parse("port_list", &id).map_err(err)?;
                self.change(|s| s.delete_port_list(&pid))?;
                Ok(json!({ "deleted": pid }))
            }
            _ => unreachable!("handle dispatches only these here"),
        }
    }

    fn state_request(&mut self, request: Request) -> Answer {
        match request {
            Request::SettingsSet {
                block_port_25,
                platform_addresses,
                snapshot_retention_days,
                tcp_handshake_secs,
                tcp_established_secs,
                tcp_closing_secs,
                other_secs,
                fragment_timeout_secs,
            } => {
                let mut s = self.state.settings.clone();
                if let Some(b) = block_port_25 {
                    s.block_port_25 = b;
                }
                if let Some(p) = platform_addresses {
                    s.platform_addresses = cidrs("settings.platform_addresses", &p).map_err(err)?;
                }
                if let Some(d) = snapshot_retention_days {
                    s.snapshot_retention_days = d;
                }
                if let Some(f) = fragment_timeout_secs {
                    s.fragment_timeout_secs = f;
                }
                let t = &mut s.session_timeouts;
                for (v, slot) in [
                    (tcp_handshake_secs, &mut t.tcp_handshake_secs),
                    (tcp_established_secs, &mut t.tcp_established_secs),
                    (tcp_closing_secs, &mut t.tcp_closing_secs),
                    (other_secs, &mut t.other_secs),
                ] {
                    if let Some(v) = v {
                        *slot = v;
                    }
                }
                self.change(|st| st.set_settings(s))?;
                Ok(to_value(&self.state.settings))
            }
            Request::Apply {
                document,
                dry_run,
                allow_delete_all,
            } => {
                let started = Instant::now();
                let doc = sg_policy::apply::parse(&document).map_err(err)?;
                let parsed = started.elapsed();
                let next = sg_policy::apply::desired(&self.state, &doc).map_err(err)?;
                let built = started.elapsed();
                let diff = sg_policy::apply::diff(&self.state, &next);
                // A sweep (every NIC unbound, every group deleted) heads the
                // diff, dry run or not, and is refused without the flag.
                let sweep = sg_policy::apply::Sweep::of(&self.state, &next);
                let warnings = sweep
                    .as_ref()
                    .map(sg_policy::apply::Sweep::lines)
                    .unwrap_or_default();
                let changes: Vec<String> = warnings
                    .iter()
                    .cloned()
                    .chain(diff.iter().map(ToString::to_string))
                    .collect();
                log::debug!(
                    "apply: parsed {parsed:?}, desired state {built:?}, diff {:?}",
                    started.elapsed()
                );
                if !dry_run {
                    sg_policy::apply::check_sweep(&self.state, &next, allow_delete_all)
                        .map_err(err)?;
                    if let Some(s) = &sweep {
                        log::warn!("apply with allow_delete_all: {}", s.lines().join("; "));
                    }
                    self.commit(next)?;
                }
                Ok(json!({
                    "applied": !dry_run && !diff.is_empty(),
                    "changes": changes,
                    "warnings": warnings,
                }))
            }
            Request::SnapshotList { group } => {
                let gid = group
                    .as_deref()
                    .map(|g| group_id("group", g))
                    .transpose()
                    .map_err(err)?;
                Ok(to_value(&self.store.snapshots(gid.as_ref()).map_err(err)?))
            }
            Request::SnapshotShow { id } => match self.store.snapshot(id).map_err(err)? {
                Some(s) => Ok(to_value(&s)),
                None => Err(format!("snapshot: {id} does not exist")),
            },
            Request::SnapshotRestore { id } => {
                let snap = self
                    .store
                    .snapshot(id)
                    .map_err(err)?
                    .ok_or_else(|| format!("snapshot: {id} does not exist"))?;
                self.change(|s| snapshot::restore(s, &snap))?;
                Ok(json!({ "group": snap.group, "rules": snap.rules.len() }))
            }
            _ => unreachable!("handle dispatches only these here"),
        }
    }

    fn observe_request(&mut self, request: Request) -> Answer {
        match request {
            Request::Verify { no_repair } => {
                let drift = self.self_check(!no_repair)?;
                Ok(json!({
                    "drift": drift,
                    "repaired": !no_repair && !drift.is_empty(),
                    "degraded": self.enforcer.degraded(),
                }))
            }
            Request::Trace(t) => self.trace(&t),
            Request::Stats { nic } => self.stats(nic.as_deref()),
            r @ (Request::SessionList { .. } | Request::SessionFlush { .. }) => {
                let table = std::sync::Arc::clone(&self.sessions);
                reads::sessions(&self.views.borrow(), &table, &r)
            }
            _ => unreachable!("handle dispatches only these here"),
        }
    }

    /// NIC id → name, for the data plane's views.
    fn nic_names(&mut self) -> BTreeMap<u32, String> {
        let names: Vec<String> = self.state.nics.keys().cloned().collect();
        let dp = self.enforcer.dataplane();
        names
            .into_iter()
            .filter_map(|n| dp.nic_id(&n).map(|id| (id, n)))
            .collect()
    }

    fn nic_view(&mut self, name: &str) -> Value {
        let binding = self.state.nics.get(name).cloned();
        let ifindex = crate::enforce::ifindex(name);
        let degraded = self.enforcer.degraded().get(name).cloned();
        let dp = self.enforcer.dataplane();
        json!({
            "binding": binding,
            "ifindex": ifindex,
            "attached": dp.is_attached(name),
            "version": dp.version(name),
            "closed": dp.is_closed(name),
            "degraded": degraded,
        })
    }

    fn status(&mut self) -> Value {
        let nics: Vec<Value> = self
            .state
            .nics
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .iter()
            .map(|n| self.nic_view(n))
            .collect();
        let programs: BTreeMap<&str, u32> = self
            .enforcer
            .dataplane()
            .program_ids()
            .into_iter()
            .collect();
        let position = self.store.position();
        let degraded = self.enforcer.degraded().clone();
        let c = &self.checks;
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_secs": self.started.elapsed().as_secs(),
            "socket": self.info.socket,
            "store": self.info.store,
            "store_id": position.id.to_string(),
            "store_generation": position.generation,
            "pins": self.info.pins,
            "groups": self.state.groups.len(),
            "rules": self.state.all_rules().count(),
            "nics": nics,
            "programs": programs,
            "healthy": degraded.is_empty() && c.last_drift.is_empty(),
            "degraded": degraded,
            "self_check": {
                "runs": c.runs,
                "drift_total": c.drift_total,
                "last_drift": c.last_drift,
                "errors": c.errors,
                "last_at": c.last_at,
            },
        })
    }

    /// Explains one packet from what the kernel holds: the interface's
    /// entry, the own-address and platform tries, the settings and the table
    /// in force, read from the maps and looked up the way the programs look
    /// them up (`Dataplane::explain`); the agent's records only name the
    /// deciding rank. The reference evaluator decides it too from the
    /// policy; a disagreement (drift, or a bug) is reported, not hidden.
    fn trace(&mut self, t: &TraceText) -> Answer {
        self.state.nic(&t.nic).map_err(err)?;
        let (direction, _, packet) = trace_packet(t)?;
        let reference =
            sg_policy::evaluate(&self.state, &t.nic, direction, &packet).map_err(err)?;
        let ifindex = crate::enforce::ifindex(&t.nic).ok_or_else(|| {
            format!(
                "nic: {} is bound but its interface is absent here: nothing enforces it",
                t.nic
            )
        })?;
        let dir = u32::from(direction == Direction::Egress);
        let dp = self.enforcer.dataplane();
        let k = dp.explain(ifindex, direction, &packet).map_err(err)?;
        let rank =
            (k.rank != sg_common::policy::NO_RANK).then(|| dp.rank(&t.nic, dir, k.rank).cloned());
        let mut rule = None;
        let mut group = None;
        let mut priority = None;
        let where_ = k.config.map_or_else(String::new, |c| {
            format!(
                " (slot {}, version {}, read from the kernel's maps)",
                c.slot, c.version
            )
        });
        let detail = match (k.reason, &rank) {
            (sg_common::reason::UNBOUND, _) => {
                "the interface has no entry in the kernel: it passes untouched".to_owned()
            }
            (_, Some(Some(Rank::Rule(id)))) => {
                let (g, r) = self.state.find_rule(id).ok_or("rule vanished")?;
                rule = Some(id.to_string());
                group = Some(g.id.to_string());
                priority = Some(r.spec.priority);
                format!("rank {} of the {direction} table in force{where_}", k.rank)
            }
            (_, Some(Some(Rank::IntraGroup(g)))) => {
                group = Some(g.to_string());
                format!("default: both ends are members of {g} (intra-group Accept){where_}")
            }
            (_, Some(None)) => format!(
                "rank {} of the {direction} table in force{where_}, which the agent has no record of: the maps drifted (run `sg-agent verify`)",
                k.rank
            ),
            (r, None) if is_default(r) => format!("no rule matches: the default{where_}"),
            (_, None) => format!("decided before sessions and rules{where_}"),
        };
        let kernel_verdict = if k.verdict == sg_common::policy::verdict::ACCEPT {
            sg_policy::Verdict::Accept
        } else {
            sg_policy::Verdict::Drop
        };
        let same_rule = match &reference.reason {
            sg_policy::Reason::Rule(id) => rule.as_deref() == Some(id.as_str()),
            _ => true,
        };
        let agrees = kernel_verdict == reference.verdict
            && kernel_reason(&reference.reason) == k.reason
            && same_rule;
        Ok(json!({
            "verdict": format!("{kernel_verdict:?}").to_lowercase(),
            "reason": sg_common::reason::NAMES.get(k.reason as usize).copied().unwrap_or("?"),
            "rule": rule,
            "group": group,
            "priority": priority,
            "detail": detail,
            "reference_agrees": agrees,
            "reference": {
                "verdict": format!("{:?}", reference.verdict).to_lowercase(),
                "reason": reason_name(&reference.reason),
            },
            "note": "for a packet that starts a flow; a live session (sessions list) accepts its packets first",
        }))
    }

    fn stats(&mut self, nic: Option<&str>) -> Answer {
        if let Some(n) = nic {
            self.state.nic(n).map_err(err)?;
        }
        let names: Vec<String> = match nic {
            Some(n) => vec![n.to_owned()],
            None => self.state.nics.keys().cloned().collect(),
        };
        let dp = self.enforcer.dataplane();
        let counters = Counters::read(dp).map_err(err)?;
        let mut nics = serde_json::Map::new();
        for name in names {
            if dp.nic_id(&name).is_none() {
                continue;
            }
            let (hits, counts) = nic_counters(dp, &name).map_err(err)?;
            let rules: Vec<Value> = hits
                .iter()
                .map(|h| json!({ "dir": h.direction, "rule": h.rule, "packets": h.packets, "bytes": h.bytes }))
                .collect();
            let reasons: Vec<Value> = counts
                .iter()
                .map(|r| json!({ "dir": r.direction, "reason": r.reason, "packets": r.packets }))
                .collect();
            nics.insert(name, json!({ "rules": rules, "reasons": reasons }));
        }
        let sessions: serde_json::Map<String, Value> = dp
            .session_events()
            .map_err(err)?
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect();
        Ok(json!({
            "counters": counters.to_json(),
            "nics": nics,
            "sessions": sessions,
            "drop_log": dp.drop_log_stats().ok().map(|d| json!({
                "logged": d.logged, "suppressed": d.suppressed, "ringbuf_full": d.ringbuf_full,
            })),
        }))
    }

    /// The counters as Prometheus text (the `--metrics` endpoint).
    pub fn metrics(&mut self) -> String {
        use crate::metrics::MetricsInput;
        let names: Vec<String> = self.state.nics.keys().cloned().collect();
        let dp = self.enforcer.dataplane();
        let mut input = MetricsInput {
            packets: Counters::read(dp)
                .map(|c| c.rows().map(|(n, i, e)| (n.to_owned(), i, e)).collect())
                .unwrap_or_default(),
            rule_hits: Vec::new(),
            reasons: Vec::new(),
            session_events: dp
                .session_events()
                .map(|v| v.into_iter().map(|(k, n)| (k.to_owned(), n)).collect())
                .unwrap_or_default(),
            drop_log: dp.drop_log_stats().ok(),
            policy_version: Vec::new(),
            degraded: Vec::new(),
            self_check: None,
        };
        input.degraded = self
            .enforcer
            .degraded()
            .iter()
            .map(|(n, why)| (n.clone(), why.clone()))
            .collect();
        let c = &self.checks;
        input.self_check = Some(crate::metrics::SelfCheckCounts {
            runs: c.runs,
            drift_total: c.drift_total,
            last_drift: c.last_drift.len() as u64,
            errors: c.errors,
        });
        let dp = self.enforcer.dataplane();
        for nic in names {
            let Some(version) = dp.version(&nic) else {
                continue;
            };
            input.policy_version.push((nic.clone(), version));
            if let Ok((hits, reasons)) = nic_counters(dp, &nic) {
                input.rule_hits.extend(hits);
                input.reasons.extend(reasons);
            }
        }
        crate::metrics::render(&input)
    }

    /// Drop log lines, with each NIC's name and the deciding rule's id.
    pub fn drop_lines(&mut self, events: &[crate::dataplane::droplog::DropEvent]) -> Vec<String> {
        let names = self.nic_names();
        let dp = self.enforcer.dataplane();
        events
            .iter()
            .map(|e| {
                let nic = names.get(&e.nic);
                let rule = match (nic, e.rank) {
                    (Some(n), Some(rank)) => dp.rank(n, u32::from(e.dir), rank).map(rank_text),
                    _ => None,
                };
                e.line(nic.map_or("?", String::as_str), rule.as_deref())
            })
            .collect()
    }
}

/// The packet `sg-agent trace` asks about: the first packet of a flow (a TCP
/// SYN; for ICMP an echo request unless a type is given).
fn trace_packet(t: &TraceText) -> Result<(Direction, u8, Packet), String> {
    let direction = Direction::parse("direction", &t.direction).map_err(err)?;
    let protocol = Protocol::parse("protocol", &t.protocol).map_err(err)?;
    let number = protocol.number().ok_or_else(|| {
        err(PolicyError::invalid(
            "protocol",
            "ALL",
            "a packet has one protocol",
        ))
    })?;
    let src = ip("source", &t.source).map_err(err)?;
    let dst = ip("destination", &t.destination).map_err(err)?;
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(err(PolicyError::invalid(
            "destination",
            dst,
            "a different family from the source",
        )));
    }
    let icmp = matches!(number, 1 | 58);
    let packet = Packet {
        src,
        dst,
        protocol: number,
        src_port: t.source_port.unwrap_or(0),
        dst_port: t.destination_port.unwrap_or(0),
        icmp_type: t.icmp_type.unwrap_or(if icmp {
            if number == 1 { 8 } else { 128 }
        } else {
            0
        }),
        icmp_code: t.icmp_code.unwrap_or(0),
        tcp_flags: if number == 6 {
            sg_policy::evaluate::tcp_flags::SYN
        } else {
            0
        },
        fragment: sg_policy::Fragment::None,
        nd_target: None,
        icmp_id: 0,
        quoted: None,
    };
    Ok((direction, number, packet))
}

/// NIC `nic`'s per-rule hits and decisions by reason, as `stats` and the
/// metrics endpoint both show them.
fn nic_counters(
    dp: &mut crate::dataplane::Dataplane,
    nic: &str,
) -> Result<
    (
        Vec<crate::metrics::RuleHitRow>,
        Vec<crate::metrics::ReasonRow>,
    ),
    crate::dataplane::Error,
> {
    let hits = dp
        .rule_hits(nic)?
        .iter()
        .map(|h| crate::metrics::RuleHitRow {
            nic: nic.to_owned(),
            direction: DIRS[h.dir as usize].to_owned(),
            rule: rank_text(&h.rank),
            packets: h.packets,
            bytes: h.bytes,
        })
        .collect();
    let reasons = dp
        .reason_counts(nic)?
        .into_iter()
        .map(|(dir, r, n)| crate::metrics::ReasonRow {
            nic: nic.to_owned(),
            direction: DIRS[dir as usize].to_owned(),
            reason: sg_common::reason::NAMES
                .get(r as usize)
                .copied()
                .unwrap_or("?")
                .to_owned(),
            packets: n,
        })
        .collect();
    Ok((hits, reasons))
}

/// What a rank stands for, as stats and metrics print it.
fn rank_text(r: &Rank) -> String {
    match r {
        Rank::Rule(id) => id.to_string(),
        Rank::IntraGroup(g) => format!("default: intra-group {g}"),
    }
}

/// Whether kernel reason `r` is a step 6 default.
fn is_default(r: u32) -> bool {
    use sg_common::reason as k;
    matches!(
        r,
        k::DEFAULT_INGRESS_DROP | k::DEFAULT_EGRESS_BASIC | k::DEFAULT_EGRESS_ENTERPRISE | k::NONE
    )
}

/// The kernel's number (`sg_common::reason`) for the evaluator's reason.
fn kernel_reason(r: &sg_policy::Reason) -> u32 {
    use sg_common::reason as k;
    use sg_policy::{AlwaysAllowed as A, Reason as R, SpoofCheck as S};
    match r {
        R::Malformed => k::MALFORMED,
        R::AntiSpoof(S::SourceAddress) => k::SPOOF_SOURCE,
        R::AntiSpoof(S::ArpSender) => k::SPOOF_ARP,
        R::AntiSpoof(S::NdTarget) => k::SPOOF_ND_TARGET,
        R::AntiSpoof(S::Ethertype) => k::SPOOF_ETHERTYPE,
        R::AntiSpoof(S::Tagged) => k::SPOOF_TAGGED,
        R::NotIp => k::NOT_IP,
        R::NeighbourDiscovery => k::NEIGHBOUR_DISCOVERY,
        R::AlwaysAllowed(A::PathMtu) => k::PATH_MTU,
        R::AlwaysAllowed(A::PlatformAddress) => k::PLATFORM_ADDRESS,
        R::PlatformPort25 => k::PORT_25,
        R::Session => k::SESSION,
        R::Related => k::RELATED,
        R::LaterFragment => k::FRAGMENT_NO_FIRST,
        R::FragmentFollowsFirst => k::FRAGMENT_FOLLOWS_FIRST,
        R::FragmentExpired => k::FRAGMENT_EXPIRED,
        R::Rule(_) => k::RULE,
        R::DefaultIngressIntraGroup(_) => k::DEFAULT_INTRA_GROUP,
        R::DefaultIngressDrop => k::DEFAULT_INGRESS_DROP,
        R::DefaultEgressBasic => k::DEFAULT_EGRESS_BASIC,
        R::DefaultEgressEnterprise => k::DEFAULT_EGRESS_ENTERPRISE,
    }
}

/// A reason as the data plane's counters name it (`sg_common::reason::NAMES`).
fn reason_name(r: &sg_policy::Reason) -> String {
    use sg_policy::Reason as R;
    match r {
        R::Malformed => "malformed".to_owned(),
        R::AntiSpoof(check) => format!("spoof ({check:?})"),
        R::NotIp => "not_ip".to_owned(),
        R::NeighbourDiscovery => "neighbour_discovery".to_owned(),
        R::AlwaysAllowed(what) => format!("always_allowed ({what:?})"),
        R::PlatformPort25 => "port_25".to_owned(),
        R::Session => "session".to_owned(),
        R::Related => "related".to_owned(),
        R::LaterFragment => "fragment_no_first".to_owned(),
        R::FragmentFollowsFirst => "fragment_follows_first".to_owned(),
        R::FragmentExpired => "fragment_expired".to_owned(),
        R::Rule(_) => "rule".to_owned(),
        R::DefaultIngressIntraGroup(_) => "default_intra_group".to_owned(),
        R::DefaultIngressDrop => "default_ingress_drop".to_owned(),
        R::DefaultEgressBasic => "default_egress_basic".to_owned(),
        R::DefaultEgressEnterprise => "default_egress_enterprise".to_owned(),
    }
}

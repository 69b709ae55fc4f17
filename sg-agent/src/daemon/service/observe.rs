//! What the daemon shows of itself and the kernel: verify, status, per-rule and per-NIC
//! counters, metrics, drop lines; sessions are the reads' (`reads.rs`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::metrics::{MetricsInput, ReasonRow, RuleHitRow, ScrapeErrors, ScrapeHealth, ScrapePart};
use crate::{
    api::{ObserveRequest, Request, reply},
    dataplane::Counters,
};
use sg_policy::compile::Rank;

use super::{Answer, Service, err, to_value, unavailable};

const DIRS: [&str; 2] = ["ingress", "egress"];

impl Service {
    pub(super) fn observe_request(&mut self, request: ObserveRequest) -> Answer {
        match request {
            ObserveRequest::Status => self.read(&Request::Observe(ObserveRequest::Status)),
            ObserveRequest::Verify { no_repair } => {
                let drift = self.self_check(!no_repair)?;
                Ok(to_value(&reply::Verified {
                    repaired: !no_repair && !drift.is_empty(),
                    drift: drift
                        .into_iter()
                        .map(|d| reply::DriftRow {
                            nic: d.nic,
                            what: d.what,
                            repair: to_value(&d.repair).as_str().unwrap_or("?").to_owned(),
                        })
                        .collect(),
                    degraded: self.reconciler.degraded().clone().into_iter().collect(),
                }))
            }
            ObserveRequest::Trace(t) => self.trace(&t),
            ObserveRequest::Stats { nic } => self.stats(nic.as_deref()),
        }
    }

    pub(super) fn status(&mut self) -> Value {
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
            .reconciler
            .dataplane()
            .program_ids()
            .into_iter()
            .collect();
        let position = self.store.position();
        let fleet = self.fleet_status();
        let degraded = self.reconciler.degraded().clone();
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
            "fleet": fleet,
        })
    }

    /// The fleet part of `status`: this host's revision in force, whether
    /// the store answers, and every live host with how far it is behind
    /// this one (in store revisions); null on a single host.
    fn fleet_status(&self) -> Value {
        if !self.store.is_shared() {
            return Value::Null;
        }
        let health = self.store.health();
        let hosts: Vec<Value> = self
            .store
            .hosts()
            .iter()
            .map(|h| {
                json!({
                    "host": h.host,
                    "revision": h.revision,
                    "generation": h.generation,
                    "behind": (health.revision - h.revision).max(0),
                    "at": h.at,
                    "agent": h.agent,
                })
            })
            .collect();
        json!({
            "host": health.host,
            "revision": health.revision,
            "store_reachable": health.reachable,
            "stale": !health.reachable,
            "since": health.since,
            "hosts": hosts,
        })
    }

    pub(super) fn stats(&mut self, nic: Option<&str>) -> Answer {
        if let Some(n) = nic {
            self.state.nic(n).map_err(err)?;
        }
        let names: Vec<String> = match nic {
            Some(n) => vec![n.to_owned()],
            None => self.state.nics.keys().cloned().collect(),
        };
        let dp = self.reconciler.dataplane();
        let counters = Counters::read(dp.maps()).map_err(unavailable)?;
        let mut nics = serde_json::Map::new();
        for name in names {
            if dp.nic_id(&name).is_none() {
                continue;
            }
            let (hits, counts) = nic_counters(dp, &name).map_err(unavailable)?;
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
            .maps()
            .session_events()
            .map_err(unavailable)?
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect();
        Ok(json!({
            "counters": counters.to_json(),
            "nics": nics,
            "sessions": sessions,
            "drop_log": dp.maps().drop_log_stats().ok().map(|d| json!({
                "logged": d.logged, "suppressed": d.suppressed, "ringbuf_full": d.ringbuf_full,
            })),
        }))
    }

    /// The counters as Prometheus text (the `--metrics` endpoint). A map
    /// read that fails is logged and counted in `errors`, which the caller
    /// keeps across scrapes; the scrape says it is partial, and the
    /// families that could be read are still shown. At most `rule_series`
    /// per-rule series are shown, those with hits (see
    /// [`crate::metrics::select_rule_series`]); with 0 the per-rule
    /// counters are not read at all.
    pub fn metrics(&mut self, errors: &mut ScrapeErrors, rule_series: usize) -> String {
        let mut input = self.metrics_known();
        let mut failed = Failed::default();
        let names: Vec<String> = self.state.nics.keys().cloned().collect();
        let dp = self.reconciler.dataplane();
        input.packets = failed
            .take(ScrapePart::Counters, None, Counters::read(dp.maps()))
            .map(|c| c.rows().map(|(n, i, e)| (n.to_owned(), i, e)).collect())
            .unwrap_or_default();
        input.session_events = failed
            .take(ScrapePart::Sessions, None, dp.maps().session_events())
            .map(|v| v.into_iter().map(|(k, n)| (k.to_owned(), n)).collect())
            .unwrap_or_default();
        input.drop_log = failed.take(ScrapePart::DropLog, None, dp.maps().drop_log_stats());
        for nic in names {
            let Some(version) = dp.version(&nic) else {
                continue;
            };
            input.policy_version.push((nic.clone(), version));
            if rule_series > 0 {
                let hits = failed.take(ScrapePart::RuleHits, Some(&nic), rule_hit_rows(dp, &nic));
                input.rule_hits.extend(hits.into_iter().flatten());
            }
            let reasons = failed.take(ScrapePart::Reasons, Some(&nic), reason_rows(dp, &nic));
            input.reasons.extend(reasons.into_iter().flatten());
        }
        if rule_series > 0 {
            let (shown, dropped) = crate::metrics::select_rule_series(
                std::mem::take(&mut input.rule_hits),
                rule_series,
            );
            input.rule_hits = shown;
            input.rule_series_dropped = Some(dropped);
        }
        for part in &failed.0 {
            errors.count(*part);
        }
        input.scrape = Some(ScrapeHealth {
            errors: *errors,
            partial: !failed.0.is_empty(),
        });
        crate::metrics::render(&input)
    }

    /// What the metrics show from the agent's own memory, not read from
    /// the kernel: build, fleet health, degraded NICs, the self-check.
    fn metrics_known(&self) -> MetricsInput {
        let mut input = MetricsInput {
            build: Some(crate::metrics::BuildInfo::CURRENT),
            ..MetricsInput::default()
        };
        if self.store.is_shared() {
            let health = self.store.health();
            let hosts = self.store.hosts();
            input.fleet = Some(crate::metrics::FleetCounts {
                reachable: health.reachable,
                revision: health.revision,
                hosts_live: hosts.len() as u64,
                behind_max: hosts
                    .iter()
                    .map(|h| (health.revision - h.revision).max(0))
                    .max()
                    .unwrap_or(0),
            });
        }
        input.degraded = self
            .reconciler
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
        input
    }

    /// Drop log lines, with each NIC's name and the deciding rule's id.
    pub fn drop_lines(&mut self, events: &[crate::dataplane::droplog::DropEvent]) -> Vec<String> {
        let names = self.nic_names();
        let dp = self.reconciler.dataplane();
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

/// The reads of one scrape that failed, by part.
#[derive(Default)]
struct Failed(Vec<ScrapePart>);

impl Failed {
    /// `read`'s value; if it failed, the failure logged and noted.
    fn take<T, E: std::fmt::Display>(
        &mut self,
        part: ScrapePart,
        nic: Option<&str>,
        read: Result<T, E>,
    ) -> Option<T> {
        match read {
            Ok(v) => Some(v),
            Err(e) => {
                let of = nic.map(|n| format!(" of NIC {n}")).unwrap_or_default();
                log::warn!(
                    "metrics: reading the {}{of}: {e}; left out of this scrape",
                    part.name()
                );
                self.0.push(part);
                None
            }
        }
    }
}

/// NIC `nic`'s per-rule hits and decisions by reason, as `stats` and the
/// metrics endpoint both show them.
pub(super) fn nic_counters(
    dp: &mut crate::dataplane::Dataplane,
    nic: &str,
) -> Result<(Vec<RuleHitRow>, Vec<ReasonRow>), crate::dataplane::Error> {
    Ok((rule_hit_rows(dp, nic)?, reason_rows(dp, nic)?))
}

/// NIC `nic`'s per-rule hits.
fn rule_hit_rows(
    dp: &mut crate::dataplane::Dataplane,
    nic: &str,
) -> Result<Vec<RuleHitRow>, crate::dataplane::Error> {
    Ok(dp
        .rule_hits(nic)?
        .iter()
        .map(|h| RuleHitRow {
            nic: nic.to_owned(),
            direction: DIRS[h.dir as usize].to_owned(),
            rule: rank_text(&h.rank),
            packets: h.packets,
            bytes: h.bytes,
        })
        .collect())
}

/// NIC `nic`'s decisions by reason.
fn reason_rows(
    dp: &mut crate::dataplane::Dataplane,
    nic: &str,
) -> Result<Vec<ReasonRow>, crate::dataplane::Error> {
    Ok(dp
        .reason_counts(nic)?
        .into_iter()
        .map(|(dir, r, n)| ReasonRow {
            nic: nic.to_owned(),
            direction: DIRS[dir as usize].to_owned(),
            reason: sg_common::reason::NAMES
                .get(r as usize)
                .copied()
                .unwrap_or("?")
                .to_owned(),
            packets: n,
        })
        .collect())
}

/// What a rank stands for, as stats and metrics print it.
pub(super) fn rank_text(r: &Rank) -> String {
    match r {
        Rank::Rule(id) => id.to_string(),
        Rank::IntraGroup(g) => format!("default: intra-group {g}"),
    }
}

/// Whether kernel reason `r` is a step 6 default.
pub(super) fn is_default(r: u32) -> bool {
    use sg_common::reason as k;
    matches!(
        r,
        k::DEFAULT_INGRESS_DROP | k::DEFAULT_EGRESS_BASIC | k::DEFAULT_EGRESS_ENTERPRISE | k::NONE
    )
}

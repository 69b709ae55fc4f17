//! What the daemon shows of itself and the kernel: verify, status, per-rule and per-NIC
//! counters, metrics, drop lines; sessions are the reads' (`reads.rs`).

use std::collections::BTreeMap;

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
                    drift: drift_rows(drift),
                    degraded: self.reconciler.degraded().clone().into_iter().collect(),
                }))
            }
            ObserveRequest::Trace(t) => self.trace(&t),
            ObserveRequest::Stats {
                nic,
                dir,
                min_packets,
                limit,
                after,
            } => {
                let page = StatsPage::new(dir.as_deref(), min_packets, limit, after.as_deref())?;
                self.stats(nic.as_deref(), &page)
            }
        }
    }

    pub(super) fn status(&mut self) -> reply::Status {
        let names: Vec<String> = self.state.nics.keys().cloned().collect();
        let nics = names.iter().filter_map(|n| self.nic_shown(n)).collect();
        let programs = self
            .reconciler
            .dataplane()
            .program_ids()
            .into_iter()
            .map(|(name, id)| (name.to_owned(), id))
            .collect();
        let position = self.store.position();
        let degraded = self.reconciler.degraded().clone();
        let c = &self.checks;
        reply::Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            socket: self.info.socket.display().to_string(),
            store: self.info.store.clone(),
            store_id: position.id.to_string(),
            store_generation: position.generation,
            pins: self.info.pins.display().to_string(),
            groups: self.state.groups.len() as u64,
            rules: self.state.all_rules().count() as u64,
            nics,
            programs,
            healthy: degraded.is_empty() && c.last_drift.is_empty(),
            degraded: degraded.into_iter().collect(),
            self_check: reply::SelfCheck {
                runs: c.runs,
                drift_total: c.drift_total,
                last_drift: drift_rows(c.last_drift.clone()),
                errors: c.errors,
                last_at: c.last_at,
            },
            fleet: self.fleet_status(),
        }
    }

    /// The fleet part of `status`: this host's revision in force, whether
    /// the store answers, and every live host with how far it is behind
    /// this one (in store revisions); none on a single host.
    fn fleet_status(&self) -> Option<reply::FleetStatus> {
        if !self.store.is_shared() {
            return None;
        }
        let health = self.store.health();
        let hosts = self
            .store
            .hosts()
            .iter()
            .map(|h| reply::FleetHost {
                host: h.host.clone(),
                revision: h.revision,
                generation: h.generation,
                behind: (health.revision - h.revision).max(0),
                at: h.at,
                agent: h.agent.clone(),
            })
            .collect();
        Some(reply::FleetStatus {
            host: health.host,
            revision: health.revision,
            store_reachable: health.reachable,
            stale: !health.reachable,
            since: health.since,
            hosts,
        })
    }

    /// Counters, decisions by reason and session events, with one page of
    /// the rule hits of `nic` (or of every bound NIC).
    pub(super) fn stats(&mut self, nic: Option<&str>, page: &StatsPage) -> Answer {
        if let Some(n) = nic {
            self.state.nic(n).map_err(err)?;
        }
        let names: Vec<String> = match nic {
            Some(n) => vec![n.to_owned()],
            None => self.state.nics.keys().cloned().collect(),
        };
        let dp = self.reconciler.dataplane();
        let counters = Counters::read(dp.maps()).map_err(unavailable)?;
        let mut nics = BTreeMap::new();
        let (mut hits, mut shown) = (Vec::new(), 0);
        for name in names {
            if dp.nic_id(&name).is_none() {
                continue;
            }
            // The rule counters (four lookups per rank) are read only for
            // the NICs this page can show: none before the cursor's, none
            // once more rows than the page holds are in (names go in order).
            if page.reads(&name) && shown <= page.limit {
                let rows = rule_hit_rows(dp, &name).map_err(unavailable)?;
                shown += rows.iter().filter(|r| page.shows(r)).count();
                hits.extend(rows);
            }
            let counts = reason_rows(dp, &name).map_err(unavailable)?;
            let reasons = counts
                .into_iter()
                .map(|r| reply::ReasonCount {
                    dir: r.direction,
                    reason: r.reason,
                    packets: r.packets,
                })
                .collect();
            nics.insert(
                name,
                reply::NicStats {
                    rules: Vec::new(),
                    reasons,
                },
            );
        }
        let (shown, next) = page.select(hits);
        for h in shown {
            if let Some(n) = nics.get_mut(&h.nic) {
                n.rules.push(reply::RuleHit {
                    dir: h.direction,
                    rule: h.rule,
                    packets: h.packets,
                    bytes: h.bytes,
                });
            }
        }
        let sessions = dp
            .maps()
            .session_events()
            .map_err(unavailable)?
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        Ok(to_value(&reply::Stats {
            counters: counters.by_direction(),
            nics,
            sessions,
            drop_log: dp
                .maps()
                .drop_log_stats()
                .ok()
                .map(|d| reply::DropLogCounts {
                    logged: d.logged,
                    suppressed: d.suppressed,
                    ringbuf_full: d.ringbuf_full,
                }),
            next,
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

/// Differences as the replies show them.
fn drift_rows(drift: Vec<crate::dataplane::Drift>) -> Vec<reply::DriftRow> {
    drift
        .into_iter()
        .map(|d| reply::DriftRow {
            nic: d.nic,
            what: d.what,
            repair: to_value(&d.repair).as_str().unwrap_or("?").to_owned(),
        })
        .collect()
}

/// Which rule hits a `stats` page shows: a direction, a least packet
/// count, and where the page starts and how long it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StatsPage {
    dir: Option<String>,
    min_packets: u64,
    limit: usize,
    /// (NIC, direction, rule) of the last row of the page before.
    after: Option<(String, String, String)>,
}

impl StatsPage {
    /// Checks the request's paging fields, naming the one refused.
    pub(super) fn new(
        dir: Option<&str>,
        min_packets: Option<u64>,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<Self, crate::api::ApiError> {
        use crate::api::{ApiError, STATS_PAGE, STATS_PAGE_MAX};
        if let Some(d) = dir
            && !DIRS.contains(&d)
        {
            return Err(ApiError::invalid(
                "dir",
                format!("dir: {d:?} is neither ingress nor egress"),
            ));
        }
        let limit = limit.unwrap_or(STATS_PAGE);
        if limit == 0 || limit > STATS_PAGE_MAX {
            return Err(ApiError::invalid(
                "limit",
                format!("limit: {limit} rule-hit rows; a page holds 1 to {STATS_PAGE_MAX}"),
            ));
        }
        let after = after
            .map(|a| {
                let mut parts = a.splitn(3, '/');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(nic), Some(dir), Some(rule)) if DIRS.contains(&dir) => {
                        Ok((nic.to_owned(), dir.to_owned(), rule.to_owned()))
                    }
                    _ => Err(ApiError::invalid(
                        "after",
                        format!("after: {a:?} is not a page's next (NIC/direction/rule)"),
                    )),
                }
            })
            .transpose()?;
        Ok(Self {
            dir: dir.map(str::to_owned),
            min_packets: min_packets.unwrap_or(0),
            limit: limit as usize,
            after,
        })
    }

    /// Whether NIC `nic`'s rows can be on this page: it is not before the
    /// cursor's NIC.
    pub(super) fn reads(&self, nic: &str) -> bool {
        self.after
            .as_ref()
            .is_none_or(|(after, _, _)| nic >= after.as_str())
    }

    /// Whether row `r` passes the filters and comes after the cursor.
    fn shows(&self, r: &RuleHitRow) -> bool {
        r.packets >= self.min_packets
            && self.dir.as_deref().is_none_or(|d| d == r.direction)
            && self
                .after
                .as_ref()
                .is_none_or(|(nic, dir, rule)| row_key(r) > page_key(nic, dir, rule))
    }

    /// The rows of this page, in (NIC, direction, rule) order, ingress
    /// before egress; and the `next` of the page, if rows are left over.
    /// A key, not a position: a rule added or removed between two pages
    /// neither repeats nor hides another row.
    pub(super) fn select(&self, mut rows: Vec<RuleHitRow>) -> (Vec<RuleHitRow>, Option<String>) {
        rows.retain(|r| self.shows(r));
        rows.sort_by(|a, b| row_key(a).cmp(&row_key(b)));
        let next = (rows.len() > self.limit).then(|| {
            let last = &rows[self.limit - 1];
            format!("{}/{}/{}", last.nic, last.direction, last.rule)
        });
        rows.truncate(self.limit);
        (rows, next)
    }
}

/// The order of rule-hit rows: NIC, then ingress before egress, then rule.
fn page_key<'a>(nic: &'a str, dir: &str, rule: &'a str) -> (&'a str, bool, &'a str) {
    (nic, dir != DIRS[0], rule)
}

fn row_key(r: &RuleHitRow) -> (&str, bool, &str) {
    page_key(&r.nic, &r.direction, &r.rule)
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

#[cfg(test)]
mod tests {
    use super::{RuleHitRow, StatsPage};

    fn hit(nic: &str, dir: &str, rule: &str, packets: u64) -> RuleHitRow {
        RuleHitRow {
            nic: nic.into(),
            direction: dir.into(),
            rule: rule.into(),
            packets,
            bytes: packets * 100,
        }
    }

    fn keys(rows: &[RuleHitRow]) -> Vec<String> {
        rows.iter()
            .map(|r| format!("{}/{}/{}", r.nic, r.direction, r.rule))
            .collect()
    }

    fn rows() -> Vec<RuleHitRow> {
        vec![
            hit("v1", "egress", "sgr-a", 0),
            hit("v0", "egress", "sgr-b", 5),
            hit("v0", "ingress", "sgr-c", 1),
            hit("v0", "ingress", "sgr-a", 0),
        ]
    }

    #[test]
    fn stats_pages_go_by_nic_then_ingress_then_rule_and_resume_after_a_key() {
        let page = StatsPage::new(None, None, Some(2), None).unwrap();
        let (shown, next) = page.select(rows());
        assert_eq!(keys(&shown), ["v0/ingress/sgr-a", "v0/ingress/sgr-c"]);
        assert_eq!(next.as_deref(), Some("v0/ingress/sgr-c"));
        let page = StatsPage::new(None, None, Some(2), next.as_deref()).unwrap();
        let (shown, next) = page.select(rows());
        assert_eq!(keys(&shown), ["v0/egress/sgr-b", "v1/egress/sgr-a"]);
        assert_eq!(next, None, "nothing is left");
        // A page after a cursor reads no NIC before the cursor's.
        let page = StatsPage::new(None, None, Some(2), Some("v0/egress/sgr-b")).unwrap();
        assert!(!page.reads("u9") && page.reads("v0") && page.reads("v1"));
        // The row a cursor names may be gone: the page starts after its key.
        let page = StatsPage::new(None, None, Some(10), Some("v0/ingress/sgr-b")).unwrap();
        assert_eq!(keys(&page.select(rows()).0)[0], "v0/ingress/sgr-c");
    }

    #[test]
    fn stats_pages_filter_by_direction_and_packets() {
        let page = StatsPage::new(Some("egress"), Some(1), None, None).unwrap();
        assert_eq!(keys(&page.select(rows()).0), ["v0/egress/sgr-b"]);
        let page = StatsPage::new(None, Some(1), None, None).unwrap();
        assert_eq!(
            keys(&page.select(rows()).0),
            ["v0/ingress/sgr-c", "v0/egress/sgr-b"]
        );
    }

    #[test]
    fn stats_page_fields_are_refused_by_name() {
        for (dir, limit, after, field) in [
            (Some("up"), None, None, "dir"),
            (None, Some(0), None, "limit"),
            (None, Some(10_001), None, "limit"),
            (None, None, Some("v0/sideways/sgr-1"), "after"),
            (None, None, Some("v0"), "after"),
        ] {
            let e = StatsPage::new(dir, None, limit, after).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{e:?}");
        }
        // A rule text may hold a slash: only the first two split.
        let page = StatsPage::new(None, None, None, Some("v0/egress/a/b")).unwrap();
        assert_eq!(
            page.after,
            Some(("v0".into(), "egress".into(), "a/b".into()))
        );
    }
}

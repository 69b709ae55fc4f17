//! The Prometheus text endpoint: counters as text exposition format 0.0.4,
//! served over HTTP/1.1 (axum's router on hyper) on an opt-in (loopback by
//! default) address.
//!
//! Two halves, kept apart so the first is testable without root:
//! [`render`] turns plain data ([`MetricsInput`], gathered by the daemon from
//! the data plane) into text; [`serve`] answers `GET /metrics` with whatever
//! a callback renders. A connection's request head is read with a size limit
//! and a time limit, it is answered once and closed, one task per
//! connection and a bounded number of them: a slow or hostile client costs
//! one small task for a bounded time.

use std::{fmt::Write as _, io, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    http::{StatusCode, header},
    response::{IntoResponse as _, Response},
    routing::get,
};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};

use crate::dataplane::droplog::DropLogStats;

/// Hits of one rule (or default) on one NIC and direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleHitRow {
    /// NIC name.
    pub nic: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// The rule id, or what decided instead (e.g. `default: intra-group sg-…`).
    pub rule: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Packets of one NIC and direction decided for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonRow {
    /// NIC name.
    pub nic: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// A `sg_common::reason::NAMES` entry.
    pub reason: String,
    pub packets: u64,
}

/// What the agent was built from (`sg_build_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildInfo {
    /// The crate version.
    pub version: &'static str,
    /// The git commit (12 hex digits), or "unknown" (a source tarball).
    pub commit: &'static str,
    /// The compiler's version, as `rustc --version` prints it after "rustc ".
    pub rustc: &'static str,
    /// The target triple.
    pub target: &'static str,
}

impl BuildInfo {
    /// This binary's, as the build script found it (`build.rs`).
    pub const CURRENT: Self = Self {
        version: env!("CARGO_PKG_VERSION"),
        commit: or_unknown(option_env!("SG_AGENT_GIT_COMMIT")),
        rustc: or_unknown(option_env!("SG_AGENT_RUSTC")),
        target: or_unknown(option_env!("SG_AGENT_TARGET")),
    };
}

const fn or_unknown(value: Option<&'static str>) -> &'static str {
    match value {
        Some(v) => v,
        None => "unknown",
    }
}

/// Per-rule hit series shown by default (`--metrics-rule-series`): one per
/// NIC, direction and rule with hits, so enough for a host whose busy
/// rules number in the hundreds, and a bound on what a scrape costs
/// Prometheus when they number in the hundred thousands.
pub const DEFAULT_RULE_SERIES: usize = 1000;

/// The per-rule series a scrape shows: the rows with hits (a rule that
/// decided nothing is no series), at most `limit` of them, the most
/// packets (then bytes) chosen when over it. Returns them in the order
/// given, and how many rows with hits were left out. Ties are broken by
/// the order given, so the same counts choose the same series each time.
pub fn select_rule_series(rows: Vec<RuleHitRow>, limit: usize) -> (Vec<RuleHitRow>, u64) {
    let mut hit: Vec<(usize, RuleHitRow)> = rows
        .into_iter()
        .enumerate()
        .filter(|(_, r)| r.packets > 0)
        .collect();
    let dropped = hit.len().saturating_sub(limit);
    if dropped > 0 {
        hit.sort_by(|(i, a), (j, b)| {
            b.packets
                .cmp(&a.packets)
                .then(b.bytes.cmp(&a.bytes))
                .then(i.cmp(j))
        });
        hit.truncate(limit);
        hit.sort_by_key(|(i, _)| *i);
    }
    (hit.into_iter().map(|(_, r)| r).collect(), dropped as u64)
}

/// Everything the endpoint shows: plain data, read from the data plane by
/// the caller. Empty parts are left out of the output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsInput {
    /// What the agent was built from; the daemon gives [`BuildInfo::CURRENT`].
    pub build: Option<BuildInfo>,
    /// Parser counters: `(counter name, ingress hook, egress hook)`, as
    /// `Counters::rows` gives them.
    pub packets: Vec<(String, u64, u64)>,
    /// Per-rule hits: every row given is shown (the daemon chooses them
    /// with [`select_rule_series`]).
    pub rule_hits: Vec<RuleHitRow>,
    /// Rules with hits left out of `rule_hits` by the series limit.
    pub rule_series_dropped: Option<u64>,
    pub reasons: Vec<ReasonRow>,
    /// Session events: `(event name, count)`.
    pub session_events: Vec<(String, u64)>,
    /// The drop log's counters, when the data plane has one.
    pub drop_log: Option<DropLogStats>,
    /// Policy version in force per NIC: `(NIC name, version)`.
    pub policy_version: Vec<(String, u32)>,
    /// What is not brought to the policy: `(NIC name or a part such as
    /// `(settings)`, why)`.
    pub degraded: Vec<(String, String)>,
    /// The self-check's counts, once the daemon has one.
    pub self_check: Option<SelfCheckCounts>,
    /// A fleet store's health, on a host of a fleet.
    pub fleet: Option<FleetCounts>,
    /// Whether the maps could be read for this scrape, and how often they
    /// could not over every scrape.
    pub scrape: Option<ScrapeHealth>,
}

/// A part of the data plane a scrape reads back from the kernel; a read
/// that fails is counted under the part's name. The other families come
/// from the agent's own memory (policy versions, degraded NICs, the
/// self-check's counts, the fleet store's health) and cannot fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScrapePart {
    /// The hooks' packet counters (`sg_packets_total`).
    Counters,
    /// A NIC's per-rule hits (`sg_rule_hits_*`).
    RuleHits,
    /// A NIC's decisions by reason (`sg_decisions_total`).
    Reasons,
    /// The session table's events (`sg_session_events_total`).
    Sessions,
    /// The drop log's counters (`sg_drop_log_events_total`).
    DropLog,
}

impl ScrapePart {
    /// Every part, in the order they are shown.
    pub const ALL: [Self; 5] = [
        Self::Counters,
        Self::RuleHits,
        Self::Reasons,
        Self::Sessions,
        Self::DropLog,
    ];

    /// The `part` label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Counters => "counters",
            Self::RuleHits => "rule_hits",
            Self::Reasons => "reasons",
            Self::Sessions => "sessions",
            Self::DropLog => "drop_log",
        }
    }
}

/// Failed reads by part, over every scrape since the agent started: kept
/// by the daemon, counted once per failed read (a per-NIC part once per
/// NIC it failed for).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrapeErrors {
    totals: [u64; ScrapePart::ALL.len()],
}

impl ScrapeErrors {
    /// Counts one failed read of `part`.
    pub fn count(&mut self, part: ScrapePart) {
        self.totals[part as usize] += 1;
    }

    /// Failed reads of `part` so far.
    pub fn total(&self, part: ScrapePart) -> u64 {
        self.totals[part as usize]
    }
}

/// The scrape's own health (`sg_scrape_errors_total`, `sg_scrape_partial`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrapeHealth {
    /// Failed reads over every scrape, this one's included.
    pub errors: ScrapeErrors,
    /// Some read of this scrape failed: a family (or a NIC's series of
    /// one) is missing from it.
    pub partial: bool,
}

/// What a host of a fleet says of its store and the other hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetCounts {
    /// The store answers.
    pub reachable: bool,
    /// The store revision in force here.
    pub revision: i64,
    /// Live hosts (this one among them, once it recorded itself).
    pub hosts_live: u64,
    /// The most store revisions any live host is behind this one.
    pub behind_max: i64,
}

/// The drift check's counts (`sg-agent verify` and the periodic self-check).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SelfCheckCounts {
    pub runs: u64,
    /// Differences found, over all runs.
    pub drift_total: u64,
    /// Differences the last run found.
    pub last_drift: u64,
    /// Runs that could not read the maps.
    pub errors: u64,
}

/// The `Content-Type` of text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One metric family: `# HELP`, `# TYPE`, then its samples, written only if
/// it has any.
struct Family<'a> {
    name: &'a str,
    help: &'a str,
    kind: &'a str,
}

impl Family<'_> {
    fn write<L, V>(&self, out: &mut String, samples: impl IntoIterator<Item = (L, V)>)
    where
        L: AsRef<[(&'static str, String)]>,
        V: std::fmt::Display,
    {
        let mut samples = samples.into_iter().peekable();
        if samples.peek().is_none() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (labels, value) in samples {
            out.push_str(self.name);
            let labels = labels.as_ref();
            if !labels.is_empty() {
                out.push('{');
                for (i, (name, value)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{name}=\"{}\"", escape_label(value));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {value}");
        }
    }
}

/// The metrics as Prometheus text exposition format 0.0.4: every family
/// with a `# HELP` and a `# TYPE` line once, its samples together, names
/// prefixed `sg_`, label values escaped.
pub fn render(input: &MetricsInput) -> String {
    let mut out = String::new();
    render_build(input, &mut out);
    render_packets(input, &mut out);
    render_rules(input, &mut out);
    render_health(input, &mut out);
    Family {
        name: "sg_policy_version",
        help: "Policy version in force on each NIC (changes on every policy switch).",
        kind: "gauge",
    }
    .write(
        &mut out,
        input
            .policy_version
            .iter()
            .map(|(nic, v)| ([("nic", nic.clone())], *v)),
    );
    out
}

/// What the agent was built from.
fn render_build(input: &MetricsInput, out: &mut String) {
    Family {
        name: "sg_build_info",
        help: "1, labelled with the agent's version, git commit, compiler and target.",
        kind: "gauge",
    }
    .write(
        out,
        input.build.map(|b| {
            (
                [
                    ("version", b.version.to_owned()),
                    ("commit", b.commit.to_owned()),
                    ("rustc", b.rustc.to_owned()),
                    ("target", b.target.to_owned()),
                ],
                1,
            )
        }),
    );
}

/// The packet counters of the hooks, the session events and the drop log.
fn render_packets(input: &MetricsInput, out: &mut String) {
    Family {
        name: "sg_packets_total",
        help: "Packets the data plane parsed, by hook direction and parser counter (every packet, its class, markers, malformations).",
        kind: "counter",
    }
    .write(
        out,
        input.packets.iter().flat_map(|(counter, rx, tx)| {
            [("ingress", rx), ("egress", tx)].map(|(side, n)| {
                (
                    [
                        ("hook_direction", side.to_owned()),
                        ("counter", counter.clone()),
                    ],
                    *n,
                )
            })
        }),
    );
    Family {
        name: "sg_session_events_total",
        help: "Session table events (created, expired, revoked, reopened, insert_failed, revalidated).",
        kind: "counter",
    }
    .write(
        out,
        input
            .session_events
            .iter()
            .map(|(event, n)| ([("event", event.clone())], *n)),
    );
    Family {
        name: "sg_drop_log_events_total",
        help: "Dropped packets the drop log logged, suppressed by its rate limit, or lost to a full ring buffer.",
        kind: "counter",
    }
    .write(
        out,
        input.drop_log.iter().flat_map(|s| {
            s.rows()
                .map(|(outcome, n)| ([("outcome", outcome.to_owned())], n))
        }),
    );
}

/// Per NIC and direction: hits of each rule, and decisions by reason.
fn render_rules(input: &MetricsInput, out: &mut String) {
    let hits = |what: fn(&RuleHitRow) -> u64| {
        input.rule_hits.iter().map(move |r| {
            (
                [
                    ("nic", r.nic.clone()),
                    ("direction", r.direction.clone()),
                    ("rule", r.rule.clone()),
                ],
                what(r),
            )
        })
    };
    Family {
        name: "sg_rule_hits_packets_total",
        help: "Packets decided by each rule or default, per NIC and policy direction.",
        kind: "counter",
    }
    .write(out, hits(|r| r.packets));
    Family {
        name: "sg_rule_hits_bytes_total",
        help: "Bytes of the packets decided by each rule or default, per NIC and policy direction.",
        kind: "counter",
    }
    .write(out, hits(|r| r.bytes));
    Family {
        name: "sg_rule_series_dropped",
        help: "Rules with hits (per NIC and direction) left out of sg_rule_hits_* by the series limit (--metrics-rule-series).",
        kind: "gauge",
    }
    .write(
        out,
        input
            .rule_series_dropped
            .map(|n| ([] as [(&'static str, String); 0], n)),
    );
    Family {
        name: "sg_decisions_total",
        help: "Packets decided, per NIC, policy direction and reason.",
        kind: "counter",
    }
    .write(
        out,
        input.reasons.iter().map(|r| {
            (
                [
                    ("nic", r.nic.clone()),
                    ("direction", r.direction.clone()),
                    ("reason", r.reason.clone()),
                ],
                r.packets,
            )
        }),
    );
}

/// The families of a host of a fleet: whether its store answers, and how
/// far the other hosts are.
fn render_fleet(input: &MetricsInput, out: &mut String) {
    let Some(f) = input.fleet else {
        return;
    };
    let none = || [] as [(&'static str, String); 0];
    for (name, help, value) in [
        (
            "sg_fleet_store_reachable",
            "1 while the fleet store (etcd) answers; 0 while it is away (the policy in force stays, changes are refused).",
            i64::from(f.reachable),
        ),
        (
            "sg_fleet_revision",
            "The fleet store revision whose policy this host has in force.",
            f.revision,
        ),
        (
            "sg_fleet_hosts_live",
            "Hosts of the fleet whose agents record what they have in force.",
            i64::try_from(f.hosts_live).unwrap_or(i64::MAX),
        ),
        (
            "sg_fleet_hosts_behind_max",
            "The most store revisions any live host is behind this one.",
            f.behind_max,
        ),
    ] {
        Family {
            name,
            help,
            kind: "gauge",
        }
        .write(out, [(none(), value)]);
    }
}

/// Whether this scrape read everything, and how many reads failed so far.
/// Every part is shown, 0 included, so a rate over the counter needs no
/// first failure to exist.
fn render_scrape(input: &MetricsInput, out: &mut String) {
    let Some(scrape) = input.scrape else {
        return;
    };
    Family {
        name: "sg_scrape_errors_total",
        help: "Reads of the kernel's maps that failed while gathering metrics, by part (rule_hits and reasons once per NIC), since the agent started.",
        kind: "counter",
    }
    .write(
        out,
        ScrapePart::ALL
            .map(|p| ([("part", p.name().to_owned())], scrape.errors.total(p))),
    );
    Family {
        name: "sg_scrape_partial",
        help: "1 if a read failed for this scrape, so some family or some NIC's series are missing from it; else 0.",
        kind: "gauge",
    }
    .write(
        out,
        [([] as [(&'static str, String); 0], u8::from(scrape.partial))],
    );
}

/// The families that say whether the agent is healthy: degraded NICs, the
/// drift check's counts, in a fleet its store's health, and the scrape's.
fn render_health(input: &MetricsInput, out: &mut String) {
    render_fleet(input, out);
    render_scrape(input, out);
    Family {
        name: "sg_healthy",
        help: "1 if every NIC is brought to the policy and the last self-check found the kernel holding exactly it, else 0.",
        kind: "gauge",
    }
    .write(
        out,
        input.self_check.map(|c| {
            let healthy = input.degraded.is_empty() && c.last_drift == 0;
            ([] as [(&'static str, String); 0], u8::from(healthy))
        }),
    );
    Family {
        name: "sg_degraded",
        help: "1 for each NIC (or part of the data plane) whose policy is not in force, with the reason.",
        kind: "gauge",
    }
    .write(
        out,
        input.degraded.iter().map(|(what, why)| {
            (
                [("nic", what.clone()), ("reason", why.clone())],
                1,
            )
        }),
    );
    for (name, help, kind, value) in [
        (
            "sg_self_checks_total",
            "Drift checks run (the periodic self-check and sg-agent verify).",
            "counter",
            (|c: &SelfCheckCounts| c.runs) as fn(&SelfCheckCounts) -> u64,
        ),
        (
            "sg_drift_found_total",
            "Differences between the kernel's maps and the policy the drift checks found (and repaired where they could).",
            "counter",
            |c| c.drift_total,
        ),
        (
            "sg_drift_last",
            "Differences the last drift check found.",
            "gauge",
            |c| c.last_drift,
        ),
        (
            "sg_self_check_errors_total",
            "Drift checks that could not read the maps.",
            "counter",
            |c| c.errors,
        ),
    ] {
        Family { name, help, kind }.write(
            out,
            input
                .self_check
                .iter()
                .map(|c| ([] as [(&'static str, String); 0], value(c))),
        );
    }
}

/// Refuses a listen address that is not loopback unless `allow_non_loopback`:
/// the endpoint has no authentication and no TLS.
pub fn check_listen_addr(addr: SocketAddr, allow_non_loopback: bool) -> Result<(), String> {
    if addr.ip().to_canonical().is_loopback() || allow_non_loopback {
        return Ok(());
    }
    Err(format!(
        "metrics listen address {addr} is not a loopback address: the endpoint has no \
         authentication or encryption, so it listens on 127.0.0.1 or [::1] unless \
         listening elsewhere is allowed explicitly"
    ))
}

/// What the endpoint answers `GET /metrics` with: called on the blocking
/// pool for every scrape (it may wait for the task that owns the maps).
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Limits that keep one client from holding the server up or bloating it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Largest request head (request line and headers) read; a longer one
    /// gets 431 and the connection closes (hyper's `max_header_size`).
    pub max_head: usize,
    /// Time a client has to send its whole request head; then it is dropped
    /// without an answer (hyper's `header_read_timeout`).
    pub read_timeout: Duration,
    /// Time the answer may take once the head is in: rendering (which may
    /// wait for the owner task) and writing it to a client that may not
    /// read. A connection lives at most `read_timeout + answer_timeout`.
    pub answer_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_head: 8 * 1024,
            read_timeout: Duration::from_secs(5),
            answer_timeout: Duration::from_secs(30),
            max_connections: 64,
        }
    }
}

/// Serves `GET /metrics` on `listener` with what `render` returns, with the
/// default [`ServeLimits`]. Runs until accepting fails for good.
pub async fn serve(listener: TcpListener, render: Render) -> io::Result<()> {
    serve_with(listener, render, ServeLimits::default()).await
}

/// The endpoint's routes: `GET` (and so `HEAD`) `/metrics`; axum answers
/// 405 with `Allow` for another method there and the fallback 404 elsewhere.
fn router(render: Render) -> Router {
    Router::new()
        .route("/metrics", get(move || page(Arc::clone(&render))))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: try /metrics\n") })
}

/// The rendered text as a 200 of exposition format 0.0.4.
async fn page(render: Render) -> Response {
    match tokio::task::spawn_blocking(move || render()).await {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => {
            log::warn!("metrics endpoint: rendering failed: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n").into_response()
        }
    }
}

/// [`serve`] with the given limits. The accept loop takes a slot of
/// `max_connections` before it accepts, so a flood of connections waits in
/// the kernel's backlog instead of in tasks; each accepted one is a task of
/// its own (`tokio::spawn`; works on a current-thread runtime) holding its
/// slot until it closes. Each connection answers one request and closes
/// (no keep-alive: a scraper asks once every few seconds).
pub async fn serve_with(
    listener: TcpListener,
    render: Render,
    limits: ServeLimits,
) -> io::Result<()> {
    let app = router(render);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .max_header_size(limits.max_head)
        .keep_alive(false);
    loop {
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .map_err(io::Error::other)?;
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) if transient(&e) => {
                log::warn!("metrics endpoint: accepting a connection: {e}");
                // Out of descriptors or memory: give the others time to close.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let lifetime = limits.read_timeout + limits.answer_timeout;
        tokio::spawn(async move {
            match tokio::time::timeout(lifetime, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::debug!("metrics endpoint: {e}"),
                Err(_) => {
                    log::debug!("metrics endpoint: a connection outlived {lifetime:?}; closed");
                }
            }
            drop(permit);
        });
    }
}

/// Accept errors that concern one connection or a passing shortage, not the
/// listener.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::OutOfMemory
    ) || matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EPROTO)
    )
}

//! The Prometheus text endpoint: counters as text exposition format 0.0.4,
//! served over a minimal HTTP/1.1 server on an opt-in (loopback by default)
//! address.
//!
//! Two halves, kept apart so the first is testable without root:
//! [`render`] turns plain data ([`MetricsInput`], gathered by the daemon from
//! the data plane) into text; [`serve`] answers `GET /metrics` with whatever
//! a callback renders. The server reads a request head with a size limit and
//! a time limit, answers once and closes, one task per connection: a slow or
//! hostile client costs one small task for at most the time limit.

use std::{fmt::Write as _, io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

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

/// Everything the endpoint shows: plain data, read from the data plane by
/// the caller. Empty parts are left out of the output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsInput {
    /// Parser counters: `(counter name, ingress hook, egress hook)`, as
    /// `Counters::rows` gives them.
    pub packets: Vec<(String, u64, u64)>,
    pub rule_hits: Vec<RuleHitRow>,
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
    Family {
        name: "sg_packets_total",
        help: "Packets the data plane parsed, by hook direction and parser counter (every packet, its class, markers, malformations).",
        kind: "counter",
    }
    .write(
        &mut out,
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
    .write(&mut out, hits(|r| r.packets));
    Family {
        name: "sg_rule_hits_bytes_total",
        help: "Bytes of the packets decided by each rule or default, per NIC and policy direction.",
        kind: "counter",
    }
    .write(&mut out, hits(|r| r.bytes));
    Family {
        name: "sg_decisions_total",
        help: "Packets decided, per NIC, policy direction and reason.",
        kind: "counter",
    }
    .write(
        &mut out,
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
    Family {
        name: "sg_session_events_total",
        help: "Session table events (created, expired, revoked, reopened, insert_failed, revalidated).",
        kind: "counter",
    }
    .write(
        &mut out,
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
        &mut out,
        input.drop_log.iter().flat_map(|s| {
            s.rows()
                .map(|(outcome, n)| ([("outcome", outcome.to_owned())], n))
        }),
    );
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

/// The families that say whether the agent is healthy: degraded NICs, the
/// drift check's counts, and in a fleet its store's health.
fn render_health(input: &MetricsInput, out: &mut String) {
    render_fleet(input, out);
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

/// Limits that keep one client from holding the server up or bloating it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Largest request head (request line and headers) read; a longer one
    /// gets 431 and the connection closes.
    pub max_head: usize,
    /// Time a client has to send its whole request head; then it is dropped.
    pub read_timeout: Duration,
    /// Time the response may take to be written (a client that does not read).
    pub write_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_head: 8 * 1024,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            max_connections: 64,
        }
    }
}

/// Serves `GET /metrics` on `listener` with what `render` returns, with the
/// default [`ServeLimits`]. Runs until accepting fails for good.
pub async fn serve(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> io::Result<()> {
    serve_with(listener, render, ServeLimits::default()).await
}

/// [`serve`] with the given limits. Each connection is a task of its own
/// (`tokio::spawn`; works on a current-thread runtime); `render` runs on the
/// blocking pool, since it may read kernel maps.
pub async fn serve_with(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    limits: ServeLimits,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
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
        let render = Arc::clone(&render);
        tokio::spawn(async move {
            if let Err(e) = connection(stream, render, limits).await {
                log::debug!("metrics endpoint: {e}");
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

/// How reading a request head ended.
enum Head {
    /// The head, up to and without the blank line.
    Complete(String),
    /// Longer than the limit.
    TooLarge,
    /// The client closed first.
    Closed,
}

/// Reads until the blank line ending the head, at most `max` bytes.
async fn read_head(stream: &mut TcpStream, max: usize) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(1024.min(max));
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        let searched_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_blank_line(&buf[searched_from..]) {
            let head = &buf[..searched_from + end];
            if head.len() > max {
                return Ok(Head::TooLarge);
            }
            return Ok(Head::Complete(String::from_utf8_lossy(head).into_owned()));
        }
        if buf.len() > max {
            return Ok(Head::TooLarge);
        }
    }
}

/// Where the first `\r\n\r\n` (or a bare `\n\n`) starts.
fn find_blank_line(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find(|&i| buf[i..].starts_with(b"\r\n\r\n") || buf[i..].starts_with(b"\n\n"))
}

/// One connection: read the head, answer, close.
async fn connection(
    mut stream: TcpStream,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    limits: ServeLimits,
) -> io::Result<()> {
    let head =
        match tokio::time::timeout(limits.read_timeout, read_head(&mut stream, limits.max_head))
            .await
        {
            // Too slow: drop it without a word.
            Err(_) => return Ok(()),
            Ok(head) => head?,
        };
    let response = match head {
        Head::Closed => return Ok(()),
        Head::TooLarge => respond(
            431,
            "Request Header Fields Too Large",
            &[],
            "request head too large\n",
        ),
        Head::Complete(head) => answer(&head, &render).await,
    };
    let write = async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(limits.write_timeout, write)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "writing the response"))??;
    // Whatever the client sent beyond the head (a body we ignore) would make
    // closing reset the connection, and the client could lose the response:
    // read it away briefly first.
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        let mut sink = [0u8; 1024];
        let mut left = 64 * 1024usize;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
    Ok(())
}

/// The response to a complete request head.
async fn answer(head: &str, render: &Arc<dyn Fn() -> String + Send + Sync>) -> Vec<u8> {
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return respond(400, "Bad Request", &[], "bad request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return respond(400, "Bad Request", &[], "HTTP/1.x only\n");
    }
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        return respond(404, "Not Found", &[], "not found: try /metrics\n");
    }
    match method {
        "GET" | "HEAD" => {
            let render = Arc::clone(render);
            match tokio::task::spawn_blocking(move || render()).await {
                Ok(body) => {
                    let mut r = respond(200, "OK", &[("Content-Type", CONTENT_TYPE)], &body);
                    if method == "HEAD" {
                        r.truncate(r.len() - body.len());
                    }
                    r
                }
                Err(e) => {
                    log::warn!("metrics endpoint: rendering failed: {e}");
                    respond(500, "Internal Server Error", &[], "rendering failed\n")
                }
            }
        }
        _ => respond(
            405,
            "Method Not Allowed",
            &[("Allow", "GET, HEAD")],
            "method not allowed\n",
        ),
    }
}

/// A whole response: status line, headers, `Connection: close`, body.
fn respond(code: u16, reason: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {code} {reason}\r\n");
    let has_type = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if !has_type {
        head.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    }
    let _ = write!(
        head,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

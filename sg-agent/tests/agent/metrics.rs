//! The Prometheus text endpoint without root: what `render` writes is valid
//! text exposition (checked line by line by a small parser written here), and
//! the server answers, refuses and hangs up as it should.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use sg_agent::{
    dataplane::droplog::DropLogStats,
    metrics::{
        BuildInfo, CONTENT_TYPE, MetricsInput, ReasonRow, RuleHitRow, ScrapeErrors, ScrapeHealth,
        ScrapePart, ServeLimits, check_listen_addr, render, select_rule_series, serve_with,
    },
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

/// A NIC name no one would choose, with every character the format escapes.
const AWKWARD: &str = "we\"ird\\nic\nname";

fn input() -> MetricsInput {
    MetricsInput {
        build: None,
        packets: vec![("packets".into(), 10, 20), ("tcp".into(), 7, 3)],
        rule_hits: vec![
            RuleHitRow {
                nic: "web-1".into(),
                direction: "ingress".into(),
                rule: "r-1".into(),
                packets: 5,
                bytes: 370,
            },
            RuleHitRow {
                nic: AWKWARD.into(),
                direction: "ingress".into(),
                rule: "default: intra-group sg-12".into(),
                packets: 2,
                bytes: 148,
            },
        ],
        reasons: vec![ReasonRow {
            nic: "web-1".into(),
            direction: "egress".into(),
            reason: "port_25".into(),
            packets: 4,
        }],
        session_events: vec![("created".into(), 9), ("expired".into(), 1)],
        drop_log: Some(DropLogStats {
            logged: 5,
            suppressed: 95,
            ringbuf_full: 0,
        }),
        rule_series_dropped: None,
        policy_version: vec![("web-1".into(), 42)],
        degraded: Vec::new(),
        self_check: None,
        fleet: None,
        scrape: None,
    }
}

/// A sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `{a="x",b="y"}` (after the metric name), unescaping values; returns
/// the labels and the rest of the line.
fn labels(s: &str) -> (BTreeMap<String, String>, &str) {
    let mut out = BTreeMap::new();
    let Some(mut rest) = s.strip_prefix('{') else {
        return (out, s);
    };
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return (out, r);
        }
        let eq = rest.find('=').expect("label name ends with =");
        let name = &rest[..eq];
        assert!(
            valid_name(name) && !name.starts_with("__"),
            "label name {name:?}"
        );
        rest = rest[eq + 1..].strip_prefix('"').expect("quoted value");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next().expect("closing quote");
            match c {
                '"' => break i,
                '\\' => match chars.next().expect("escaped char").1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => panic!("bad escape \\{other}"),
                },
                '\n' => panic!("raw newline in a label value"),
                c => value.push(c),
            }
        };
        assert!(
            out.insert(name.to_owned(), value).is_none(),
            "label {name} twice"
        );
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Checks `text` line by line against text exposition format 0.0.4 and
/// returns its samples.
fn parse(text: &str) -> Vec<Sample> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "ends with a newline"
    );
    let mut helped = BTreeSet::new();
    let mut typed = BTreeMap::new();
    let mut finished = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, tail) = (
                parts.next().unwrap(),
                parts.next().expect("a metric name"),
                parts.next().expect("help text or type"),
            );
            assert!(valid_name(name), "{line}");
            assert!(
                !finished.contains(name),
                "{name} comes back after others: {line}"
            );
            if current.as_deref() != Some(name)
                && let Some(done) = current.replace(name.to_owned())
            {
                finished.insert(done);
            }
            match kw {
                "HELP" => {
                    assert!(helped.insert(name.to_owned()), "HELP twice for {name}");
                    assert!(!tail.contains('\n'));
                }
                "TYPE" => {
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&tail),
                        "{line}"
                    );
                    assert!(
                        typed.insert(name.to_owned(), tail.to_owned()).is_none(),
                        "TYPE twice for {name}"
                    );
                    assert!(
                        !samples.iter().any(|(n, _, _): &Sample| n == name),
                        "TYPE after samples of {name}"
                    );
                }
                _ => panic!("unknown comment {line}"),
            }
            continue;
        }
        assert!(!line.is_empty() && !line.starts_with('#'), "line {line:?}");
        let name_end = line.find(['{', ' ']).expect("a value");
        let name = &line[..name_end];
        assert!(valid_name(name), "{line}");
        assert_eq!(
            current.as_deref(),
            Some(name),
            "sample outside its family: {line}"
        );
        assert!(typed.contains_key(name) && helped.contains(name), "{line}");
        let (labels, rest) = labels(&line[name_end..]);
        let value = rest.strip_prefix(' ').expect("space before the value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        assert!(
            !samples
                .iter()
                .any(|(n, l, _): &Sample| n == name && *l == labels),
            "duplicate series {line}"
        );
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = want
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .iter()
        .find(|(n, l, _)| n == name && *l == want)
        .map(|(_, _, v)| *v)
}

#[test]
fn render_writes_valid_exposition_with_every_value() {
    let text = render(&input());
    let s = parse(&text);
    assert!(s.iter().all(|(n, _, _)| n.starts_with("sg_")), "{text}");
    let v = |name, labels: &[(&str, &str)]| value(&s, name, labels);
    assert_eq!(
        v(
            "sg_packets_total",
            &[("hook_direction", "ingress"), ("counter", "tcp")]
        ),
        Some(7.0)
    );
    assert_eq!(
        v(
            "sg_packets_total",
            &[("hook_direction", "egress"), ("counter", "packets")]
        ),
        Some(20.0)
    );
    let hit = [("nic", "web-1"), ("direction", "ingress"), ("rule", "r-1")];
    assert_eq!(v("sg_rule_hits_packets_total", &hit), Some(5.0));
    assert_eq!(v("sg_rule_hits_bytes_total", &hit), Some(370.0));
    // Escaped on the way out, the same string on the way back in.
    let awkward = [
        ("nic", AWKWARD),
        ("direction", "ingress"),
        ("rule", "default: intra-group sg-12"),
    ];
    assert_eq!(v("sg_rule_hits_bytes_total", &awkward), Some(148.0));
    assert!(text.contains(r#"nic="we\"ird\\nic\nname""#), "{text}");
    assert_eq!(
        v(
            "sg_decisions_total",
            &[
                ("nic", "web-1"),
                ("direction", "egress"),
                ("reason", "port_25")
            ]
        ),
        Some(4.0)
    );
    assert_eq!(
        v("sg_session_events_total", &[("event", "created")]),
        Some(9.0)
    );
    assert_eq!(
        v("sg_drop_log_events_total", &[("outcome", "logged")]),
        Some(5.0)
    );
    assert_eq!(
        v("sg_drop_log_events_total", &[("outcome", "suppressed")]),
        Some(95.0)
    );
    assert_eq!(
        v("sg_drop_log_events_total", &[("outcome", "ringbuf_full")]),
        Some(0.0)
    );
    assert_eq!(v("sg_policy_version", &[("nic", "web-1")]), Some(42.0));
    assert!(text.contains("# TYPE sg_policy_version gauge\n"), "{text}");
    assert!(
        text.contains("# TYPE sg_decisions_total counter\n"),
        "{text}"
    );
}

#[test]
fn render_leaves_out_what_it_was_not_given() {
    assert_eq!(render(&MetricsInput::default()), "");
    let only_versions = MetricsInput {
        policy_version: vec![("a".into(), 1)],
        ..MetricsInput::default()
    };
    let text = render(&only_versions);
    assert_eq!(parse(&text).len(), 1);
    assert!(!text.contains("sg_drop_log"), "{text}");
}

#[test]
fn listen_addresses_other_than_loopback_need_permission() {
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert_eq!(check_listen_addr(addr("127.0.0.1:9477"), false), Ok(()));
    assert_eq!(check_listen_addr(addr("127.8.9.1:9477"), false), Ok(()));
    assert_eq!(check_listen_addr(addr("[::1]:9477"), false), Ok(()));
    assert_eq!(
        check_listen_addr(addr("[::ffff:127.0.0.1]:9477"), false),
        Ok(())
    );
    for refused in ["0.0.0.0:9477", "10.0.0.1:9477", "[::]:9477"] {
        let err = check_listen_addr(addr(refused), false).unwrap_err();
        assert!(err.contains(refused) && err.contains("loopback"), "{err}");
        assert_eq!(check_listen_addr(addr(refused), true), Ok(()));
    }
}

/// A server on 127.0.0.1 with `limits`, serving `render(&input())`.
async fn server(limits: ServeLimits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = render(&input());
    tokio::spawn(serve_with(listener, Arc::new(move || body.clone()), limits));
    addr
}

fn quick() -> ServeLimits {
    ServeLimits {
        max_head: 1024,
        read_timeout: Duration::from_millis(400),
        ..ServeLimits::default()
    }
}

/// Sends `request` and reads until the server closes; `None` if it reset
/// the connection instead.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Option<String> {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out))
        .await
        .expect("the server closes the connection");
    read.ok().map(|_| String::from_utf8(out).unwrap())
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let (head, _) = response.split_once("\r\n\r\n")?;
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn get_metrics_answers_with_the_rendered_text() {
    let addr = server(quick()).await;
    let r = exchange(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n",
    )
    .await
    .expect("a response");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert_eq!(header(&r, "content-type"), Some(CONTENT_TYPE));
    assert_eq!(header(&r, "connection"), Some("close"));
    let body = r.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(body, render(&input()));
    assert_eq!(
        header(&r, "content-length"),
        Some(body.len().to_string().as_str())
    );
    // A query string is no different path; an HTTP/1.0 client is answered
    // in its own version.
    let r = exchange(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    assert!(r.starts_with("HTTP/1.0 200 OK\r\n"), "{r}");
    // HEAD: the same head, no body.
    let r = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert_eq!(header(&r, "content-type"), Some(CONTENT_TYPE));
    assert_eq!(r.split_once("\r\n\r\n").unwrap().1, "");
}

#[tokio::test]
async fn other_paths_are_not_found_and_other_methods_not_allowed() {
    let addr = server(quick()).await;
    let r = exchange(addr, b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
    let r = exchange(addr, b"GET /metricsx HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
    let r = exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
    let allowed: BTreeSet<&str> = header(&r, "allow")
        .expect("an Allow header")
        .split(',')
        .map(str::trim)
        .collect();
    assert_eq!(allowed, BTreeSet::from(["GET", "HEAD"]));
    let r = exchange(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
    let r = exchange(addr, b"nonsense\r\n\r\n").await.unwrap();
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
}

#[tokio::test]
async fn an_oversized_head_is_refused_at_once() {
    // A long time limit: the refusal must come from the size.
    let limits = ServeLimits {
        read_timeout: Duration::from_secs(30),
        ..quick()
    };
    let addr = server(limits).await;
    let start = Instant::now();
    let mut request = b"GET /metrics HTTP/1.1\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'x', 4096));
    // No blank line: the server must not wait for one.
    let r = exchange(addr, &request).await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // Refused with 431, or reset because it closed on unread bytes.
    if let Some(r) = r {
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    }
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_timeout() {
    let addr = server(quick()).await;
    let start = Instant::now();
    let mut c = TcpStream::connect(addr).await.unwrap();
    // Meanwhile the server answers others.
    let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "blocked by the silent one"
    );
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("dropped within the time limit")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a response");
    assert!(
        start.elapsed() >= Duration::from_millis(350),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let addr = server(ServeLimits {
        max_connections: 1,
        ..quick()
    })
    .await;
    let start = Instant::now();
    // Holds the only slot until its head times out (400 ms).
    let _silent = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    assert!(
        start.elapsed() >= Duration::from_millis(350),
        "answered beside the one holding the only slot: {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_client_trickling_its_head_is_dropped_after_the_timeout() {
    let addr = server(quick()).await;
    let start = Instant::now();
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut closed = false;
    for _ in 0..50 {
        // One byte every 50 ms, never the blank line: the limit is on the
        // whole head, not on each read.
        if c.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut buf = [0u8; 16];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(1), c.read(&mut buf)).await {
            assert!(matches!(r, Ok(0) | Err(_)), "no response expected");
            closed = true;
            break;
        }
    }
    assert!(closed, "still open after {:?}", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn degraded_nics_and_the_self_checks_are_exported() {
    // Issue 12 items 1 and 15: a degraded agent says so in its metrics.
    let healthy = MetricsInput {
        self_check: Some(sg_agent::metrics::SelfCheckCounts {
            runs: 3,
            drift_total: 0,
            last_drift: 0,
            errors: 0,
        }),
        ..MetricsInput::default()
    };
    let text = render(&healthy);
    assert!(text.contains("sg_healthy 1\n"), "{text}");
    assert!(text.contains("sg_self_checks_total 3\n"), "{text}");
    assert!(!text.contains("sg_degraded{"), "{text}");
    let sick = MetricsInput {
        degraded: vec![("web-1".into(), "map SG_ADDR4: ENOMEM".into())],
        self_check: Some(sg_agent::metrics::SelfCheckCounts {
            runs: 4,
            drift_total: 2,
            last_drift: 2,
            errors: 1,
        }),
        ..MetricsInput::default()
    };
    let text = render(&sick);
    assert!(text.contains("sg_healthy 0\n"), "{text}");
    assert!(
        text.contains("sg_degraded{nic=\"web-1\",reason=\"map SG_ADDR4: ENOMEM\"} 1"),
        "{text}"
    );
    assert!(text.contains("sg_drift_found_total 2\n"), "{text}");
    assert!(text.contains("sg_drift_last 2\n"), "{text}");
    assert!(text.contains("sg_self_check_errors_total 1\n"), "{text}");
    parse(&text);
}

#[test]
fn a_fleet_host_says_whether_its_store_answers_and_how_far_the_others_are() {
    let away = MetricsInput {
        fleet: Some(sg_agent::metrics::FleetCounts {
            reachable: false,
            revision: 41,
            hosts_live: 3,
            behind_max: 2,
        }),
        ..MetricsInput::default()
    };
    let text = render(&away);
    for line in [
        "sg_fleet_store_reachable 0\n",
        "sg_fleet_revision 41\n",
        "sg_fleet_hosts_live 3\n",
        "sg_fleet_hosts_behind_max 2\n",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    parse(&text);
    // A single host has no fleet families.
    assert!(!render(&MetricsInput::default()).contains("sg_fleet"));
}

#[test]
fn build_info_is_one_labelled_with_what_the_agent_was_built_from() {
    let build = BuildInfo {
        version: "9.8.7",
        commit: "0123456789ab",
        rustc: "1.99.1 (58cf8f9c3 2026-01-01)",
        target: "x86_64-unknown-linux-gnu",
    };
    let text = render(&MetricsInput {
        build: Some(build),
        ..MetricsInput::default()
    });
    let s = parse(&text);
    assert_eq!(s.len(), 1, "{text}");
    assert_eq!(
        value(
            &s,
            "sg_build_info",
            &[
                ("version", "9.8.7"),
                ("commit", "0123456789ab"),
                ("rustc", "1.99.1 (58cf8f9c3 2026-01-01)"),
                ("target", "x86_64-unknown-linux-gnu"),
            ]
        ),
        Some(1.0)
    );
    assert!(text.contains("# TYPE sg_build_info gauge\n"), "{text}");
    // This binary's: the crate version, and a commit that is either
    // "unknown" (built from a tarball) or hexadecimal.
    let current = BuildInfo::CURRENT;
    assert_eq!(current.version, env!("CARGO_PKG_VERSION"));
    assert!(
        current.commit == "unknown" || current.commit.chars().all(|c| c.is_ascii_hexdigit()),
        "{current:?}"
    );
    assert!(!current.target.is_empty() && !current.rustc.is_empty());
}

#[test]
fn a_scrape_that_could_not_read_a_part_says_so_and_shows_the_rest() {
    let mut errors = ScrapeErrors::default();
    // Two NICs' hits failed in one scrape, the drop log in an earlier one.
    errors.count(ScrapePart::DropLog);
    errors.count(ScrapePart::RuleHits);
    errors.count(ScrapePart::RuleHits);
    assert_eq!(errors.total(ScrapePart::RuleHits), 2);
    let partial = MetricsInput {
        scrape: Some(ScrapeHealth {
            errors,
            partial: true,
        }),
        rule_hits: Vec::new(),
        ..input()
    };
    let text = render(&partial);
    let s = parse(&text);
    let errors_of = |part| value(&s, "sg_scrape_errors_total", &[("part", part)]);
    assert_eq!(errors_of("rule_hits"), Some(2.0));
    assert_eq!(errors_of("drop_log"), Some(1.0));
    // Every part is there from the start, at 0: a rate needs no first error.
    for part in ["counters", "reasons", "sessions"] {
        assert_eq!(errors_of(part), Some(0.0), "{part}: {text}");
    }
    assert_eq!(value(&s, "sg_scrape_partial", &[]), Some(1.0));
    assert!(text.contains("# TYPE sg_scrape_errors_total counter\n"));
    assert!(text.contains("# TYPE sg_scrape_partial gauge\n"));
    // What was read is still shown.
    assert!(text.contains("sg_decisions_total{"), "{text}");
    assert!(text.contains("sg_packets_total{"), "{text}");
    assert!(!text.contains("sg_rule_hits_"), "{text}");

    let whole = MetricsInput {
        scrape: Some(ScrapeHealth {
            errors,
            partial: false,
        }),
        ..MetricsInput::default()
    };
    let text = render(&whole);
    assert!(text.contains("sg_scrape_partial 0\n"), "{text}");
    // The counter does not fall back when a later scrape reads everything.
    assert!(
        text.contains("sg_scrape_errors_total{part=\"rule_hits\"} 2\n"),
        "{text}"
    );
    parse(&text);
}

fn hit_row(nic: &str, rule: &str, packets: u64, bytes: u64) -> RuleHitRow {
    RuleHitRow {
        nic: nic.into(),
        direction: "ingress".into(),
        rule: rule.into(),
        packets,
        bytes,
    }
}

fn rules_of(rows: &[RuleHitRow]) -> Vec<&str> {
    rows.iter().map(|r| r.rule.as_str()).collect()
}

#[test]
fn rules_without_hits_are_no_series() {
    let rows = vec![
        hit_row("a", "r-idle", 0, 0),
        hit_row("a", "r-busy", 3, 200),
        hit_row("b", "r-idle", 0, 0),
    ];
    let (shown, dropped) = select_rule_series(rows, 1000);
    assert_eq!(rules_of(&shown), ["r-busy"]);
    assert_eq!(dropped, 0, "an idle rule is not left out, it has no series");
}

#[test]
fn over_the_series_limit_the_most_packets_are_shown_in_their_order() {
    let rows = vec![
        hit_row("a", "r-1", 10, 1000),
        hit_row("a", "r-2", 500, 100),
        hit_row("a", "r-3", 1, 60),
        hit_row("b", "r-4", 70, 9000),
        hit_row("b", "r-5", 0, 0),
        // As many packets as r-4: more bytes wins.
        hit_row("b", "r-6", 70, 9500),
    ];
    let (shown, dropped) = select_rule_series(rows.clone(), 3);
    // Chosen by packets (r-2, r-6, r-4), shown in the order given.
    assert_eq!(rules_of(&shown), ["r-2", "r-4", "r-6"]);
    assert_eq!(dropped, 2, "r-1 and r-3; r-5 had no hits");
    // At the limit exactly: nothing left out, nothing reordered.
    let (shown, dropped) = select_rule_series(rows.clone(), 5);
    assert_eq!(rules_of(&shown), ["r-1", "r-2", "r-3", "r-4", "r-6"]);
    assert_eq!(dropped, 0);
    // Equal counts choose the same, the first given, every time.
    let ties = vec![hit_row("a", "r-x", 5, 5), hit_row("a", "r-y", 5, 5)];
    assert_eq!(rules_of(&select_rule_series(ties, 1).0), ["r-x"]);
    // A limit of 0 shows none.
    let (shown, dropped) = select_rule_series(rows, 0);
    assert_eq!(rules_of(&shown), [] as [&str; 0]);
    assert_eq!(dropped, 5);
}

#[test]
fn the_series_left_out_are_counted_in_a_gauge() {
    let (shown, dropped) = select_rule_series(
        vec![hit_row("a", "r-1", 1, 1), hit_row("a", "r-2", 2, 2)],
        1,
    );
    let text = render(&MetricsInput {
        rule_hits: shown,
        rule_series_dropped: Some(dropped),
        ..MetricsInput::default()
    });
    let s = parse(&text);
    assert_eq!(
        value(&s, "sg_rule_series_dropped", &[]),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE sg_rule_series_dropped gauge\n"),
        "{text}"
    );
    let r2 = [("nic", "a"), ("direction", "ingress"), ("rule", "r-2")];
    assert_eq!(value(&s, "sg_rule_hits_packets_total", &r2), Some(2.0));
    assert_eq!(
        s.iter()
            .filter(|(n, _, _)| n == "sg_rule_hits_packets_total")
            .count(),
        1
    );
    // Nothing left out is said too.
    let text = render(&MetricsInput {
        rule_series_dropped: Some(0),
        ..MetricsInput::default()
    });
    assert_eq!(text.lines().last(), Some("sg_rule_series_dropped 0"));
}

//! Observing a running daemon (issue 5 item 6): the opt-in Prometheus text
//! endpoint on loopback, and dropped packets logged through the ring buffer
//! into the agent's log, with the NIC's name and the deciding rule's id.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

use sg_tests::{daemon::Daemon, probe, topology::Pair};

use crate::support::bin;

/// GET /metrics on loopback in the agent's own namespace (this process's),
/// where the endpoint listens: not in the namespace it serves.
fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A loopback port free now (so tests pass beside another agent's endpoint).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn metrics_endpoint_and_drop_log() {
    let pair = Pair::new().unwrap();
    let (client, b) = (&pair.a, &pair.b);
    let servers = probe::Servers::start(&b.ns).unwrap();
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let mut d = Daemon::start(
        bin(),
        b.ns.name(),
        &["--metrics", &metrics, "--drop-log", "100/100"],
    )
    .unwrap();
    // Issue 12 item 13: the endpoint opened inside the served (workload)
    // namespace, where any local user could read rule ids and counters.
    let inside =
        b.ns.exec(move || TcpStream::connect(("127.0.0.1", port)).is_ok())
            .unwrap();
    assert!(
        !inside,
        "the metrics endpoint answers inside the workload's namespace"
    );
    let g = d.group("web");
    d.allow_tcp(&g, servers.tcp_port);
    let deny = d.json(&[
        "rule",
        "add",
        &g,
        "--direction",
        "ingress",
        "--protocol",
        "UDP",
        "--port-range",
        "1/65535",
        "--peer",
        "10.77.0.1",
        "--policy",
        "Drop",
    ]);
    let deny = deny["ids"][0].as_str().unwrap().to_owned();
    // A rule no packet meets: it has no series.
    let idle = d.allow_tcp_from(&g, 9, "10.99.0.0/24");
    d.bind(&b.ifname, &["10.77.0.2"], &g);
    assert!(
        probe::tcp(
            &client.ns,
            SocketAddr::new(IpAddr::V4(b.v4), servers.tcp_port)
        )
        .allowed()
    );
    assert!(
        !probe::udp(
            &client.ns,
            SocketAddr::new(IpAddr::V4(b.v4), servers.udp_port)
        )
        .allowed()
    );

    // The drop reaches the log with the NIC's name and the Drop rule's id.
    let line = d
        .wait_log(&format!("rule={deny}"), Duration::from_secs(10))
        .expect("a drop log line naming the rule");
    assert!(line.contains(&format!("nic={}", b.ifname)), "{line}");
    assert!(
        line.contains("10.77.0.1:") && line.contains(&format!("10.77.0.2:{}", servers.udp_port)),
        "{line}"
    );

    // The endpoint serves the same counters as `stats`.
    let page = scrape(port);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let hits = page
        .lines()
        .find(|l| l.starts_with("sg_rule_hits_packets_total") && l.contains(&deny))
        .unwrap_or_else(|| panic!("no hit series for {deny}:\n{page}"));
    let n: f64 = hits.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{hits}");
    assert!(
        !page.contains(&idle),
        "a rule without hits is shown:\n{page}"
    );
    assert!(page.contains("\nsg_rule_series_dropped 0\n"), "{page}");
    assert!(
        page.contains("sg_drop_log_events_total{outcome=\"logged\"}"),
        "{page}"
    );
    assert!(
        page.contains(&format!("sg_policy_version{{nic=\"{}\"}}", b.ifname)),
        "{page}"
    );
    let stats = d.json(&["stats"]);
    assert!(
        stats["drop_log"]["logged"].as_u64().unwrap() >= 1,
        "{stats}"
    );

    // With a series limit of 1, the two rules with hits make one series,
    // and the page says one was left out. (Rule counters start again at
    // zero in an agent that adopts the data plane: docs/daemon.md.)
    d.stop(libc::SIGTERM).unwrap();
    d.restart_with(&["--metrics-rule-series", "1"]).unwrap();
    let tcp = SocketAddr::new(IpAddr::V4(b.v4), servers.tcp_port);
    assert!(probe::tcp(&client.ns, tcp).allowed());
    let udp = SocketAddr::new(IpAddr::V4(b.v4), servers.udp_port);
    assert!(!probe::udp(&client.ns, udp).allowed());
    let page = scrape(port);
    let series: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("sg_rule_hits_packets_total{"))
        .collect();
    assert_eq!(series.len(), 1, "{page}");
    assert!(page.contains("\nsg_rule_series_dropped 1\n"), "{page}");
}

#[test]
fn metrics_refuse_a_public_address_unless_asked() {
    let pair = Pair::new().unwrap();
    let err = Daemon::start(bin(), pair.b.ns.name(), &["--metrics", "0.0.0.0:9469"])
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("never logged"), "{err:#}");
    let out = std::process::Command::new(bin())
        .args([
            "run",
            "--netns",
            pair.b.ns.name(),
            "--metrics",
            "0.0.0.0:9469",
            "--store",
            "/nonexistent/x.db",
        ])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("--metrics") && e.contains("loopback"),
        "{e}"
    );
}

/// The value of the one sample of `page` that starts with `series` (the
/// metric name with its labels, as rendered), if there is one.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_scrape_that_cannot_read_a_nics_hits_says_so_and_answers_with_the_rest() {
    let pair = Pair::new().unwrap();
    let (client, b) = (&pair.a, &pair.b);
    let servers = probe::Servers::start(&b.ns).unwrap();
    // A second NIC in the served namespace: one end of a veth pair whose
    // both ends stay there.
    let broken = "sgm-broken";
    b.ns.ip(&[
        "link",
        "add",
        broken,
        "type",
        "veth",
        "peer",
        "name",
        "sgm-brokenp",
    ])
    .unwrap();
    for n in [broken, "sgm-brokenp"] {
        b.ns.ip(&["link", "set", n, "up"]).unwrap();
    }
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let mut d = Daemon::start(bin(), b.ns.name(), &["--metrics", &metrics]).unwrap();
    let g = d.group("web");
    let allow = d.allow_tcp(&g, servers.tcp_port);
    d.bind(&b.ifname, &["10.77.0.2"], &g);
    d.bind(broken, &["10.77.9.2"], &g);
    // From now on every read of the broken NIC's rule counters fails.
    d.stop(libc::SIGTERM).unwrap();
    d.restart_env(
        &[],
        &[(
            "SG_AGENT_FAULT_MAP_READ",
            &format!("{}@{broken}", sg_common::maps::RULE_STATS),
        )],
    )
    .unwrap();
    let to = SocketAddr::new(IpAddr::V4(b.v4), servers.tcp_port);
    assert!(probe::tcp(&client.ns, to).allowed());

    let page = scrape(port);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let errors = |page: &str, part: &str| {
        sample(page, &format!("sg_scrape_errors_total{{part=\"{part}\"}}"))
    };
    assert_eq!(errors(&page, "rule_hits"), Some(1.0), "{page}");
    for part in ["counters", "reasons", "sessions", "drop_log"] {
        assert_eq!(errors(&page, part), Some(0.0), "{part}: {page}");
    }
    assert_eq!(sample(&page, "sg_scrape_partial"), Some(1.0), "{page}");
    // The other NIC's hits, and the broken one's other families, are there.
    let hit = format!(
        "sg_rule_hits_packets_total{{nic=\"{}\",direction=\"ingress\",rule=\"{allow}\"}}",
        b.ifname
    );
    assert!(sample(&page, &hit).is_some_and(|n| n >= 1.0), "{page}");
    assert!(
        !page.contains(&format!("sg_rule_hits_packets_total{{nic=\"{broken}\"")),
        "{page}"
    );
    assert!(
        page.contains(&format!("sg_policy_version{{nic=\"{broken}\"}}")),
        "{page}"
    );
    assert!(page.contains("sg_packets_total{"), "{page}");

    // Cumulative: the next scrape (past the 1 s the text is kept) fails
    // again and counts again, and still answers.
    std::thread::sleep(Duration::from_millis(1200));
    let page = scrape(port);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert_eq!(errors(&page, "rule_hits"), Some(2.0), "{page}");
    assert_eq!(sample(&page, "sg_scrape_partial"), Some(1.0), "{page}");
}

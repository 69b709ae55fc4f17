//! `sg-agent sessions list` and `flush` against a running daemon, as an
//! operator runs them: separate processes, the daemon serving one namespace.

use std::net::{IpAddr, SocketAddr};

use sg_tests::{daemon::Daemon, probe, topology::Pair};

use crate::support::bin;

#[test]
fn sessions_are_listed_and_flushed_through_the_daemon() {
    let pair = Pair::new().unwrap();
    let (a, b) = (&pair.a, &pair.b);
    let servers = probe::Servers::start_on(&a.ns, 8080).unwrap();
    let d = Daemon::start(bin(), b.ns.name(), &[]).unwrap();
    // b may only go out; replies come back by session.
    let g = d.group("out");
    d.bind(&b.ifname, &["10.77.0.2", "fd77::2"], &g);
    assert_eq!(d.json(&["sessions", "list"]), serde_json::json!([]));
    assert!(probe::udp(&b.ns, SocketAddr::new(IpAddr::V4(a.v4), servers.udp_port)).allowed());
    assert!(probe::ping(&b.ns, IpAddr::V6(a.v6), 1).allowed());
    // Inbound stays closed: nothing but sessions lets packets in.
    assert!(!probe::udp(&a.ns, SocketAddr::new(IpAddr::V4(b.v4), 9)).allowed());
    let list = d.json(&["sessions", "list"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:#?}");
    let udp = list
        .iter()
        .find(|x| x["protocol"] == "udp")
        .expect("a UDP session");
    assert_eq!(udp["nic"], b.ifname.as_str());
    assert_eq!(udp["a"], b.v4.to_string(), "b sent the first packet");
    assert_eq!(udp["b"], a.v4.to_string());
    assert_eq!(udp["b_port"], 8080);
    assert_eq!(udp["direction"], "egress");
    assert!(udp["version"].as_u64().unwrap() >= 1);
    assert!(list.iter().any(|x| x["protocol"] == "icmpv6"));
    let table = d.ok(&["sessions", "list"]);
    assert!(
        table.contains(&a.v4.to_string()) && table.contains("8080"),
        "{table}"
    );
    // Flushing needs a filter or --all; a filter takes only what it matches.
    let refused = d.fails(&["sessions", "flush"]);
    assert!(refused.contains("--all"), "{refused}");
    d.ok(&["sessions", "flush", "--proto", "udp", "--port", "8080"]);
    assert_eq!(d.json(&["sessions", "list"]).as_array().unwrap().len(), 1);
    d.ok(&["sessions", "flush", "--nic", &b.ifname]);
    assert_eq!(d.json(&["sessions", "list"]), serde_json::json!([]));
    let unknown = d.fails(&["sessions", "list", "--nic", "nosuch0"]);
    assert!(unknown.contains("nosuch0"), "{unknown}");
}

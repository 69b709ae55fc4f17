//! The daemon's API through the CLI, as an operator uses it (issue 5 items 1,
//! 3, 6 and 7): clear errors, the socket's permissions, declarative apply
//! with a dry run, all or nothing; trace and stats; snapshots and restore in
//! force on the data plane at once.

use std::{
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt as _,
};

use sg_tests::{daemon::Daemon, probe, topology::Pair};

use crate::support::{bin, doc};

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn errors_socket_and_declarative_apply() {
    let pair = Pair::new().unwrap();
    let d = Daemon::start(bin(), pair.b.ns.name(), &[]).unwrap();
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    // Errors reach the user verbatim, naming the field and the limit.
    let g = d.group("web");
    let e = d.fails(&[
        "rule",
        "add",
        &g,
        "--direction",
        "ingress",
        "--protocol",
        "TCP",
        "--port-range",
        "22/22",
        "--peer",
        "10.0.0.0/8",
        "--priority",
        "101",
    ]);
    assert!(e.contains("rule.priority") && e.contains("100"), "{e}");
    let e = d.fails(&[
        "rule",
        "add",
        &g,
        "--direction",
        "ingress",
        "--protocol",
        "TCP",
        "--port-range",
        "22/22",
        "--peer",
        "10.0.0.1/8",
    ]);
    assert!(e.contains("rule.peer") && e.contains("10.0.0.1/8"), "{e}");
    let e = d.fails(&["group", "show", "sg-doesnotexist"]);
    assert!(e.contains("does not exist"), "{e}");

    // A whole state: dry run shows the diff and changes nothing.
    let yaml = doc(
        &d.dir,
        "want.yaml",
        &format!(
            "groups:\n  - name: web\n    type: basic\n    rules:\n      - {{direction: ingress, policy: Accept, protocol: TCP, port_range: 80/80, peer: 0.0.0.0/0}}\n  - name: db\n    type: basic\n    rules:\n      - {{direction: ingress, policy: Accept, protocol: TCP, port_range: 5432/5432, peer: web}}\nnics:\n  - {{name: {}, mode: local, addresses: [10.77.0.2], groups: [web, db]}}\n",
            pair.b.ifname
        ),
    );
    let dry = d.ok(&["apply", "-f", &yaml, "--dry-run"]);
    assert!(
        dry.contains("+ group") && dry.contains("+ rule") && dry.contains("+ nic"),
        "{dry}"
    );
    assert_eq!(
        d.json(&["group", "list"]).as_array().unwrap().len(),
        1,
        "dry run changed nothing"
    );
    d.ok(&["apply", "-f", &yaml]);
    let groups = d.json(&["group", "list"]);
    assert_eq!(groups.as_array().unwrap().len(), 2);
    assert_eq!(
        d.json(&["group", "show", &g])["group"]["rules"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "web kept its id"
    );
    // The same document again: nothing to do.
    let again = d.ok(&["apply", "-f", &yaml, "--dry-run"]);
    assert!(again.contains("no changes"), "{again}");
    // Export, then apply the export: a no-op (JSON this time).
    let exported = d.ok(&["export"]);
    let json = doc(&d.dir, "export.json", &exported);
    assert!(
        d.ok(&["apply", "-f", &json, "--dry-run"])
            .contains("no changes")
    );
    // All or nothing: a document with one bad rule changes nothing at all.
    let bad = doc(
        &d.dir,
        "bad.yaml",
        "groups:\n  - name: web\n    type: basic\n    rules: []\n  - name: other\n    type: basic\n    rules:\n      - {direction: ingress, policy: Accept, protocol: TCP, port_range: 70000/70000, peer: 0.0.0.0/0}\n",
    );
    let e = d.fails(&["apply", "-f", &bad]);
    assert!(e.contains("port_range"), "{e}");
    assert_eq!(
        d.json(&["group", "list"]),
        groups,
        "a refused apply left everything as it was"
    );
}

#[test]
fn trace_stats_and_snapshot_restore_in_force() {
    let pair = Pair::new().unwrap();
    let (client, server) = (&pair.a, &pair.b);
    let servers = probe::Servers::start(&server.ns).unwrap();
    let d = Daemon::start(bin(), server.ns.name(), &[]).unwrap();
    let port = servers.tcp_port.to_string();
    // Made in one change, so the group has no rules "before" to snapshot.
    let want = doc(
        &d.dir,
        "web.yaml",
        &format!(
            "groups:\n  - name: web\n    type: basic\n    rules:\n      - {{direction: ingress, policy: Accept, protocol: TCP, port_range: {port}/{port}, peer: 10.77.0.0/24}}\nnics:\n  - {{name: {}, mode: local, addresses: [10.77.0.2], groups: [web]}}\n",
            server.ifname
        ),
    );
    d.ok(&["apply", "-f", &want]);
    let g = d.json(&["group", "list"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rule = d.json(&["rule", "list", "--group", &g])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        d.json(&["snapshot", "list"]),
        serde_json::json!([]),
        "a new group has nothing to back up"
    );
    let web = SocketAddr::new(IpAddr::V4(server.v4), servers.tcp_port);
    assert!(probe::tcp(&client.ns, web).allowed());

    // trace names the deciding rule, and the default when none matches.
    let trace = |proto: &str, dport: &str| {
        let line = format!(
            "trace --nic {} --direction ingress --protocol {proto} --src 10.77.0.1 --dst 10.77.0.2 --sport 40000 --dport {dport} --json",
            server.ifname
        );
        serde_json::from_str::<serde_json::Value>(&d.line(&line)).unwrap()
    };
    let t = trace("TCP", &port);
    assert_eq!(t["verdict"], "accept", "{t}");
    assert_eq!(t["rule"], rule.as_str(), "{t}");
    let t = trace("UDP", "53");
    assert_eq!(t["verdict"], "drop", "{t}");
    assert_eq!(t["rule"], serde_json::Value::Null, "{t}");

    // stats: the rule's hits and drops by reason.
    assert!(
        !probe::udp(
            &client.ns,
            SocketAddr::new(IpAddr::V4(server.v4), servers.udp_port)
        )
        .allowed()
    );
    let s = d.json(&["stats", "--nic", &server.ifname]);
    let nic = &s["nics"][&server.ifname];
    let hits = nic["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["rule"] == rule.as_str())
        .cloned()
        .unwrap();
    assert!(hits["packets"].as_u64().unwrap() >= 1, "{s}");
    assert!(
        nic["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["reason"].as_str().unwrap().contains("default")
                && x["packets"].as_u64().unwrap() >= 1),
        "{s}"
    );
    assert!(d.ok(&["stats"]).contains(&rule), "the table names the rule");

    // Two changes in one 5-minute window: one snapshot, holding the rules
    // before the first.
    let window = || unix_now() / 300;
    let w1 = window();
    d.ok(&["rule", "remove", &g, &rule]);
    d.line(&format!(
        "rule add {g} --direction ingress --protocol UDP --port-range 1/1 --peer 10.77.0.0/24"
    ));
    let w2 = window();
    assert!(
        !probe::tcp(&client.ns, web).allowed(),
        "the rule is revoked"
    );
    let snaps = d.json(&["snapshot", "list"]);
    let snaps = snaps.as_array().unwrap();
    // Two only if the clock crossed into the next window meanwhile.
    assert!(
        snaps.len() == 1 || (w1 != w2 && snaps.len() == 2),
        "{snaps:?}"
    );
    let first = snaps.iter().min_by_key(|x| x["id"].as_u64()).unwrap();
    let id = first["id"].as_u64().unwrap().to_string();
    let shown = d.json(&["snapshot", "show", &id]);
    assert_eq!(shown["rules"].as_array().unwrap().len(), 1, "{shown}");
    assert_eq!(shown["rules"][0]["id"], rule.as_str(), "{shown}");
    d.ok(&["snapshot", "restore", &id]);
    assert!(
        probe::tcp(&client.ns, web).allowed(),
        "restored rules in force at once"
    );
    let rules = d.json(&["rule", "list", "--group", &g]);
    assert_eq!(rules.as_array().unwrap().len(), 1);
    assert_eq!(rules[0]["id"], rule.as_str());
}

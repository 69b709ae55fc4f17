//! Fleet mode (issue 14) with real parts: a real etcd on loopback, agents
//! serving namespaces of their own as hosts of one fleet, real traffic
//! between them. Every agent reaches etcd from its own namespace (the
//! test's), as `run` does before it enters the one it serves.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use sg_tests::{daemon::Daemon, etcd::Etcd, probe, topology::Pair};

use crate::support::bin;

/// `--store` for the fleet of `etcd`.
fn store_url(etcd: &Etcd) -> String {
    let eps: Vec<String> = etcd
        .endpoints()
        .iter()
        .map(|e| e.trim_start_matches("http://").to_owned())
        .collect();
    format!("etcd://{}", eps.join(","))
}

/// An agent of the fleet of `etcd`, host `host`, serving `ns`.
pub(crate) fn host(etcd: &Etcd, ns: &str, host: &str) -> Daemon {
    let url = store_url(etcd);
    Daemon::start(bin(), ns, &["--store", &url, "--host", host]).unwrap()
}

/// `rule add` of an ingress rule allowing TCP to `port` from the members of
/// group `peer`.
pub(crate) fn allow_from_group(d: &Daemon, group: &str, port: u16, peer: &str) -> String {
    d.allow_tcp_from(group, port, peer)
}

/// Two hosts of one fleet on a veth pair: db-1 serves TCP and UDP and admits
/// TCP from group `web` only; web-1's NIC is bound in `web`.
struct TwoHosts {
    pair: Pair,
    servers: probe::Servers,
    db: Daemon,
    web: Daemon,
    g_db: String,
    g_web: String,
    g_other: String,
}

impl TwoHosts {
    fn new(etcd: &Etcd) -> Self {
        let pair = Pair::new().unwrap();
        let servers = probe::Servers::start(&pair.b.ns).unwrap();
        let db = host(etcd, pair.b.ns.name(), "db-1");
        let web = host(etcd, pair.a.ns.name(), "web-1");
        let g_db = db.group("db");
        let g_web = db.group("web");
        let g_other = db.group("other");
        allow_from_group(&db, &g_db, servers.tcp_port, &g_web);
        db.bind(&pair.b.ifname, &[&pair.b.v4.to_string()], &g_db);
        web.bind(&pair.a.ifname, &[&pair.a.v4.to_string()], &g_web);
        let h = Self {
            pair,
            servers,
            db,
            web,
            g_db,
            g_web,
            g_other,
        };
        assert!(sg_tests::eventually(Duration::from_secs(5), || h.allowed()));
        assert!(h.denied());
        h
    }

    /// TCP from web-1 to db-1's server is admitted.
    fn allowed(&self) -> bool {
        let to = SocketAddr::new(IpAddr::V4(self.pair.b.v4), self.servers.tcp_port);
        probe::tcp(&self.pair.a.ns, to).allowed()
    }

    /// UDP from web-1 to db-1 is refused (no rule admits it).
    fn denied(&self) -> bool {
        let to = SocketAddr::new(IpAddr::V4(self.pair.b.v4), self.servers.udp_port);
        !probe::udp(&self.pair.a.ns, to).allowed()
    }

    /// `nic set-groups` of web-1's NIC to `group` only.
    fn web_in(&self, group: &str) {
        self.web
            .ok(&["nic", "set-groups", &self.pair.a.ifname, "--group", group]);
    }
}

#[test]
fn a_cross_host_group_peer_rule_admits_exactly_the_current_members() {
    let etcd = Etcd::single().unwrap();
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    let db = host(&etcd, pair.b.ns.name(), "db-1");
    let mut web = host(&etcd, pair.a.ns.name(), "web-1");
    // Groups are the fleet's: made on one host, used on the other.
    let g_db = db.group("db");
    let g_web = db.group("web");
    let g_other = web.group("other");
    allow_from_group(&db, &g_db, servers.tcp_port, &g_web);
    db.bind(&pair.b.ifname, &[&pair.b.v4.to_string()], &g_db);
    let to = SocketAddr::new(IpAddr::V4(pair.b.v4), servers.tcp_port);
    let admitted = || probe::tcp(&pair.a.ns, to).allowed();
    let becomes = |want: bool, what: &str| {
        assert!(
            sg_tests::eventually(Duration::from_secs(5), || admitted() == want),
            "{what}: db-1 {} web-1's NIC",
            if want {
                "does not admit"
            } else {
                "still admits"
            }
        );
    };
    // Not a member anywhere yet.
    assert!(!admitted(), "admitted before any member exists");
    // Bound on web-1 in another group: not a member.
    web.bind(&pair.a.ifname, &[&pair.a.v4.to_string()], &g_other);
    becomes(false, "bound in another group");
    // Joins web on web-1: db-1 admits it.
    web.ok(&["nic", "join", &pair.a.ifname, &g_web]);
    becomes(true, "joined web on its own host");
    // set-groups without web: out again.
    web.ok(&["nic", "set-groups", &pair.a.ifname, "--group", &g_other]);
    becomes(false, "left web by set-groups");
    web.ok(&["nic", "set-groups", &pair.a.ifname, "--group", &g_web]);
    becomes(true, "back in web");
    // Unbound: no member.
    web.ok(&["nic", "unbind", &pair.a.ifname]);
    becomes(false, "unbound on its host");
    // Each host lists the fleet's groups.
    let listed = web.json(&["group", "list"]);
    assert!(
        listed.to_string().contains(&g_db),
        "web-1 does not list db-1's group: {listed}"
    );
    // A change on one host is in force on every live host once `status
    // --wait fleet` returns.
    web.ok(&[
        "nic",
        "bind",
        &pair.a.ifname,
        "--mode",
        "local",
        "--group",
        &g_web,
        "--address",
        &pair.a.v4.to_string(),
    ]);
    let status = web.json(&["status", "--wait", "fleet", "--timeout", "10"]);
    let hosts = status["fleet"]["hosts"].as_array().expect("hosts").clone();
    assert_eq!(hosts.len(), 2, "{status}");
    assert!(hosts.iter().all(|h| h["behind"] == 0), "{status}");
    assert!(admitted(), "in force on db-1 once --wait fleet returned");
    // A live host cannot be removed; a host gone (its agent stopped and
    // the operator removing it) is no member any more.
    let refused = db.fails(&["host", "remove", "web-1"]);
    assert!(refused.contains("live"), "{refused}");
    let refused = db.fails(&["host", "remove", "db-1"]);
    assert!(refused.contains("this host"), "{refused}");
    web.stop(libc::SIGTERM).unwrap();
    let hosts = db.json(&["host", "list"]);
    let entry = hosts
        .as_array()
        .and_then(|h| h.iter().find(|h| h["host"] == "web-1"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (entry["live"].clone(), entry["nics"].clone()),
        (false.into(), 1.into()),
        "{hosts}"
    );
    assert!(admitted(), "a stopped agent's NICs stay members");
    db.ok(&["host", "remove", "web-1"]);
    becomes(false, "its host removed");
}

/// An agent holds whole only the other hosts' members of groups its own
/// NICs' groups name, and counts the rest (`sg_policy::census`): a rule
/// that comes to name a group, made here or on another host, brings its
/// members in; a host whose NICs are only counted is removed whole.
#[test]
fn members_only_counted_are_read_when_a_rule_comes_to_name_their_group() {
    let etcd = Etcd::single().unwrap();
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    let db = host(&etcd, pair.b.ns.name(), "db-1");
    let mut web = host(&etcd, pair.a.ns.name(), "web-1");
    let g_db = db.group("db");
    let g_web = db.group("web");
    let g_other = db.group("other");
    db.bind(&pair.b.ifname, &[&pair.b.v4.to_string()], &g_db);
    web.bind(&pair.a.ifname, &[&pair.a.v4.to_string()], &g_web);
    web.json(&["status", "--wait", "fleet", "--timeout", "10"]);
    let to = SocketAddr::new(IpAddr::V4(pair.b.v4), servers.tcp_port);
    let admitted = || probe::tcp(&pair.a.ns, to).allowed();
    assert!(!admitted(), "admitted with no rule");
    // db-1 counts web-1's NIC (no rule of db-1 names web); it still lists
    // it as web's member.
    let members = db.json(&["group", "show", &g_web])["members"].clone();
    assert_eq!(members, serde_json::json!([pair.a.ifname]), "{members}");
    // A rule made on db-1 that names web: its answer means in force there,
    // with web-1's NIC read whole.
    let rule = allow_from_group(&db, &g_db, servers.tcp_port, &g_web);
    assert!(admitted(), "a rule naming a counted group admits no member");
    db.ok(&["rule", "remove", &g_db, &rule]);
    assert!(
        sg_tests::eventually(Duration::from_secs(5), || !admitted()),
        "still admitted after the rule went"
    );
    assert!(
        db.wait_log(
            "reading their members on other hosts",
            Duration::from_secs(1)
        )
        .is_some(),
        "db-1 did not say it read web's members"
    );
    // Any change followed on db-1 counts web-1's NIC again there; then the
    // same rule made on web-1: db-1 follows it, reading the policy again.
    web.group("spare");
    web.json(&["status", "--wait", "fleet", "--timeout", "10"]);
    allow_from_group(&web, &g_db, servers.tcp_port, &g_web);
    assert!(
        sg_tests::eventually(Duration::from_secs(5), admitted),
        "db-1 does not admit web's member after another host's rule named web"
    );
    assert!(
        db.wait_log(
            "only counted; reading the policy again",
            Duration::from_secs(1)
        )
        .is_some(),
        "db-1 did not read the policy again"
    );
    // Out of web, web-1's NIC is counted again; its host gone and removed,
    // it is nobody's member.
    web.ok(&["nic", "set-groups", &pair.a.ifname, "--group", &g_other]);
    assert!(
        sg_tests::eventually(Duration::from_secs(5), || !admitted()),
        "admitted after leaving web"
    );
    web.stop(libc::SIGTERM).unwrap();
    db.ok(&["host", "remove", "web-1"]);
    let hosts = db.json(&["host", "list"]);
    assert!(
        !hosts.to_string().contains("web-1"),
        "web-1 is still listed: {hosts}"
    );
    let members = db.json(&["group", "show", &g_other])["members"].clone();
    assert_eq!(members, serde_json::json!([]), "{members}");
    // … and the store holds none of its keys.
    let again = host(&etcd, pair.a.ns.name(), "web-1");
    let nics = again.json(&["nic", "list"]);
    assert_eq!(nics, serde_json::json!([]), "{nics}");
}

#[test]
fn with_the_store_away_every_host_keeps_enforcing_refuses_changes_and_catches_up_after() {
    let mut etcd = Etcd::single().unwrap();
    let h = TwoHosts::new(&etcd);
    let leave_web = ["nic", "set-groups", &h.pair.a.ifname, "--group", &h.g_other];

    etcd.stop();
    let away = |d: &Daemon| d.json(&["status"])["fleet"]["store_reachable"] == false;
    assert!(
        sg_tests::eventually(Duration::from_secs(15), || away(&h.db) && away(&h.web)),
        "the hosts do not say the store is away"
    );
    // Fail-static: nothing is decided differently while it is away.
    for _ in 0..5 {
        assert!(
            h.allowed(),
            "an allowed connection was refused with the store away"
        );
        assert!(h.denied(), "a denied packet passed with the store away");
    }
    // Changes are refused, saying why; reads answer, marked stale.
    let refused = h.web.fails(&leave_web);
    assert!(refused.contains("unreachable"), "{refused}");
    let read = h.web.cli(&["group", "list"]);
    assert!(read.status.success());
    let warning = String::from_utf8_lossy(&read.stderr);
    assert!(warning.contains("unreachable"), "{warning}");
    assert!(h.allowed(), "the refused change took effect");

    etcd.restart().unwrap();
    assert!(
        sg_tests::eventually(Duration::from_secs(15), || !away(&h.db) && !away(&h.web)),
        "the hosts do not see the store back"
    );
    // Followed again: a change on web-1 is in force on db-1.
    h.web.ok(&leave_web);
    assert!(
        sg_tests::eventually(Duration::from_secs(5), || !h.allowed()),
        "db-1 did not follow a change made after the store came back"
    );
}

#[test]
fn an_agent_restarted_with_the_store_away_enforces_its_copy_and_catches_up_after_a_compaction() {
    let mut etcd = Etcd::single().unwrap();
    let mut h = TwoHosts::new(&etcd);
    // web-1's agent has kept its copy (within a second of a change).
    std::thread::sleep(Duration::from_millis(1500));
    h.web.stop(libc::SIGTERM).unwrap();
    // Changed while web-1's agent is down: it learns of it only later,
    // and not from the watch: the history since its copy is compacted.
    let late = h.db.group("made-while-web-1-was-down");
    // A stopped agent left the fleet's live hosts at once: nobody waits
    // for it.
    let status = h.db.json(&["status", "--wait", "fleet", "--timeout", "3"]);
    let hosts = status["fleet"]["hosts"].to_string();
    assert!(!hosts.contains("web-1"), "{hosts}");
    let now = etcd.etcdctl(&["get", "/", "-w", "json"]).unwrap();
    let revision = serde_json::from_str::<serde_json::Value>(&now).unwrap()["header"]["revision"]
        .as_i64()
        .expect("a revision");
    etcd.etcdctl(&["compact", &revision.to_string()]).unwrap();
    etcd.stop();
    let line = h.web.restart().unwrap();
    assert!(line.contains("serving"), "{line}");
    assert_eq!(
        h.web.json(&["status"])["fleet"]["store_reachable"],
        false,
        "started with the store away, it must say so"
    );
    // It enforces what it had in force, and answers from it (stale).
    assert!(
        h.allowed() && h.denied(),
        "decided differently after a restart with the store away"
    );
    let groups = h.web.cli(&["group", "list", "--json"]);
    let listed = String::from_utf8_lossy(&groups.stdout);
    assert!(
        listed.contains(&h.g_web) && !listed.contains(&late),
        "{listed}"
    );
    assert!(String::from_utf8_lossy(&groups.stderr).contains("unreachable"));

    etcd.restart().unwrap();
    assert!(
        sg_tests::eventually(Duration::from_secs(15), || {
            h.web.ok(&["group", "list", "--json"]).contains(&late)
        }),
        "web-1 did not catch up with what changed while it was away"
    );
    assert!(h.allowed() && h.denied());
}

#[test]
fn a_three_member_cluster_losing_its_leader_keeps_the_fleet_working() {
    let mut etcd = Etcd::three().unwrap();
    let h = TwoHosts::new(&etcd);
    let leader = etcd.leader().unwrap().expect("a leader");
    etcd.stop_member(leader);
    // Until the others elect a leader (a second or so; longer on a loaded
    // machine) the cluster takes no writes; then it does again.
    assert!(
        sg_tests::eventually(Duration::from_secs(20), || {
            etcd.leader().ok().flatten().is_some_and(|l| l != leader)
        }),
        "the two members left elected no leader"
    );
    // Changes go on, on both hosts, and are followed.
    h.web_in(&h.g_other);
    assert!(
        sg_tests::eventually(Duration::from_secs(10), || !h.allowed()),
        "a change made with one member down was not followed"
    );
    h.db.ok(&[
        "nic",
        "set-groups",
        &h.pair.b.ifname,
        "--group",
        &h.g_db,
        "--group",
        &h.g_other,
    ]);
    h.web_in(&h.g_web);
    assert!(sg_tests::eventually(Duration::from_secs(10), || h.allowed()));
    let status = h
        .web
        .json(&["status", "--wait", "fleet", "--timeout", "10"]);
    assert_eq!(status["fleet"]["store_reachable"], true, "{status}");
}

/// `--store` with TLS for the one member of `etcd`.
fn tls_url(etcd: &Etcd) -> String {
    format!(
        "etcds://{}",
        etcd.endpoint(0)
            .trim_start_matches("https://")
            .trim_start_matches("http://")
    )
}

#[test]
fn tls_with_a_client_certificate_is_required_and_works() {
    let etcd = Etcd::single_tls().unwrap();
    let tls = etcd.tls().expect("TLS files").clone();
    let pair = Pair::new().unwrap();
    let url = tls_url(&etcd);
    let path = |p: &std::path::Path| p.display().to_string();
    let (ca, cert, key) = (path(&tls.ca), path(&tls.client_cert), path(&tls.client_key));
    let d = Daemon::start(
        bin(),
        pair.b.ns.name(),
        &[
            "--store",
            &url,
            "--host",
            "db-1",
            "--etcd-ca",
            &ca,
            "--etcd-cert",
            &cert,
            "--etcd-key",
            &key,
        ],
    )
    .unwrap();
    let g = d.group("db");
    assert!(d.ok(&["group", "list", "--json"]).contains(&g));
    // Without a client certificate, or with one of another CA, the store
    // refuses the agent, and the agent refuses to start, naming the store.
    let copy = d.dir.join("no-copy.json").display().to_string();
    let (stranger, stranger_key) = (path(&tls.stranger_cert), path(&tls.stranger_key));
    for extra in [
        vec!["--etcd-ca", &ca],
        vec![
            "--etcd-ca",
            &ca,
            "--etcd-cert",
            &stranger,
            "--etcd-key",
            &stranger_key,
        ],
    ] {
        let mut args = vec!["--host", "db-2", "--fleet-cache", &copy];
        args.extend(extra);
        let e = d.refused_run(Some(std::path::Path::new(&url)), &args);
        assert!(e.contains("fleet store") && e.contains(&url), "{e}");
    }
}

#[test]
fn etcd_authentication_with_a_password_is_supported_and_a_wrong_one_refused() {
    let etcd = Etcd::single_auth().unwrap();
    let pair = Pair::new().unwrap();
    let url = store_url(&etcd);
    let dir = std::env::temp_dir().join(format!("sg-fleet-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good");
    std::fs::write(
        &good,
        format!("{}\n", etcd.root_password().expect("a password")),
    )
    .unwrap();
    let bad = dir.join("bad");
    std::fs::write(&bad, "not-the-password\n").unwrap();
    let good_s = good.display().to_string();
    let d = Daemon::start(
        bin(),
        pair.b.ns.name(),
        &[
            "--store",
            &url,
            "--host",
            "db-1",
            "--etcd-user",
            "root",
            "--etcd-password-file",
            &good_s,
        ],
    )
    .unwrap();
    let g = d.group("db");
    assert!(d.ok(&["group", "list", "--json"]).contains(&g));
    let copy = d.dir.join("no-copy.json").display().to_string();
    let bad_s = bad.display().to_string();
    let e = d.refused_run(
        Some(std::path::Path::new(&url)),
        &[
            "--host",
            "db-2",
            "--fleet-cache",
            &copy,
            "--etcd-user",
            "root",
            "--etcd-password-file",
            &bad_s,
        ],
    );
    assert!(e.contains("fleet store"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_single_hosts_export_applied_into_a_fleet_keeps_every_id() {
    let pair = Pair::new().unwrap();
    // A single host on SQLite, with groups, rules, a list and a binding.
    let alone = Daemon::start(bin(), pair.b.ns.name(), &[]).unwrap();
    let g_db = alone.group("db");
    let g_web = alone.group("web");
    allow_from_group(&alone, &g_db, 3306, &g_web);
    alone.allow_tcp(&g_web, 443);
    alone.ok(&[
        "prefix-list",
        "create",
        "office",
        "--family",
        "ipv4",
        "--max-entries",
        "4",
        "--entry",
        "192.0.2.0/24",
    ]);
    alone.bind(&pair.b.ifname, &[&pair.b.v4.to_string()], &g_db);
    let exported = alone.ok(&["export"]);
    drop(alone);

    let etcd = Etcd::single().unwrap();
    let fleet = host(&etcd, pair.b.ns.name(), "db-1");
    let doc = crate::support::doc(&fleet.dir, "export.yaml", &exported);
    fleet.ok(&["apply", "-f", &doc]);
    assert_eq!(
        fleet.ok(&["export"]),
        exported,
        "the fleet holds another state than the one exported"
    );
    // And another host of the fleet sees the same ids.
    let other = host(&etcd, pair.a.ns.name(), "web-1");
    let seen = other.json(&["group", "list"]).to_string();
    assert!(seen.contains(&g_db) && seen.contains(&g_web), "{seen}");
}

#[test]
fn a_change_naming_what_another_host_just_made_is_accepted_at_once() {
    // A group made on one host and named at once on another was refused as
    // not existing while the second host had not followed yet.
    let etcd = Etcd::single().unwrap();
    let pair = Pair::new().unwrap();
    let a = host(&etcd, pair.a.ns.name(), "a-1");
    let b = host(&etcd, pair.b.ns.name(), "b-1");
    let target = b.group("target");
    for i in 0..20 {
        let made = a.group(&format!("made-on-a-{i}"));
        allow_from_group(&b, &target, 1000 + i, &made);
    }
}

//! NIC lifecycle (issue 5 item 5), daemon driven through the CLI: a bound
//! veth deleted and made again is attached again by itself, and a NIC bound
//! before its interface exists is enforced once the interface appears.

use std::time::Duration;

use sg_tests::{daemon::Daemon, probe, topology::Pair};

use crate::support::{bin, enforced, open};

fn setup(d: &Daemon, port: u16) -> String {
    let g = d.group("web");
    d.allow_tcp(&g, port);
    g
}

#[test]
fn a_deleted_and_recreated_veth_is_attached_again() {
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    let d = Daemon::start(bin(), pair.b.ns.name(), &[]).unwrap();
    let g = setup(&d, servers.tcp_port);
    d.bind(&pair.b.ifname, &["10.77.0.2"], &g);
    assert!(enforced(&pair, &servers));
    let first = d.json(&["nic", "show", &pair.b.ifname]);
    assert_eq!(first["attached"], true);

    pair.a.ns.ip(&["link", "del", &pair.a.ifname]).unwrap();
    assert!(sg_tests::eventually(Duration::from_secs(5), || {
        d.json(&["nic", "show", &pair.b.ifname])["attached"] == false
    }));
    pair.recreate().unwrap();
    assert!(
        sg_tests::eventually(Duration::from_secs(10), || {
            d.json(&["nic", "show", &pair.b.ifname])["attached"] == true
        }),
        "not attached again"
    );
    let again = d.json(&["nic", "show", &pair.b.ifname]);
    assert_ne!(again["ifindex"], first["ifindex"], "a new interface index");
    assert!(sg_tests::eventually(Duration::from_secs(5), || enforced(
        &pair, &servers
    )));
}

#[test]
fn a_nic_bound_before_its_interface_exists_is_enforced_when_it_appears() {
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    pair.a.ns.ip(&["link", "del", &pair.a.ifname]).unwrap();
    let d = Daemon::start(bin(), pair.b.ns.name(), &[]).unwrap();
    let g = setup(&d, servers.tcp_port);
    d.bind(&pair.b.ifname, &["10.77.0.2"], &g);
    assert_eq!(d.json(&["nic", "show", &pair.b.ifname])["attached"], false);
    pair.recreate().unwrap();
    assert!(
        sg_tests::eventually(Duration::from_secs(10), || {
            d.json(&["nic", "show", &pair.b.ifname])["attached"] == true
        }),
        "not attached when it appeared"
    );
    assert!(sg_tests::eventually(Duration::from_secs(5), || enforced(
        &pair, &servers
    )));
    // And unbinding lets everything through again.
    d.ok(&["nic", "unbind", &pair.b.ifname]);
    assert!(open(&pair, &servers));
}

#[test]
fn an_interface_made_again_while_no_agent_runs_is_enforced_after_the_restart() {
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    let mut d = Daemon::start(bin(), pair.b.ns.name(), &[]).unwrap();
    let g = setup(&d, servers.tcp_port);
    d.bind(&pair.b.ifname, &["10.77.0.2"], &g);
    assert!(enforced(&pair, &servers));
    let first = d.json(&["nic", "show", &pair.b.ifname])["ifindex"].clone();
    d.stop(libc::SIGTERM).unwrap();
    // While no agent runs: the interface goes (and its links with it), and
    // comes back with a new index: nothing filters it yet.
    pair.a.ns.ip(&["link", "del", &pair.a.ifname]).unwrap();
    pair.recreate().unwrap();
    assert!(sg_tests::eventually(Duration::from_secs(5), || open(
        &pair, &servers
    )));
    // The restarted agent drops the stale binding and links, and enforces
    // the new interface.
    d.restart().unwrap();
    let now = d.json(&["nic", "show", &pair.b.ifname]);
    assert_eq!(now["attached"], true);
    assert_ne!(now["ifindex"], first);
    assert!(sg_tests::eventually(Duration::from_secs(5), || enforced(
        &pair, &servers
    )));
}

#[test]
fn pinned_maps_of_other_limits_are_refused_with_what_to_do() {
    let ns = sg_tests::topology::Netns::new("limits").unwrap();
    let mut d = Daemon::start(bin(), ns.name(), &[]).unwrap();
    d.stop(libc::SIGTERM).unwrap();
    let out = std::process::Command::new(bin())
        .args(["--socket"])
        .arg(&d.socket)
        .args([
            "run",
            "--netns",
            ns.name(),
            "--session-capacity",
            "1024",
            "--store",
        ])
        .arg(&d.store)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{e}");
    assert!(
        e.contains("--session-capacity") && e.contains("cleanup"),
        "{e}"
    );
    // With the limits it was made with, it starts again.
    d.restart().unwrap();
}

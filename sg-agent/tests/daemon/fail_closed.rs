//! Edges that used to fail open (issue 12 items 1, 2 and 4), each test named
//! after what broke, the daemon driven through the CLI with real traffic:
//! a second agent or a cleanup in a namespace another agent serves; a store
//! that is empty, missing, another one or behind what the kernel enforces;
//! an interface that appears after the agent started.

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use sg_tests::{daemon::Daemon, flow, probe, topology::Pair};

use crate::support::{bin, enforced, open};

/// A daemon serving `pair.b`, enforcing a group that allows the servers' TCP
/// port only.
fn enforcing(pair: &Pair, servers: &probe::Servers) -> Daemon {
    let d = Daemon::start(bin(), pair.b.ns.name(), &[]).unwrap();
    let g = d.group("web");
    d.allow_tcp(&g, servers.tcp_port);
    d.bind(&pair.b.ifname, &["10.77.0.2"], &g);
    assert!(enforced(pair, servers));
    d
}

fn pid_of(d: &Daemon) -> u64 {
    d.json(&["status"])["pid"].as_u64().expect("a pid")
}

#[test]
fn a_second_agent_in_the_namespace_is_refused_and_the_first_keeps_enforcing() {
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    let d = enforcing(&pair, &servers);
    let pid = pid_of(&d);
    // Another socket and another store: nothing of the first agent's is shared
    // but the namespace.
    let other = d.dir.join("other.db");
    let err = d.refused_run(Some(&other), &[]);
    assert!(
        err.contains("another sg-agent serves this network namespace")
            && err.contains(&format!("pid {pid}")),
        "{err}"
    );
    assert!(!other.exists(), "the refused agent made a store");
    assert!(
        enforced(&pair, &servers),
        "the first agent's policy was lost"
    );
    let nic = d.json(&["nic", "show", &pair.b.ifname]);
    assert_eq!(nic["attached"], true);
    // It still puts changes in force.
    d.ok(&["nic", "unbind", &pair.b.ifname]);
    assert!(open(&pair, &servers));
}

#[test]
fn cleanup_is_refused_while_an_agent_on_another_socket_serves_the_namespace() {
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    let mut d = enforcing(&pair, &servers);
    let pid = pid_of(&d);
    let out = std::process::Command::new(bin())
        .args([
            "--socket",
            "/nonexistent/sg-agent.sock",
            "cleanup",
            "--netns",
            pair.b.ns.name(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "cleanup ran under a live agent");
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert!(enforced(&pair, &servers), "cleanup removed enforcement");
    // Once the agent stops, cleanup works (and the policy stayed in force
    // while no agent ran).
    d.stop(libc::SIGTERM).unwrap();
    assert!(enforced(&pair, &servers));
    let out = d.cleanup();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The kernel frees a link whose pin went from a work queue: a
    // moment later on a busy machine.
    assert!(sg_tests::eventually(
        std::time::Duration::from_secs(2),
        || open(&pair, &servers)
    ));
}

#[test]
fn of_two_agents_started_at_once_exactly_one_serves() {
    let pair = Pair::new().unwrap();
    let started: Vec<anyhow::Result<Daemon>> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..2)
            .map(|_| s.spawn(|| Daemon::start(bin(), pair.b.ns.name(), &[])))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let serving = started.iter().filter(|r| r.is_ok()).count();
    assert_eq!(serving, 1, "agents serving one namespace");
}

#[test]
fn two_cleanups_racing_leave_nothing_behind_and_neither_fails_halfway() {
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    let mut d = enforcing(&pair, &servers);
    d.stop(libc::SIGTERM).unwrap();
    let netns = d.netns.clone();
    let outs: Vec<std::process::Output> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    std::process::Command::new(bin())
                        .args(["cleanup", "--netns", &netns])
                        .output()
                        .unwrap()
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for out in &outs {
        // Refused while the other holds the namespace, or done: never an
        // error from a half-removed directory.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("another sg-agent serves"),
            "{err}"
        );
    }
    assert!(outs.iter().any(|o| o.status.success()));
    let ino = pair
        .b
        .ns
        .exec(sg_agent::netns::current_inode)
        .unwrap()
        .unwrap();
    assert!(!sg_agent::dataplane::pin_root(ino).exists());
    // The kernel frees a link whose pin went from a work queue: a
    // moment later on a busy machine.
    assert!(sg_tests::eventually(
        std::time::Duration::from_secs(2),
        || open(&pair, &servers)
    ));
}

/// Truncates the daemon's store (and its journal) to nothing.
fn truncate_store(d: &Daemon) {
    for suffix in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", d.store.display()));
        if p.exists() {
            std::fs::write(&p, b"").unwrap();
        }
    }
}

#[test]
fn a_truncated_store_does_not_wipe_the_pinned_policy() {
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    let mut d = enforcing(&pair, &servers);
    d.stop(libc::SIGTERM).unwrap();
    truncate_store(&d);
    let err = d.refused_run(None, &[]);
    assert!(
        err.contains("refusing to start")
            && err.contains("holds no policy")
            && err.contains(&pair.b.ifname)
            && err.contains("--replace-enforced-policy"),
        "{err}"
    );
    assert!(enforced(&pair, &servers), "the policy in force was wiped");
    // Asked explicitly, the empty store's policy goes in force.
    d.restart_with(&["--replace-enforced-policy"]).unwrap();
    assert!(open(&pair, &servers));
    assert_eq!(d.json(&["nic", "list"]).as_array().map(Vec::len), Some(0));
}

#[test]
fn a_mistyped_store_path_does_not_wipe_the_pinned_policy() {
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    let mut d = enforcing(&pair, &servers);
    d.stop(libc::SIGTERM).unwrap();
    let typo = d.dir.join("stat.db");
    let err = d.refused_run(Some(&typo), &[]);
    assert!(
        err.contains("does not exist") && err.contains("stat.db"),
        "{err}"
    );
    assert!(!typo.exists(), "the refused agent made a store at the typo");
    assert!(enforced(&pair, &servers));
    // The right path goes on as before.
    d.restart().unwrap();
    assert!(enforced(&pair, &servers));
}

#[test]
fn a_store_behind_the_kernel_is_refused_as_lost_writes() {
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    let mut d = enforcing(&pair, &servers);
    d.stop(libc::SIGTERM).unwrap();
    // A copy of the store as it is now, as a backup or a file system that
    // lost the journal's last writes would have it.
    let files = ["", "-wal", "-shm"].map(|s| format!("{}{s}", d.store.display()));
    let saved: Vec<Option<Vec<u8>>> = files.iter().map(|f| std::fs::read(f).ok()).collect();
    d.restart().unwrap();
    // An acknowledged change after the copy: the UDP port is allowed too.
    let g = d.json(&["group", "list"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    d.ok(&[
        "rule",
        "add",
        &g,
        "--direction",
        "ingress",
        "--protocol",
        "UDP",
        "--port-range",
        &format!("{0}/{0}", servers.udp_port),
        "--peer",
        "10.77.0.0/24",
    ]);
    assert!(open(&pair, &servers));
    d.stop(libc::SIGTERM).unwrap();
    for (f, data) in files.iter().zip(&saved) {
        match data {
            Some(bytes) => std::fs::write(f, bytes).unwrap(),
            None => {
                let _ = std::fs::remove_file(f);
            }
        }
    }
    let err = d.refused_run(None, &[]);
    assert!(err.contains("behind generation"), "{err}");
    assert!(
        open(&pair, &servers),
        "the acknowledged change was reverted"
    );
}

#[test]
fn another_store_is_refused_over_a_pinned_policy() {
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    let mut d = enforcing(&pair, &servers);
    d.stop(libc::SIGTERM).unwrap();
    // A store with a policy of its own, made by an agent elsewhere.
    let elsewhere = Pair::new().unwrap();
    let mut e = Daemon::start(bin(), elsewhere.b.ns.name(), &[]).unwrap();
    e.group("other");
    e.stop(libc::SIGTERM).unwrap();
    let err = d.refused_run(Some(&e.store), &[]);
    assert!(err.contains("another store"), "{err}");
    assert!(enforced(&pair, &servers));
}

#[test]
fn a_cold_attach_lets_no_denied_datagram_through() {
    // The interface appears after the agent started, with its policy already
    // stored, and it is the agent's first attach: nothing may reach the
    // workload before the policy is in force.
    for round in 0..4 {
        let pair = Pair::new().unwrap();
        let servers = probe::Servers::start(&pair.b.ns).unwrap();
        pair.a.ns.ip(&["link", "del", &pair.a.ifname]).unwrap();
        let d = Daemon::start(bin(), pair.b.ns.name(), &[]).unwrap();
        let g = d.group("web");
        d.allow_tcp(&g, servers.tcp_port);
        d.bind(&pair.b.ifname, &["10.77.0.2"], &g);
        assert_eq!(d.json(&["nic", "show", &pair.b.ifname])["attached"], false);
        // A sender already running in the client's namespace, and a
        // receiver on a denied port in the workload's.
        let port = servers.udp_port + 1;
        let rx = flow::udp_socket(&pair.b.ns, SocketAddr::new([0, 0, 0, 0].into(), port)).unwrap();
        let tx = flow::udp_socket(&pair.a.ns, "0.0.0.0:0".parse().unwrap()).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let to = SocketAddr::new(IpAddr::V4(pair.b.v4), port);
        let received = std::thread::scope(|s| {
            let sender = s.spawn(|| {
                let mut sent = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Fails until the client's side has its address.
                    if pair
                        .a
                        .ns
                        .exec(|| tx.send_to(b"denied", to))
                        .is_ok_and(|r| r.is_ok())
                    {
                        sent += 1;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                sent
            });
            pair.recreate().unwrap();
            let mut got = 0u64;
            let mut buf = [0u8; 64];
            rx.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let until = std::time::Instant::now() + Duration::from_secs(2);
            while std::time::Instant::now() < until {
                if rx.recv(&mut buf).is_ok() {
                    got += 1;
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let sent = sender.join().unwrap();
            assert!(sent > 500, "round {round}: the sender sent only {sent}");
            got
        });
        assert_eq!(
            received, 0,
            "round {round}: denied datagrams reached the workload"
        );
        assert!(enforced(&pair, &servers), "round {round}");
    }
}

/// The daemon's resident memory, in KiB.
fn rss_kib(pid: u64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Lists the groups over and over on fresh or kept connections until
/// `stop`; returns how many answers came. Raw HTTP, not parsed beyond its
/// length: the clients should load the agent, not this test's own cores.
fn list_groups_until(socket: &std::path::Path, stop: &std::sync::atomic::AtomicBool) -> u64 {
    use std::io::{BufRead as _, Read as _, Write as _};
    let stopped = || stop.load(std::sync::atomic::Ordering::Relaxed);
    let mut n = 0u64;
    let mut line = String::new();
    while !stopped() {
        let Ok(mut c) = std::os::unix::net::UnixStream::connect(socket) else {
            continue;
        };
        let mut r = std::io::BufReader::new(c.try_clone().unwrap());
        'answers: while !stopped()
            && c.write_all(b"GET /v1/groups HTTP/1.1\r\nhost: sg\r\n\r\n")
                .is_ok()
        {
            let mut length = 0usize;
            loop {
                line.clear();
                if r.read_line(&mut line).map_or(true, |k| k == 0) {
                    break 'answers;
                }
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if r.read_exact(&mut body).is_err() {
                break;
            }
            n += 1;
        }
    }
    n
}

#[test]
fn three_hundred_clients_listing_groups_hold_up_neither_status_nor_memory_nor_interfaces() {
    // Issue 12 item 11: 300 clients listing groups made `status` wait 18 s
    // and left the agent at 600 MB.
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    let d = enforcing(&pair, &servers);
    // A state worth listing: 200 groups of 20 rules.
    let mut doc = String::from("groups:\n");
    for g in 0..200 {
        let _ = writeln!(doc, "  - name: g{g}\n    rules:");
        for r in 0..20 {
            let _ = writeln!(
                doc,
                "      - {{direction: ingress, protocol: TCP, port_range: {0}/{0}, peer: 10.{g}.{r}.0/24, description: \"rule {r} of group {g}, a description long enough to weigh something\"}}",
                1000 + r
            );
        }
    }
    let existing: serde_json::Value = serde_json::from_str(&d.ok(&["export"])).unwrap();
    let mut full: serde_json::Value = serde_norway::from_str(&doc).unwrap();
    for key in ["groups", "nics", "prefix_lists", "port_lists", "settings"] {
        if let Some(v) = existing.get(key) {
            if key == "groups" {
                let mut all = v.as_array().unwrap().clone();
                all.extend(full["groups"].as_array().unwrap().iter().cloned());
                full["groups"] = serde_json::Value::Array(all);
            } else {
                full[key] = v.clone();
            }
        }
    }
    let file = d.dir.join("many.json");
    std::fs::write(&file, serde_json::to_string(&full).unwrap()).unwrap();
    d.ok(&["apply", "-f", file.to_str().unwrap()]);
    let pid = pid_of(&d);
    let before = rss_kib(pid);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (worst_status, listed) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..300)
            .map(|_| s.spawn(|| list_groups_until(&d.socket, &stop)))
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        let mut worst = Duration::ZERO;
        for _ in 0..10 {
            let t = std::time::Instant::now();
            let s = sg_agent::api::call(
                &d.socket,
                &sg_agent::api::Request::Observe(sg_agent::api::ObserveRequest::Status),
            )
            .unwrap();
            worst = worst.max(t.elapsed());
            assert_eq!(s["pid"].as_u64(), Some(pid));
            std::thread::sleep(Duration::from_millis(200));
        }
        // An interface event in the flood is still handled promptly.
        pair.a.ns.ip(&["link", "del", &pair.a.ifname]).unwrap();
        let t = std::time::Instant::now();
        assert!(sg_tests::eventually(Duration::from_secs(5), || {
            d.json(&["nic", "show", &pair.b.ifname])["attached"] == false
        }));
        let noticed = t.elapsed();
        pair.recreate().unwrap();
        assert!(sg_tests::eventually(Duration::from_secs(5), || {
            d.json(&["nic", "show", &pair.b.ifname])["attached"] == true
        }));
        assert!(
            noticed < Duration::from_secs(3),
            "the interface event waited {noticed:?}"
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let listed: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
        (worst, listed)
    });
    let after = rss_kib(pid);
    assert!(listed > 300, "the clients listed only {listed} times");
    assert!(
        worst_status < Duration::from_secs(1),
        "status waited {worst_status:?} behind the listings"
    );
    assert!(
        after < before + 150 * 1024,
        "resident memory grew from {before} KiB to {after} KiB"
    );
    assert!(enforced(&pair, &servers));
}

#[test]
fn pins_removed_by_hand_are_put_back_by_the_self_check() {
    // Issue 12 item 1: an agent whose links or pins were removed went on
    // reporting `attached yes` with nothing enforced.
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    let d = Daemon::start(bin(), pair.b.ns.name(), &["--self-check", "1"]).unwrap();
    let g = d.group("web");
    d.allow_tcp(&g, servers.tcp_port);
    d.bind(&pair.b.ifname, &["10.77.0.2"], &g);
    assert!(enforced(&pair, &servers));
    let root = std::path::PathBuf::from(d.json(&["status"])["pins"].as_str().unwrap());
    // Every link pin (which detaches the links) and a map pin.
    for e in std::fs::read_dir(root.join("links")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    std::fs::remove_file(root.join("maps").join(sg_common::maps::IFACES)).unwrap();
    assert!(
        sg_tests::eventually(Duration::from_secs(10), || {
            d.json(&["status"])["self_check"]["drift_total"]
                .as_u64()
                .unwrap()
                > 0
        }),
        "the self-check found nothing missing"
    );
    assert!(
        sg_tests::eventually(Duration::from_secs(5), || enforced(&pair, &servers)),
        "the self-check did not put the links back"
    );
    assert!(root.join("maps").join(sg_common::maps::IFACES).exists());
    assert!(
        std::fs::read_dir(root.join("links")).unwrap().count() >= 2,
        "link pins not made again"
    );
    d.ok(&["verify", "--no-repair"]);
}

#[test]
fn pins_of_maps_of_an_older_layout_are_removed_at_start() {
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    let mut d = enforcing(&pair, &servers);
    let root = std::path::PathBuf::from(d.json(&["status"])["pins"].as_str().unwrap());
    d.stop(libc::SIGTERM).unwrap();
    // What an agent of an older layout left: a map pinned under a name this
    // one no longer uses (a layout change renames the map).
    let maps = root.join("maps");
    let old = maps.join("SG_FRAGS_V1");
    aya::maps::MapData::from_pin(maps.join(sg_common::maps::SETTINGS))
        .unwrap()
        .pin(&old)
        .unwrap();
    d.restart().unwrap();
    assert!(!old.exists(), "the older layout's pin is still there");
    assert!(enforced(&pair, &servers));
}

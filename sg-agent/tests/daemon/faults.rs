//! Fault injection against the real daemon with traffic running (issue 12
//! item 14): the agent killed (SIGKILL) at each step of a start (adoption
//! included) and of a change; a cleanup killed halfway; the store full
//! in the middle of a change; interfaces renamed, deleted and made again
//! while changes are installed. Each time: no denied datagram reaches the
//! workload, and afterwards the kernel holds exactly what the agent says
//! (`sg-agent verify --no-repair` finds nothing).

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use sg_tests::{daemon::Daemon, flow, probe, topology::Pair};

use crate::support::bin;

/// Datagrams to a denied port, sent all along; counts what arrives.
struct Denied {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Denied {
    fn start(pair: &Pair, port: u16) -> Self {
        let to = SocketAddr::new(IpAddr::V4(pair.b.v4), port);
        let rx: UdpSocket =
            flow::udp_socket(&pair.b.ns, SocketAddr::new([0, 0, 0, 0].into(), port)).unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let tx = flow::udp_socket(&pair.a.ns, "10.77.0.1:0".parse().unwrap()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (s1, s2, r) = (stop.clone(), stop.clone(), received.clone());
        let threads = vec![
            std::thread::spawn(move || {
                while !s1.load(Ordering::Relaxed) {
                    let _ = tx.send_to(b"denied", to);
                    std::thread::sleep(Duration::from_millis(1));
                }
            }),
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !s2.load(Ordering::Relaxed) {
                    if rx.recv(&mut buf).is_ok() {
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }),
        ];
        Self {
            stop,
            received,
            threads,
        }
    }

    fn passed(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        self.received.load(Ordering::Relaxed)
    }
}

fn allowed(pair: &Pair, port: u16) -> bool {
    probe::tcp(&pair.a.ns, SocketAddr::new(IpAddr::V4(pair.b.v4), port)).allowed()
}

/// `verify --no-repair` finds nothing.
fn clean(d: &Daemon) {
    let out = d.cli(&["verify", "--no-repair", "--json"]);
    assert!(
        out.status.success(),
        "verify found drift: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A daemon enforcing: TCP to `servers.tcp_port` allowed, the rest denied.
fn enforcing(pair: &Pair, servers: &probe::Servers) -> (Daemon, String) {
    let d = Daemon::start(bin(), pair.b.ns.name(), &[]).unwrap();
    let g = d.group("web");
    d.allow_tcp(&g, servers.tcp_port);
    d.bind(&pair.b.ifname, &["10.77.0.2"], &g);
    assert!(allowed(pair, servers.tcp_port));
    (d, g)
}

#[test]
fn the_agent_sigkilled_at_each_step_of_a_start_and_a_change_lets_no_denied_packet_through() {
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    let (mut d, g) = enforcing(&pair, &servers);
    let denied = Denied::start(&pair, servers.udp_port + 3);
    let mut conn = flow::TcpConn::open(
        &pair.a.ns,
        SocketAddr::new(IpAddr::V4(pair.b.v4), servers.tcp_port),
    )
    .unwrap();
    assert!(conn.echo(), "the connection echoes before any fault");
    // The open connection echoes all along (the echo server closes one idle
    // for 5 s, longer than an agent's restart).
    let echoing = Arc::new(AtomicBool::new(true));
    let broke = Arc::new(AtomicU64::new(0));
    let echoes = {
        let (go, broke) = (echoing.clone(), broke.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while go.load(Ordering::Relaxed) {
                if conn.echo() {
                    n += 1;
                } else {
                    broke.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            n
        })
    };
    let extra = (servers.tcp_port + 11).to_string();
    let mut killed_at = Vec::new();
    for n in 1.. {
        d.stop(libc::SIGTERM).unwrap();
        let spec = format!("*:{n}");
        let started = d.restart_env(&[], &[("SG_AGENT_FAULT_KILL", &spec)]);
        let mut killed = started.is_err();
        if !killed {
            // A change: the extra port's rule added, or revoked if there.
            let rules = d.json(&["rule", "list", "--group", &g]);
            let existing = rules
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["ports"].to_string().contains(&format!("{extra}/{extra}")));
            let _ = match existing {
                Some(r) => d.cli(&["rule", "remove", &g, r["id"].as_str().unwrap()]),
                None => d.cli(&[
                    "rule",
                    "add",
                    &g,
                    "--direction",
                    "ingress",
                    "--protocol",
                    "TCP",
                    "--port-range",
                    &format!("{extra}/{extra}"),
                    "--peer",
                    "10.77.0.0/24",
                ]),
            };
            std::thread::sleep(Duration::from_millis(100));
            killed = d.gone();
        }
        if killed {
            killed_at.push(n);
            d.restart().unwrap();
        }
        // Whatever happened, the agent enforces what its store holds.
        clean(&d);
        assert!(
            allowed(&pair, servers.tcp_port),
            "kill {n}: allowed TCP refused"
        );
        assert_eq!(
            broke.load(Ordering::Relaxed),
            0,
            "kill {n}: the open connection broke"
        );
        assert_eq!(denied.passed(), 0, "kill {n}: denied datagrams passed");
        if !killed {
            break;
        }
        assert!(n < 200, "the kill points never end");
    }
    assert_eq!(denied.finish(), 0, "denied datagrams passed");
    echoing.store(false, Ordering::Relaxed);
    assert!(echoes.join().unwrap() > 10, "the connection barely echoed");
    assert!(
        killed_at.len() >= 8,
        "only {} kill points were reached",
        killed_at.len()
    );
}

#[test]
fn a_cleanup_sigkilled_halfway_is_finished_by_the_next_and_an_agent_after_it_enforces_again() {
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    let (mut d, _) = enforcing(&pair, &servers);
    // Pins are alike: the first ones (links), one in the middle and the last.
    for n in [1, 2, 3, 10, 18] {
        d.stop(libc::SIGTERM).unwrap();
        let out = std::process::Command::new(bin())
            .env("SG_AGENT_FAULT_KILL", format!("cleanup.pin:{n}"))
            .args(["cleanup", "--netns", pair.b.ns.name()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "cleanup {n} was not killed");
        // An agent started over a half-cleaned namespace puts its store's
        // policy in force again.
        d.restart().unwrap();
        clean(&d);
        assert!(allowed(&pair, servers.tcp_port), "after kill {n}");
        assert!(
            !probe::udp(
                &pair.a.ns,
                SocketAddr::new(IpAddr::V4(pair.b.v4), servers.udp_port)
            )
            .allowed(),
            "after kill {n}: denied UDP passed"
        );
    }
    d.stop(libc::SIGTERM).unwrap();
    let out = std::process::Command::new(bin())
        .env("SG_AGENT_FAULT_KILL", "cleanup.pin:2")
        .args(["cleanup", "--netns", pair.b.ns.name()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = d.cleanup();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ino = pair
        .b
        .ns
        .exec(sg_agent::netns::current_inode)
        .unwrap()
        .unwrap();
    assert!(!sg_agent::dataplane::pin_root(ino).exists(), "pins left");
}

/// A small tmpfs, unmounted when dropped.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    fn new(dir: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs");
        Self(dir.to_owned())
    }

    /// Fills it up; returns the filler's path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let p = self.0.join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        p
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_store_that_fills_up_in_the_middle_of_a_change_changes_nothing() {
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    let (mut d, g) = enforcing(&pair, &servers);
    d.stop(libc::SIGTERM).unwrap();
    // Move the store onto a file system of 2 MB.
    let fs = SmallFs::new(&d.dir.join("small"), "2m");
    for suffix in ["", "-wal", "-shm"] {
        let from = format!("{}{suffix}", d.store.display());
        if std::path::Path::new(&from).exists() {
            std::fs::copy(&from, fs.0.join(format!("state.db{suffix}"))).unwrap();
        }
    }
    d.store = fs.0.join("state.db");
    d.restart().unwrap();
    let denied = Denied::start(&pair, servers.udp_port + 3);
    let filler = fs.fill();
    // A change large enough to need new pages: a group of 300 rules, and
    // the port of a second server opened by the same document.
    let second = probe::Servers::start(&pair.b.ns).unwrap();
    let port = second.tcp_port;
    let mut doc: serde_json::Value = serde_json::from_str(&d.ok(&["export"])).unwrap();
    let rules: Vec<serde_json::Value> = (0..300)
        .map(|i| {
            serde_json::json!({
                "direction": "ingress", "protocol": "TCP",
                "port_range": format!("{0}/{0}", 20000 + i), "peer": "192.0.2.0/24",
                "description": "a rule whose text takes room in the store, a rule whose text takes room",
            })
        })
        .collect();
    doc["groups"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({ "name": "big", "rules": rules }));
    doc["groups"][0]["rules"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "direction": "ingress", "protocol": "TCP",
            "port_range": format!("{port}/{port}"), "peer": "10.77.0.0/24",
        }));
    let file = d.dir.join("big.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let err = d.fails(&["apply", "-f", file.to_str().unwrap()]);
    assert!(
        err.contains("store") && err.contains("nothing changed"),
        "{err}"
    );
    // Nothing changed: not in force, not stored.
    assert!(!allowed(&pair, port), "the refused change is in force");
    assert!(allowed(&pair, servers.tcp_port));
    assert_eq!(d.json(&["group", "list"]).as_array().map(Vec::len), Some(1));
    clean(&d);
    // Room again: the same change goes through.
    std::fs::remove_file(filler).unwrap();
    d.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(allowed(&pair, port));
    clean(&d);
    assert_eq!(denied.finish(), 0, "denied datagrams passed");
    d.stop(libc::SIGTERM).unwrap();
    let _ = g;
}

#[test]
fn interfaces_renamed_deleted_and_made_again_during_changes_leave_the_kernel_as_the_agent_says() {
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    let (d, g) = enforcing(&pair, &servers);
    let stop = AtomicBool::new(false);
    let renamed = format!("{}r", pair.b.ifname);
    std::thread::scope(|s| {
        // Changes, one after another: a rule added and revoked.
        let socket = d.socket.clone();
        let (stop, g) = (&stop, &g);
        let changes = s.spawn(move || {
            let cli = |args: &[&str]| {
                let out = std::process::Command::new(bin())
                    .env("SG_AGENT_SOCKET", &socket)
                    .args(args)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
            };
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let out = cli(&[
                    "rule",
                    "add",
                    g,
                    "--direction",
                    "ingress",
                    "--protocol",
                    "UDP",
                    "--port-range",
                    "7000/7100",
                    "--peer",
                    "192.0.2.0/24",
                    "--json",
                ]);
                let id = out["ids"][0].as_str().unwrap().to_owned();
                cli(&["rule", "remove", g, &id]);
                n += 1;
            }
            n
        });
        for _ in 0..5 {
            // Renamed away and back.
            let b = &pair.b;
            b.ns.ip(&["link", "set", &b.ifname, "down"]).unwrap();
            b.ns.ip(&["link", "set", &b.ifname, "name", &renamed])
                .unwrap();
            std::thread::sleep(Duration::from_millis(30));
            b.ns.ip(&["link", "set", &renamed, "name", &b.ifname])
                .unwrap();
            b.ns.ip(&["link", "set", &b.ifname, "up"]).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            // Deleted and made again.
            pair.a.ns.ip(&["link", "del", &pair.a.ifname]).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            pair.recreate().unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::Relaxed);
        assert!(changes.join().unwrap() > 3, "the changes barely ran");
    });
    assert!(
        sg_tests::eventually(Duration::from_secs(10), || {
            d.json(&["nic", "show", &pair.b.ifname])["attached"] == true
        }),
        "not attached again"
    );
    std::thread::sleep(Duration::from_millis(300));
    clean(&d);
    assert!(allowed(&pair, servers.tcp_port));
    assert!(
        !probe::udp(
            &pair.a.ns,
            SocketAddr::new(IpAddr::V4(pair.b.v4), servers.udp_port)
        )
        .allowed()
    );
}

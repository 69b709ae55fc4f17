//! Restart without a gap (issue 5 item 4), with the daemon as a real process
//! driven only through the CLI: traffic runs while the agent is stopped and
//! started again, and while it is killed and started again. Denied packets
//! never pass, an open TCP connection keeps echoing, new allowed connections
//! open while no agent runs; `cleanup` then removes everything.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use sg_tests::{daemon::Daemon, flow, probe, topology::Pair};

use crate::support::bin;

/// Counts what gets through while the agent comes and goes: a stream of UDP
/// datagrams to a denied port (must all be dropped) and echoes over one open
/// TCP connection (must all come back).
struct Watch {
    stop: Arc<AtomicBool>,
    leaked: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    echoes: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(
        pair: &Pair,
        conn: flow::TcpConn,
        denied_rx: UdpSocket,
        denied_tx: UdpSocket,
        to: SocketAddr,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (leaked, sent, echoes, failed) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let _ = pair;
        let mut threads = Vec::new();
        {
            let (stop, leaked) = (stop.clone(), leaked.clone());
            denied_rx
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if denied_rx.recv_from(&mut buf).is_ok() {
                        leaked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        {
            let (stop, sent) = (stop.clone(), sent.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if denied_tx.send_to(b"denied", to).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }));
        }
        {
            let (stop, echoes, failed) = (stop.clone(), echoes.clone(), failed.clone());
            let mut conn = conn;
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if conn.echo() {
                        echoes.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }));
        }
        Self {
            stop,
            leaked,
            sent,
            echoes,
            failed,
            threads,
        }
    }

    fn counts(&self) -> (u64, u64, u64, u64) {
        (
            self.leaked.load(Ordering::Relaxed),
            self.sent.load(Ordering::Relaxed),
            self.echoes.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Waits until `n` more echoes and datagrams went by.
    fn more(&self, n: u64) {
        let (_, s0, e0, _) = self.counts();
        assert!(
            sg_tests::eventually(Duration::from_secs(10), || {
                let (_, s, e, f) = self.counts();
                f > 0 || (s >= s0 + n && e >= e0 + n)
            }),
            "traffic stalled: {:?}",
            self.counts()
        );
    }

    fn finish(self) -> (u64, u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let c = self.counts();
        for t in self.threads {
            let _ = t.join();
        }
        c
    }
}

/// The kernel ids of the daemon's TC programs (the receive side is TC
/// ingress on veth), from `sg-agent status`.
fn tc_programs(d: &Daemon) -> HashSet<u32> {
    let s = d.json(&["status"]);
    ["tc ingress", "tc egress"]
        .iter()
        .map(|k| u32::try_from(s["programs"][k].as_u64().expect("program id")).unwrap())
        .collect()
}

#[test]
fn enforcement_survives_stop_start_and_kill_start_then_cleanup_removes_it() {
    let pair = Pair::new().unwrap();
    let (a, b) = (&pair.a, &pair.b);
    let servers = probe::Servers::start_on(&b.ns, 8080).unwrap();
    let mut d = Daemon::start(bin(), b.ns.name(), &[]).unwrap();
    let g = d.group("web");
    d.allow_tcp(&g, servers.tcp_port);
    d.bind(&b.ifname, &["10.77.0.2", "fd77::2"], &g);
    let web = SocketAddr::new(IpAddr::V4(b.v4), servers.tcp_port);
    assert!(probe::tcp(&a.ns, web).allowed());
    assert!(!probe::udp(&a.ns, SocketAddr::new(IpAddr::V4(b.v4), servers.udp_port)).allowed());
    let first = tc_programs(&d);
    assert_eq!(
        sg_tests::links_of(&first),
        2,
        "tcx ingress and egress links"
    );

    let denied_rx = flow::udp_socket(&b.ns, "10.77.0.2:9099".parse().unwrap()).unwrap();
    let denied_tx = flow::udp_socket(&a.ns, "10.77.0.1:0".parse().unwrap()).unwrap();
    let conn = flow::TcpConn::open(&a.ns, web).unwrap();
    let watch = Watch::start(
        &pair,
        conn,
        denied_rx,
        denied_tx,
        "10.77.0.2:9099".parse().unwrap(),
    );
    watch.more(20);

    // Stopped: the pinned links keep enforcing.
    let (status, _) = d.stop(libc::SIGTERM).unwrap();
    assert!(status.success(), "{status}");
    watch.more(50);
    assert!(
        probe::tcp(&a.ns, web).allowed(),
        "a new allowed connection while no agent runs"
    );
    assert!(!probe::udp(&a.ns, SocketAddr::new(IpAddr::V4(b.v4), servers.udp_port)).allowed());
    let line = d.restart().unwrap();
    assert!(line.contains("serving"), "{line}");
    watch.more(50);

    // Killed: the same, and the new agent adopts rather than attaching twice.
    d.kill().unwrap();
    watch.more(50);
    d.restart().unwrap();
    watch.more(50);
    let now = tc_programs(&d);
    assert!(now.is_disjoint(&first), "new programs were loaded");
    assert_eq!(
        sg_tests::links_of(&now),
        2,
        "the new programs run in the two links"
    );
    assert_eq!(
        sg_tests::links_of(&first),
        0,
        "the old ones were swapped out, not left beside"
    );
    let (leaked, _, _, _) = watch.counts();
    assert_eq!(
        leaked, 0,
        "denied datagrams passed while the agent came and went"
    );
    // The adopted data plane still obeys the API, and the watch sees
    // datagrams once they are allowed (so it could have seen a leak).
    d.ok(&[
        "rule",
        "add",
        &g,
        "--direction",
        "ingress",
        "--protocol",
        "UDP",
        "--port-range",
        "9099/9099",
        "--peer",
        "10.77.0.0/24",
    ]);
    assert!(sg_tests::eventually(Duration::from_secs(5), || watch
        .counts()
        .0
        > 0));
    let (_, _, echoes, failed) = watch.finish();
    assert_eq!(failed, 0, "the open connection broke ({echoes} echoes)");
    assert!(echoes >= 220, "{echoes}");

    cleanup_removes_everything(&mut d, &pair, &servers, &now);
}

/// `cleanup` is refused while the agent runs; after it stops, everything
/// goes: links, programs, pins, and with them all filtering.
fn cleanup_removes_everything(
    d: &mut Daemon,
    pair: &Pair,
    servers: &probe::Servers,
    now: &HashSet<u32>,
) {
    let (a, b) = (&pair.a, &pair.b);
    // Cleanup: refused while the agent runs, then everything goes.
    let out = d.cleanup();
    assert!(
        !out.status.success(),
        "cleanup must refuse while an agent answers"
    );
    d.stop(libc::SIGTERM).unwrap();
    let out = d.cleanup();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sg_tests::links_of(now), 0, "links left after cleanup");
    // The kernel frees a program once its last link is released (deferred).
    assert!(
        sg_tests::eventually(Duration::from_secs(5), || !sg_tests::any_loaded(now)),
        "programs left after cleanup"
    );
    assert!(
        probe::udp(&a.ns, SocketAddr::new(IpAddr::V4(b.v4), servers.udp_port)).allowed(),
        "nothing filters after cleanup"
    );
    let ino = b.ns.exec(sg_agent::netns::current_inode).unwrap().unwrap();
    assert!(!sg_agent::dataplane::pin_root(ino).exists());
}

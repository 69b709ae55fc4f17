//! Policy updates are hitless: while the policy is replaced 1,000 times,
//! traffic that both versions allow loses no packet and traffic that both deny
//! never passes. The two versions differ in rule order, priorities and extra
//! rules, so every switch changes every table the kernel reads.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sg_policy::{GroupSpec, State};
use sg_tests::{
    bench::{Bench, rule},
    flow::numbered_receiver,
};

const ALLOWED_PORT: u16 = 5000;
const DENIED_PORT: u16 = 6000;
const UPDATES: u32 = 1000;

/// Version `k % 2` of the policy: both allow UDP 5000 from the client and
/// deny UDP 6000, by different rules.
fn version(bench: &Bench, k: u32) -> State {
    let mut s = State::with_seed(7);
    let g = s.create_group(GroupSpec::basic("web")).unwrap();
    let mut rules = if k.is_multiple_of(2) {
        vec![
            rule("ingress", "Allow", "10", "UDP", "5000/5000", "10.77.0.1"),
            rule("ingress", "Deny", "5", "UDP", "6000/6000", "0.0.0.0/0"),
        ]
    } else {
        vec![
            rule("ingress", "Deny", "1", "UDP", "6000/6100", "10.77.0.0/24"),
            rule("ingress", "Allow", "2", "UDP", "4000/5500", "10.77.0.0/16"),
            rule("ingress", "Allow", "3", "TCP", "22/22", "10.77.0.1"),
        ]
    };
    // Filler rules that move every rank and port interval between versions.
    for i in 0..(20 + k % 2 * 13) {
        let port = format!("{}/{}", 7000 + i, 7000 + i);
        rules.push(rule("ingress", "Allow", "50", "TCP", &port, "192.0.2.0/24"));
    }
    s.authorize_all(&g, rules).unwrap();
    s.bind_nic(bench.server_nic(&[&g])).unwrap();
    s
}

#[test]
fn a_thousand_policy_switches_lose_no_allowed_packet_and_pass_no_denied_one() {
    let mut bench = Bench::new(&[], &[], &[]).unwrap();
    bench.apply(&version(&bench, 0)).unwrap();
    let b = bench.pair.b.v4;
    // Receivers in b, with buffers big enough that the socket never drops.
    let (allowed_rx, denied_rx) = bench
        .pair
        .b
        .ns
        .exec(move || {
            let a = UdpSocket::bind(SocketAddr::new(b.into(), ALLOWED_PORT)).unwrap();
            let d = UdpSocket::bind(SocketAddr::new(b.into(), DENIED_PORT)).unwrap();
            (a, d)
        })
        .unwrap();
    for s in [&allowed_rx, &denied_rx] {
        let size: libc::c_int = 8 << 20;
        // SAFETY: setsockopt with an int option on a socket we own.
        unsafe {
            use std::os::fd::AsRawFd as _;
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                4,
            );
        }
    }
    let stop_rx = Arc::new(AtomicBool::new(false));
    let allowed_count = Arc::new(AtomicU64::new(0));
    let allowed_seen = numbered_receiver(allowed_rx, stop_rx.clone(), allowed_count.clone());
    let denied_seen = numbered_receiver(denied_rx, stop_rx.clone(), Arc::new(AtomicU64::new(0)));

    // The sender in a: numbered datagrams to both ports until the updates end.
    let stop_tx = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop_tx.clone();
        let sock = bench
            .pair
            .a
            .ns
            .exec(|| UdpSocket::bind("10.77.0.1:0").unwrap())
            .unwrap();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                sent += 1;
                let n = sent.to_be_bytes();
                sock.send_to(&n, SocketAddr::new(b.into(), ALLOWED_PORT))
                    .unwrap();
                sock.send_to(&n, SocketAddr::new(b.into(), DENIED_PORT))
                    .unwrap();
                // About 10,000 pairs a second: steady, well inside what veth carries.
                let t = Instant::now();
                while t.elapsed() < Duration::from_micros(100) {
                    std::hint::spin_loop();
                }
            }
            sent
        })
    };

    let start = Instant::now();
    let first = bench
        .reconciler
        .dataplane()
        .version(&bench.pair.b.ifname)
        .unwrap();
    for k in 1..=UPDATES {
        let report = bench.apply(&version(&bench, k)).unwrap();
        assert_eq!(
            report.installed.len(),
            1,
            "update {k} did not switch: {report:?}"
        );
    }
    let took = start.elapsed();
    let last = bench
        .reconciler
        .dataplane()
        .version(&bench.pair.b.ifname)
        .unwrap();
    assert_eq!(last - first, UPDATES, "every update was one switch");

    stop_tx.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    // Let the last datagrams land: every allowed one must arrive.
    sg_tests::eventually(Duration::from_secs(5), || {
        allowed_count.load(Ordering::Relaxed) >= sent
    });
    stop_rx.store(true, Ordering::Relaxed);
    let allowed = allowed_seen.join().unwrap();
    let denied = denied_seen.join().unwrap();
    println!("{UPDATES} switches in {took:?}; {sent} datagrams per port sent");
    assert!(sent > 1000, "the sender barely ran: {sent}");
    assert!(
        denied.is_empty(),
        "{} denied datagrams passed",
        denied.len()
    );
    let missing: Vec<u64> = (1..=sent)
        .filter(|n| !allowed.contains(n))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "allowed datagrams lost during switches, e.g. {missing:?} of {sent}"
    );
}

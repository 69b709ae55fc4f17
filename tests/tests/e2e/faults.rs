//! Fault injection with traffic running (issue 12 item 14): a map write
//! fails at each step of an install, with each of the errors a full or
//! starved kernel gives, and one NIC's failure must not hold up another's.
//! Every time: no denied datagram passes, no allowed one is lost, and after
//! the rollback the daemon would make, the kernel holds exactly what the
//! agent says is in force (`Reconciler::verify` finds nothing).
//!
//! A failure is asked for on the thread that applies: the injector counts
//! that thread's writes only, so these tests run beside each other and
//! beside the other tests of their binary.

use std::{
    collections::BTreeSet,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sg_agent::{dataplane::faults, reconcile::ReconcileReport};
use sg_policy::{BindingMode, Cidr, GroupSpec, NicBinding, State};
use sg_tests::{
    bench::{Bench, rule},
    flow::numbered_receiver,
};

const ALLOWED: u16 = 5000;
const DENIED: u16 = 6000;

/// Version `k % 2` of the policy: both allow UDP 5000 from the client and
/// deny UDP 6000, by different rules (every table changes between them).
fn version(bench: &Bench, k: u32, extra_nic: Option<&str>) -> State {
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
            rule("ingress", "Allow", "3", "TCP", "22/22", "fd77::1"),
        ]
    };
    for i in 0..(5 + k % 2 * 4) {
        let port = format!("{}/{}", 7000 + i, 7000 + i);
        rules.push(rule("ingress", "Allow", "50", "TCP", &port, "192.0.2.0/24"));
    }
    s.authorize_all(&g, rules).unwrap();
    s.bind_nic(bench.server_nic(&[&g])).unwrap();
    if let Some(name) = extra_nic {
        let mut n = NicBinding::new(
            name,
            BindingMode::Port,
            vec!["10.99.0.2".parse().unwrap()],
            vec![g],
        );
        n.extra_allowed = vec![Cidr::parse("extra", &format!("10.98.{}.0/24", k % 2)).unwrap()];
        s.bind_nic(n).unwrap();
    }
    s
}

/// A sender of numbered datagrams to both ports, and receivers counting
/// what arrives on each; `finish` says what passed.
struct Traffic {
    stop_tx: Arc<AtomicBool>,
    stop_rx: Arc<AtomicBool>,
    sender: std::thread::JoinHandle<u64>,
    allowed: std::thread::JoinHandle<BTreeSet<u64>>,
    denied: std::thread::JoinHandle<BTreeSet<u64>>,
    allowed_count: Arc<AtomicU64>,
}

impl Traffic {
    fn start(bench: &Bench) -> Self {
        let b = bench.pair.b.v4;
        let (a_rx, d_rx) = bench
            .pair
            .b
            .ns
            .exec(move || {
                (
                    UdpSocket::bind(SocketAddr::new(b.into(), ALLOWED)).unwrap(),
                    UdpSocket::bind(SocketAddr::new(b.into(), DENIED)).unwrap(),
                )
            })
            .unwrap();
        let stop_rx = Arc::new(AtomicBool::new(false));
        let allowed_count = Arc::new(AtomicU64::new(0));
        let allowed = numbered_receiver(a_rx, stop_rx.clone(), allowed_count.clone());
        let denied = numbered_receiver(d_rx, stop_rx.clone(), Arc::new(AtomicU64::new(0)));
        let stop_tx = Arc::new(AtomicBool::new(false));
        let stop = stop_tx.clone();
        let sock = bench
            .pair
            .a
            .ns
            .exec(|| UdpSocket::bind("10.77.0.1:0").unwrap())
            .unwrap();
        let sender = std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                sent += 1;
                let n = sent.to_be_bytes();
                let _ = sock.send_to(&n, SocketAddr::new(b.into(), ALLOWED));
                let _ = sock.send_to(&n, SocketAddr::new(b.into(), DENIED));
                let t = Instant::now();
                while t.elapsed() < Duration::from_micros(300) {
                    std::hint::spin_loop();
                }
            }
            sent
        });
        Self {
            stop_tx,
            stop_rx,
            sender,
            allowed,
            denied,
            allowed_count,
        }
    }

    /// (sent, allowed datagrams lost, denied datagrams that passed).
    fn finish(self) -> (u64, usize, usize) {
        self.stop_tx.store(true, Ordering::Relaxed);
        let sent = self.sender.join().unwrap();
        sg_tests::eventually(Duration::from_secs(5), || {
            self.allowed_count.load(Ordering::Relaxed) >= sent
        });
        self.stop_rx.store(true, Ordering::Relaxed);
        let allowed = self.allowed.join().unwrap();
        let denied = self.denied.join().unwrap();
        let lost = (1..=sent).filter(|n| !allowed.contains(n)).count();
        (sent, lost, denied.len())
    }
}

/// [`Bench::apply`] with the `nth` map write failing with `errno`, asked for
/// on the thread in the server's namespace that writes; and whether that
/// write came (the failure is no longer pending).
fn apply_failing(
    bench: &mut Bench,
    state: &State,
    nth: u64,
    errno: i32,
) -> (anyhow::Result<ReconcileReport>, bool) {
    let reconciler = &mut bench.reconciler;
    let (result, hit) = bench
        .pair
        .b
        .ns
        .exec(|| {
            faults::fail_map_write(nth, errno);
            let result = reconciler.reconcile(state);
            let hit = !faults::pending();
            faults::fail_map_write(0, 0);
            (result, hit)
        })
        .expect("enter the server's namespace");
    (result.map_err(anyhow::Error::from), hit)
}

/// Whether the kernel holds exactly what the reconciler put in force.
fn clean(bench: &mut Bench, state: &State) -> Vec<String> {
    let reconciler = &bench.reconciler;
    bench
        .pair
        .b
        .ns
        .exec(|| reconciler.verify(state))
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|d| format!("{:?}: {}", d.nic, d.what))
        .collect()
}

#[test]
fn a_map_write_failing_at_each_step_of_an_install_lets_no_denied_packet_through() {
    let mut bench = Bench::new(&[], &[], &[]).unwrap();
    // A second NIC in the server's namespace (no traffic of its own): its
    // failures must not hold up the first one, nor the reverse.
    let extra = format!("{}x", bench.pair.b.ifname);
    bench
        .pair
        .b
        .ns
        .ip(&[
            "link",
            "add",
            &extra,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{extra}p"),
        ])
        .unwrap();
    bench.pair.b.ns.ip(&["link", "set", &extra, "up"]).unwrap();
    let mut parity = 0;
    let mut in_force = version(&bench, parity, Some(&extra));
    bench.apply(&in_force).unwrap();
    let traffic = Traffic::start(&bench);
    std::thread::sleep(Duration::from_millis(200));
    let errnos = [libc::ENOMEM, libc::E2BIG, libc::ENOSPC];
    let mut failed = 0;
    for n in 1.. {
        // Always the other version: every apply rewrites every table.
        let next = version(&bench, parity ^ 1, Some(&extra));
        let (result, hit) = apply_failing(&mut bench, &next, n, errnos[(n % 3) as usize]);
        match result {
            Ok(_) => {
                assert!(!hit, "write {n} failed but the apply said it worked");
                in_force = next;
                parity ^= 1;
            }
            Err(e) => {
                assert!(hit, "the apply failed with no fault injected: {e}");
                failed += 1;
                // What the daemon does with a refused change: put the state
                // before back (every NIC, the one that failed too).
                bench
                    .apply(&in_force)
                    .unwrap_or_else(|e| panic!("write {n}: rolling back: {e}"));
            }
        }
        let drift = clean(&mut bench, &in_force);
        assert!(drift.is_empty(), "write {n} failed: drift {drift:?}");
        if !hit {
            break;
        }
        assert!(n < 10_000, "an install never ends");
    }
    let (sent, lost, passed) = traffic.finish();
    println!("{failed} installs failed at each of their map writes; {sent} datagrams per port");
    assert!(failed > 20, "only {failed} writes were failed");
    assert_eq!(passed, 0, "denied datagrams passed");
    assert_eq!(lost, 0, "allowed datagrams lost");
}

#[test]
fn a_nic_whose_first_install_fails_is_bound_closed_not_left_open() {
    let mut bench = Bench::new(&[], &[], &[]).unwrap();
    let state = version(&bench, 0, None);
    // The settings first, so the NIC's own first write is the next one.
    let mut no_nic = state.clone();
    no_nic.nics.clear();
    bench.apply(&no_nic).unwrap();
    let (result, _) = apply_failing(&mut bench, &state, 1, libc::ENOMEM);
    let err = result.expect_err("the install must fail").to_string();
    assert!(err.contains("bound closed"), "{err}");
    let name = bench.pair.b.ifname.clone();
    assert!(bench.reconciler.dataplane().is_closed(&name));
    assert!(bench.reconciler.degraded().contains_key(&name));
    // Closed: the allowed port is dropped too, not passed.
    let traffic = Traffic::start(&bench);
    std::thread::sleep(Duration::from_millis(300));
    let (sent, lost, passed) = traffic.finish();
    assert!(sent > 100);
    assert_eq!(passed, 0, "a closed NIC passed denied datagrams");
    assert_eq!(lost as u64, sent, "a closed NIC passed allowed datagrams");
    // The next apply puts its policy in force and clears the degradation.
    bench.apply(&state).unwrap();
    assert!(!bench.reconciler.dataplane().is_closed(&name));
    assert!(bench.reconciler.degraded().is_empty());
    assert_eq!(clean(&mut bench, &state), Vec::<String>::new());
}

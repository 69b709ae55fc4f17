//! The session table through `BPF_PROG_TEST_RUN`: TCP progress as the
//! listing reports it, and a table too small for its flows (an evicted
//! session's next packet is decided by the rules, never passed).

use std::net::{IpAddr, Ipv4Addr};

use sg_agent::{
    dataplane::{Dataplane, Limits, session_table::Filter},
    iface::index as ifindex,
    reconcile::Reconciler,
};
use sg_common::reason;
use sg_policy::{BindingMode, GroupSpec, NicBinding, State};
use sg_tests::{
    packet::{self, L3, L4, Spec},
    testrun::{self, Hook},
    topology::Netns,
};

const NIC: &str = "s0";
const ME: [u8; 4] = [10, 1, 0, 1];
const PEER: [u8; 4] = [10, 2, 0, 1];

/// A namespace with interface `s0` bound (local mode) to one basic group
/// without rules: egress open, ingress closed.
fn setup(ns: &Netns, capacity: u32) -> (Reconciler, u32) {
    ns.ip(&["link", "add", NIC, "type", "veth", "peer", "name", "s0p"])
        .expect("veth");
    ns.ip(&["link", "set", NIC, "up"]).expect("up");
    testrun::pin_to_cpu0().expect("pin to CPU 0");
    let mut s = State::with_seed(5);
    let g = s.create_group(GroupSpec::basic("out")).unwrap();
    s.bind_nic(NicBinding::new(
        NIC,
        BindingMode::Local,
        vec![IpAddr::V4(Ipv4Addr::from(ME))],
        vec![g],
    ))
    .unwrap();
    let limits = Limits {
        sessions: capacity,
        ..Limits::default()
    };
    let mut reconciler = Reconciler::new(Dataplane::load_for_tests(limits).expect("load"), None);
    reconciler.reconcile(&s).expect("apply");
    (reconciler, ifindex(NIC).expect("interface"))
}

fn frame(src: [u8; 4], dst: [u8; 4], l4: L4) -> Vec<u8> {
    packet::build(&Spec::new(L3::v4(src, dst), l4)).bytes
}

/// Runs `frame` through `hook` and returns (passed, reason).
fn run(dp: &mut Dataplane, ifindex: u32, hook: Hook, frame: &[u8]) -> (bool, u32) {
    let v = testrun::verdict_on(dp, hook, frame, ifindex).expect("test run");
    let last = dp.maps().last_decision(0).expect("last decision");
    (testrun::passes(hook, v), last.reason)
}

#[test]
fn tcp_progress_follows_the_handshake_and_the_close() {
    let ns = Netns::new("sess-tcp").expect("namespace");
    ns.exec(|| {
        let (mut reconciler, idx) = setup(&ns, 1024);
        let dp = reconciler.dataplane();
        let out = |flags| {
            frame(
                ME,
                PEER,
                L4::Tcp {
                    sport: 40000,
                    dport: 80,
                    flags,
                },
            )
        };
        let back = |flags| {
            frame(
                PEER,
                ME,
                L4::Tcp {
                    sport: 80,
                    dport: 40000,
                    flags,
                },
            )
        };
        let state = |dp: &mut Dataplane| {
            let l = dp.maps().sessions(&Filter::default()).expect("sessions");
            assert_eq!(l.len(), 1, "{l:#?}");
            l[0].state
        };
        // An ACK alone opens nothing: the reply to it is dropped.
        assert_eq!(
            run(dp, idx, Hook::TcEgress, &out(0x10)),
            (true, reason::DEFAULT_EGRESS_BASIC)
        );
        assert_eq!(
            run(dp, idx, Hook::Xdp, &back(0x10)),
            (false, reason::DEFAULT_INGRESS_DROP)
        );
        assert_eq!(dp.maps().sessions(&Filter::default()).unwrap(), vec![]);
        // SYN out, SYN-ACK back, ACK out: established.
        assert_eq!(
            run(dp, idx, Hook::TcEgress, &out(0x02)),
            (true, reason::DEFAULT_EGRESS_BASIC)
        );
        assert_eq!(state(dp), "handshake");
        assert_eq!(
            run(dp, idx, Hook::Xdp, &back(0x12)),
            (true, reason::SESSION)
        );
        assert_eq!(state(dp), "handshake");
        assert_eq!(
            run(dp, idx, Hook::TcEgress, &out(0x10)),
            (true, reason::SESSION)
        );
        assert_eq!(state(dp), "established");
        // One FIN keeps the established timeout; both make it closing.
        assert_eq!(
            run(dp, idx, Hook::TcEgress, &out(0x11)),
            (true, reason::SESSION)
        );
        assert_eq!(state(dp), "established");
        assert_eq!(
            run(dp, idx, Hook::Xdp, &back(0x11)),
            (true, reason::SESSION)
        );
        assert_eq!(state(dp), "closing");
        // A SYN on a closed session starts over: decided by the rules (egress
        // is open), with a fresh session in the handshake state.
        assert_eq!(
            run(dp, idx, Hook::TcEgress, &out(0x02)),
            (true, reason::DEFAULT_EGRESS_BASIC)
        );
        assert_eq!(state(dp), "handshake");
        // RST closes too.
        assert_eq!(
            run(dp, idx, Hook::Xdp, &back(0x14)),
            (true, reason::SESSION)
        );
        assert_eq!(state(dp), "closing");
        // A SYN from outside on the closed session is not let in.
        assert_eq!(
            run(dp, idx, Hook::Xdp, &back(0x02)),
            (false, reason::DEFAULT_INGRESS_DROP)
        );
        assert_eq!(dp.maps().sessions(&Filter::default()).unwrap(), vec![]);
        let ev = |n: &str| dp.maps().session_event(n).unwrap();
        assert_eq!((ev("created"), ev("reopened")), (2, 2));
    })
    .expect("namespace thread");
}

#[test]
fn a_full_table_evicts_sessions_and_their_replies_are_decided_by_the_rules() {
    const CAPACITY: u32 = 256;
    const FLOWS: u16 = 2048;
    let ns = Netns::new("sess-cap").expect("namespace");
    ns.exec(|| {
        let (mut reconciler, idx) = setup(&ns, CAPACITY);
        let dp = reconciler.dataplane();
        for port in 0..FLOWS {
            let f = frame(ME, PEER, L4::Udp { sport: 10_000 + port, dport: 53 });
            assert!(run(dp, idx, Hook::TcEgress, &f).0);
        }
        let held = dp.maps().sessions(&Filter::default()).unwrap().len();
        assert!(held <= CAPACITY as usize && held > 0, "{held} sessions held");
        let (mut passed, mut dropped) = (0usize, 0usize);
        let mut newest_passed = false;
        for port in 0..FLOWS {
            let f = frame(PEER, ME, L4::Udp { sport: 53, dport: 10_000 + port });
            match run(dp, idx, Hook::Xdp, &f) {
                (true, r) => {
                    assert_eq!(r, reason::SESSION, "a reply may pass only by its session");
                    passed += 1;
                    newest_passed |= port == FLOWS - 1;
                }
                (false, r) => {
                    assert_eq!(r, reason::DEFAULT_INGRESS_DROP, "an evicted reply meets the rules");
                    dropped += 1;
                }
            }
            // The first flows were evicted long ago.
            if port == 0 {
                assert_eq!(dropped, 1, "the oldest session must have been evicted");
            }
        }
        assert!(passed <= CAPACITY as usize, "{passed} replies passed a {CAPACITY}-session table");
        assert!(newest_passed, "the newest session must still be held");
        assert_eq!(passed + dropped, usize::from(FLOWS));
        println!("{FLOWS} flows through a {CAPACITY}-session table: {held} held, {passed} replies passed, {dropped} dropped");
    })
    .expect("namespace thread");
}

//! The drop log through `BPF_PROG_TEST_RUN`: off by default, one record per
//! dropped packet when on (never for an accepted one), with the deciding
//! reason and rule and the packet's endpoints; rate-limited by each CPU's
//! token bucket; counted when the ring buffer is full.
//!
//! Every test pins itself to CPU 0: the bucket and the counters are per CPU.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun as _, TestRunOptions};
use sg_agent::{
    dataplane::{
        Dataplane,
        droplog::{DropEvent, DropLogError, DropLogRate, DropLogReader, DropLogStats},
    },
    iface::index as ifindex,
    reconcile::Reconciler,
};
use sg_common::{
    droplog::{family, hook},
    reason,
};
use sg_policy::compile::Rank;
use sg_policy::{BindingMode, GroupSpec, NicBinding, RuleId, RuleSpec, State};
use sg_tests::{
    packet::{self, L3, L4, Spec},
    testrun::{self, Hook},
    topology::Netns,
};

const NIC: &str = "s0";
const ME: [u8; 4] = [10, 1, 0, 1];
const ME6: &str = "fd00::1";
const PEER: [u8; 4] = [10, 2, 0, 1];
const PEER6: &str = "fd00::2";
const SYN: u8 = 0x02;
/// Rates high enough that nothing in a test is suppressed.
const OPEN: DropLogRate = DropLogRate {
    per_sec: 10_000,
    burst: 10_000,
};

/// A namespace with interface `s0` bound (local mode) to a basic group that
/// lets TCP 80 in from anywhere and denies TCP 23 from `10.2.0.0/16`;
/// anything else inbound meets the default drop. Returns the reconciler, the
/// interface's index and the deny rule's id.
fn setup(ns: &Netns) -> (Reconciler, u32, RuleId) {
    ns.ip(&["link", "add", NIC, "type", "veth", "peer", "name", "s0p"])
        .expect("veth");
    ns.ip(&["link", "set", NIC, "up"]).expect("up");
    testrun::pin_to_cpu0().expect("pin to CPU 0");
    let mut s = State::with_seed(7);
    let g = s.create_group(GroupSpec::basic("web")).unwrap();
    let rule = |dir, action, prio, ports, peer| {
        RuleSpec::from_text(dir, action, prio, "TCP", ports, peer).expect("a valid rule")
    };
    let ids = s
        .authorize_all(
            &g,
            vec![
                rule("ingress", "Allow", "10", "80/80", "0.0.0.0/0"),
                rule("ingress", "Allow", "10", "80/80", "::/0"),
                rule("ingress", "Deny", "1", "23/23", "10.2.0.0/16"),
            ],
        )
        .unwrap();
    s.bind_nic(NicBinding::new(
        NIC,
        BindingMode::Local,
        vec![
            IpAddr::V4(Ipv4Addr::from(ME)),
            IpAddr::V6(ME6.parse().unwrap()),
        ],
        vec![g],
    ))
    .unwrap();
    let mut reconciler = Reconciler::new(Dataplane::load().expect("load"), None);
    reconciler.reconcile(&s).expect("apply");
    (reconciler, ifindex(NIC).expect("interface"), ids[2].clone())
}

fn tcp_in(dport: u16) -> Vec<u8> {
    let l4 = L4::Tcp {
        sport: 40000,
        dport,
        flags: SYN,
    };
    packet::build(&Spec::new(L3::v4(PEER, ME), l4)).bytes
}

fn tcp_in6(dport: u16) -> Vec<u8> {
    let l4 = L4::Tcp {
        sport: 40000,
        dport,
        flags: SYN,
    };
    packet::build(&Spec::new(L3::v6(PEER6, ME6), l4)).bytes
}

/// Runs `frame` through `hook` on the bound interface; whether it passed.
fn run(dp: &mut Dataplane, idx: u32, hook: Hook, frame: &[u8]) -> bool {
    let v = testrun::verdict_on(dp, hook, frame, idx).expect("test run");
    testrun::passes(hook, v)
}

fn drain(reader: &mut DropLogReader) -> Vec<DropEvent> {
    let mut out = Vec::new();
    reader.drain(&mut out);
    out
}

fn stats(dp: &Dataplane) -> DropLogStats {
    dp.maps().drop_log_stats().expect("drop log counters")
}

#[test]
fn drops_are_logged_only_when_the_log_is_on() {
    let ns = Netns::new("droplog-on").expect("namespace");
    ns.exec(|| {
        let (mut reconciler, idx, deny) = setup(&ns);
        let dp = reconciler.dataplane();
        let nic = dp.nic_id(NIC).expect("bound");
        let mut reader = dp.maps_mut().take_drop_log().expect("the reader");
        assert!(matches!(
            dp.maps_mut().take_drop_log(),
            Err(DropLogError::ReaderTaken)
        ));

        // Off (as loaded): the drop happens, nothing is logged or counted.
        let syn22 = tcp_in(22);
        assert!(!run(dp, idx, Hook::Xdp, &syn22));
        assert_eq!(drain(&mut reader), vec![]);
        assert_eq!(stats(dp), DropLogStats::default());

        // On: one record for one drop, with what decided it.
        dp.maps_mut().set_drop_log(Some(OPEN)).unwrap();
        assert!(!run(dp, idx, Hook::Xdp, &syn22));
        let events = drain(&mut reader);
        assert_eq!(events.len(), 1, "{events:#?}");
        let e = events[0];
        assert_eq!((e.nic, e.ifindex), (nic, idx));
        assert_eq!((u32::from(e.hook), e.direction()), (hook::XDP, "ingress"));
        assert_eq!((e.reason, e.rank), (reason::DEFAULT_INGRESS_DROP, None));
        assert_eq!((e.family, e.proto, e.tcp_flags), (family::V4, 6, SYN));
        assert_eq!(e.src, Some(IpAddr::V4(Ipv4Addr::from(PEER))));
        assert_eq!(e.dst, Some(IpAddr::V4(Ipv4Addr::from(ME))));
        assert_eq!((e.sport, e.dport), (40000, 22));
        assert_eq!(e.frame_len as usize, syn22.len());
        assert!(e.ktime_ns > 0);
        assert_eq!(
            e.to_string(),
            format!(
                "drop nic={nic} ifindex={idx} hook=xdp dir=ingress reason=default_ingress_drop \
                 TCP 10.2.0.1:40000 -> 10.1.0.1:22 len={}",
                syn22.len()
            )
        );

        // A rule's drop carries its rank, which names the rule.
        assert!(!run(dp, idx, Hook::Xdp, &tcp_in(23)));
        let events = drain(&mut reader);
        assert_eq!(events.len(), 1, "{events:#?}");
        let e = events[0];
        assert_eq!(e.reason, reason::RULE);
        let rank = e.rank.expect("a rule decided");
        assert_eq!(dp.rank(NIC, 0, rank), Some(&Rank::Rule(deny.clone())));
        assert!(
            e.to_string()
                .contains(&format!(" reason=rule rank={rank} TCP ")),
            "{e}"
        );
        assert!(
            e.line("web-1", Some(&deny.to_string()))
                .starts_with(&format!(
                    "drop nic=web-1 ifindex={idx} hook=xdp dir=ingress reason=rule rule={deny} TCP "
                )),
            "{}",
            e.line("web-1", Some(&deny.to_string()))
        );

        // An accepted packet: nothing.
        assert!(run(dp, idx, Hook::Xdp, &tcp_in(80)));
        assert_eq!(drain(&mut reader), vec![]);

        // Egress: TCP to port 25 (blocked by default), through TC egress.
        let smtp = packet::build(&Spec::new(
            L3::v4(ME, PEER),
            L4::Tcp {
                sport: 40001,
                dport: 25,
                flags: SYN,
            },
        ))
        .bytes;
        assert!(!run(dp, idx, Hook::TcEgress, &smtp));
        let events = drain(&mut reader);
        assert_eq!(events.len(), 1, "{events:#?}");
        let e = events[0];
        assert_eq!(
            (u32::from(e.hook), e.direction()),
            (hook::TC_EGRESS, "egress")
        );
        assert_eq!((e.reason, e.rank), (reason::PORT_25, None));
        assert_eq!((e.sport, e.dport), (40001, 25));
        assert_eq!(e.src, Some(IpAddr::V4(Ipv4Addr::from(ME))));

        // Off again: nothing more.
        dp.maps_mut().set_drop_log(None).unwrap();
        assert!(!run(dp, idx, Hook::Xdp, &syn22));
        assert_eq!(drain(&mut reader), vec![]);
        assert_eq!(
            stats(dp),
            DropLogStats {
                logged: 3,
                suppressed: 0,
                ringbuf_full: 0
            }
        );
    })
    .expect("namespace thread");
}

/// Runs `frame` once through the TC ingress program (attach mode `tc`) as if
/// it arrived on `idx`; whether it passed.
fn run_tc_ingress(dp: &mut Dataplane, idx: u32, frame: &[u8]) -> bool {
    let mut ctx = vec![0u8; 44];
    // struct __sk_buff: ifindex at byte 40.
    ctx[40..44].copy_from_slice(&idx.to_ne_bytes());
    let mut out = vec![0u8; frame.len() + 512];
    let r = dp
        .tc_ingress()
        .expect("TC ingress program")
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat: 1,
            ..TestRunOptions::default()
        })
        .expect("test run");
    #[expect(clippy::cast_possible_wrap, reason = "TC verdicts are i32")]
    let verdict = r.return_value as i32;
    verdict == testrun::TC_ACT_UNSPEC
}

#[test]
fn tc_ingress_drops_are_logged_as_ingress_by_their_own_hook() {
    let ns = Netns::new("droplog-tci").expect("namespace");
    ns.exec(|| {
        let (mut reconciler, idx, _) = setup(&ns);
        let dp = reconciler.dataplane();
        let mut reader = dp.maps_mut().take_drop_log().unwrap();
        dp.maps_mut().set_drop_log(Some(OPEN)).unwrap();
        // TC ingress decides as the receive side: 80 in passes, 22 drops.
        assert!(run_tc_ingress(dp, idx, &tcp_in(80)));
        assert!(!run_tc_ingress(dp, idx, &tcp_in(22)));
        let events = drain(&mut reader);
        assert_eq!(events.len(), 1, "{events:#?}");
        let e = events[0];
        assert_eq!(u32::from(e.hook), hook::TC_INGRESS);
        assert_eq!(
            (e.direction(), e.reason),
            ("ingress", reason::DEFAULT_INGRESS_DROP)
        );
        assert!(
            e.to_string().contains(" hook=tc_ingress dir=ingress "),
            "{e}"
        );
    })
    .expect("namespace thread");
}

#[test]
fn ipv6_drops_are_logged_with_their_addresses() {
    let ns = Netns::new("droplog-v6").expect("namespace");
    ns.exec(|| {
        let (mut reconciler, idx, _) = setup(&ns);
        let dp = reconciler.dataplane();
        let mut reader = dp.maps_mut().take_drop_log().unwrap();
        dp.maps_mut().set_drop_log(Some(OPEN)).unwrap();
        assert!(run(dp, idx, Hook::Xdp, &tcp_in6(80)));
        let frame = tcp_in6(22);
        assert!(!run(dp, idx, Hook::Xdp, &frame));
        let events = drain(&mut reader);
        assert_eq!(events.len(), 1, "{events:#?}");
        let e = events[0];
        assert_eq!((e.family, e.proto), (family::V6, 6));
        assert_eq!(e.src, Some(IpAddr::V6(PEER6.parse::<Ipv6Addr>().unwrap())));
        assert_eq!(e.dst, Some(IpAddr::V6(ME6.parse::<Ipv6Addr>().unwrap())));
        assert_eq!((e.sport, e.dport), (40000, 22));
        assert_eq!((e.reason, e.rank), (reason::DEFAULT_INGRESS_DROP, None));
        assert!(
            e.to_string().ends_with(&format!(
                " TCP [fd00::2]:40000 -> [fd00::1]:22 len={}",
                frame.len()
            )),
            "{e}"
        );
    })
    .expect("namespace thread");
}

#[test]
fn malformed_drops_are_logged_with_what_was_parsed_and_nothing_stale() {
    let ns = Netns::new("droplog-bad").expect("namespace");
    ns.exec(|| {
        let (mut reconciler, idx, _) = setup(&ns);
        let dp = reconciler.dataplane();
        let mut reader = dp.maps_mut().take_drop_log().unwrap();
        dp.maps_mut().set_drop_log(Some(OPEN)).unwrap();
        // A TCP header cut short inside a consistent IPv4 datagram: the
        // addresses were read, the ports were not.
        let built = packet::build(&Spec::new(
            L3::v4(PEER, ME),
            L4::Tcp {
                sport: 40000,
                dport: 80,
                flags: SYN,
            },
        ));
        let cut = built.cut_consistent(built.l4_off.unwrap() + 10);
        assert!(!run(dp, idx, Hook::Xdp, &cut));
        // Then an IPv4 header cut short: no addresses at all. The parser's
        // scratch still holds the previous packet's; none may leak into the record.
        let short = packet::build(&Spec::new(
            L3::v4([192, 0, 2, 9], ME),
            L4::Udp { sport: 1, dport: 2 },
        ))
        .cut(packet::MIN_L2 + 12);
        assert!(!run(dp, idx, Hook::Xdp, &short));
        let events = drain(&mut reader);
        assert_eq!(events.len(), 2, "{events:#?}");
        let (l4, l3) = (events[0], events[1]);
        assert_eq!((l4.reason, l4.rank), (reason::MALFORMED, None));
        assert_eq!((l4.family, l4.proto), (family::V4, 6));
        assert_eq!(l4.src, Some(IpAddr::V4(Ipv4Addr::from(PEER))));
        assert_eq!((l4.sport, l4.dport), (0, 0));
        assert_eq!(l4.frame_len as usize, cut.len());
        assert_eq!(
            (l3.reason, l3.family, l3.proto),
            (reason::MALFORMED, family::OTHER, 0)
        );
        assert_eq!((l3.src, l3.dst), (None, None));
        assert!(
            l3.to_string().contains(" reason=malformed non-IP len="),
            "{l3}"
        );
    })
    .expect("namespace thread");
}

#[test]
fn a_burst_of_drops_logs_the_bucket_and_counts_the_rest() {
    let ns = Netns::new("droplog-rate").expect("namespace");
    ns.exec(|| {
        let (mut reconciler, idx, _) = setup(&ns);
        let dp = reconciler.dataplane();
        let mut reader = dp.maps_mut().take_drop_log().unwrap();
        dp.maps_mut()
            .set_drop_log(Some(DropLogRate {
                per_sec: 1,
                burst: 5,
            }))
            .unwrap();
        let frame = tcp_in(22);
        for _ in 0..100 {
            assert!(!run(dp, idx, Hook::Xdp, &frame));
        }
        let s = stats(dp);
        // Five from the full bucket; a sixth if a second's refill landed.
        assert!((5..=6).contains(&s.logged), "{s:?}");
        assert_eq!(s.logged + s.suppressed, 100, "{s:?}");
        assert_eq!(s.ringbuf_full, 0);
        assert_eq!(drain(&mut reader).len() as u64, s.logged);
        // Turning it on again refills the bucket.
        dp.maps_mut()
            .set_drop_log(Some(DropLogRate {
                per_sec: 1,
                burst: 2,
            }))
            .unwrap();
        for _ in 0..10 {
            assert!(!run(dp, idx, Hook::Xdp, &frame));
        }
        let more = drain(&mut reader).len();
        assert!((2..=3).contains(&more), "{more} logged after refilling");
    })
    .expect("namespace thread");
}

#[test]
fn a_full_ring_buffer_is_counted_not_waited_for() {
    let ns = Netns::new("droplog-full").expect("namespace");
    ns.exec(|| {
        let (mut reconciler, idx, _) = setup(&ns);
        let dp = reconciler.dataplane();
        dp.maps_mut().set_drop_log(Some(OPEN)).unwrap();
        // Nobody reads: 256 KiB hold about 3,300 records of 72 bytes (plus
        // an 8-byte header each).
        let frame = tcp_in(22);
        for _ in 0..4_000 {
            assert!(!run(dp, idx, Hook::Xdp, &frame));
        }
        let s = stats(dp);
        assert_eq!(s.suppressed, 0, "{s:?}");
        assert!(s.ringbuf_full > 0, "{s:?}");
        assert_eq!(s.logged + s.ringbuf_full, 4_000, "{s:?}");
        // What was logged is all there, and reading makes room again.
        let mut reader = dp.maps_mut().take_drop_log().unwrap();
        assert_eq!(drain(&mut reader).len() as u64, s.logged);
        assert!(!run(dp, idx, Hook::Xdp, &frame));
        assert_eq!(drain(&mut reader).len(), 1);
    })
    .expect("namespace thread");
}

#[test]
fn rates_out_of_range_are_refused_by_name() {
    let ns = Netns::new("droplog-rates").expect("namespace");
    ns.exec(|| {
        let (mut reconciler, _, _) = setup(&ns);
        let dp = reconciler.dataplane();
        let refused = |dp: &mut Dataplane, per_sec, burst| {
            dp.maps_mut()
                .set_drop_log(Some(DropLogRate { per_sec, burst }))
                .unwrap_err()
                .to_string()
        };
        let e = refused(dp, 0, 5);
        assert!(e.contains("drop_log.per_sec") && e.contains("10000"), "{e}");
        let e = refused(dp, 10_001, 5);
        assert!(e.contains("drop_log.per_sec"), "{e}");
        let e = refused(dp, 5, 0);
        assert!(e.contains("drop_log.burst") && e.contains("10000"), "{e}");
        let e = refused(dp, 5, 10_001);
        assert!(e.contains("drop_log.burst"), "{e}");
        dp.maps_mut()
            .set_drop_log(Some(DropLogRate {
                per_sec: 10_000,
                burst: 1,
            }))
            .unwrap();
    })
    .expect("namespace thread");
}

//! End to end, with real traffic between two namespaces: with the programs
//! attached to one end of a veth pair, TCP, UDP and ping pass both ways over
//! IPv4 and IPv6; the counters match, counter by counter, an independent
//! capture on the other end; after detach nothing of ours remains.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use sg_agent::dataplane::{AttachMode, Counters, Dataplane};
use sg_common::counter::{DIR_EGRESS, DIR_INGRESS, ICMP, ICMPV6, SLOTS, TCP, UDP};
use sg_tests::{
    capture::Capture,
    probe::{self, Servers},
    topology::{Host, Pair},
};

/// Attaches `dp` to `host`'s interface from inside its namespace.
fn attach(dp: &mut Dataplane, host: &Host, mode: AttachMode) {
    let ifname = host.ifname.clone();
    host.ns
        .exec(|| dp.attach(&ifname, mode))
        .expect("enter ns")
        .expect("attach");
}

fn our_program_ids(dp: &mut Dataplane) -> HashSet<u32> {
    let xdp = dp.xdp().unwrap().info().unwrap().id();
    let tc = dp.tc_egress().unwrap().info().unwrap().id();
    let tc_in = dp.tc_ingress().unwrap().info().unwrap().id();
    HashSet::from([xdp, tc, tc_in])
}

const UDP_PROBES: u64 = 3;
const PINGS: u64 = 3;

/// Runs every probe from `from` to `to`, asserting each is allowed.
fn probe_all(from: &Host, to: &Host, servers: &Servers) {
    for addr in [IpAddr::V4(to.v4), IpAddr::V6(to.v6)] {
        let tcp = probe::tcp(&from.ns, SocketAddr::new(addr, servers.tcp_port));
        assert!(tcp.allowed(), "TCP {addr}: {tcp:?}");
        for _ in 0..UDP_PROBES {
            let udp = probe::udp(&from.ns, SocketAddr::new(addr, servers.udp_port));
            assert!(udp.allowed(), "UDP {addr}: {udp:?}");
        }
        let ping = probe::ping(&from.ns, addr, u32::try_from(PINGS).unwrap());
        assert!(ping.allowed(), "ping {addr}: {ping:?}");
    }
}

fn check_traffic(mode: AttachMode) {
    let pair = Pair::new().expect("topology");
    let mut dp = Dataplane::load().expect("load");
    let servers_a = Servers::start(&pair.a.ns).expect("servers in a");
    let servers_b = Servers::start(&pair.b.ns).expect("servers in b");
    let mut capture = Capture::start(&pair.a).expect("capture on a");
    attach(&mut dp, &pair.b, mode);
    let before = quiet_baseline(&dp, &mut capture);

    probe_all(&pair.a, &pair.b, &servers_b);
    probe_all(&pair.b, &pair.a, &servers_a);

    // What a sent, b received (XDP); what b sent (TC egress), a received.
    // Poll until the last frames (FINs, ACKs) have crossed and both agree.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (rx, tx, tally) = loop {
        let c = Counters::read(&dp).expect("counters").since(&before);
        let rx: Vec<u64> = (0..SLOTS).map(|i| c.get(DIR_INGRESS, i)).collect();
        let tx: Vec<u64> = (0..SLOTS).map(|i| c.get(DIR_EGRESS, i)).collect();
        let tally = capture.drain().expect("capture").clone();
        if (rx == tally.sent && tx == tally.received) || Instant::now() > deadline {
            break (rx, tx, tally);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(rx, tally.sent, "b's ingress counters vs frames a sent");
    assert_eq!(
        tx, tally.received,
        "b's egress counters vs frames a received"
    );

    // The traffic we made ourselves, counted exactly: each UDP probe is one
    // datagram each way, each ping one echo each way, in both directions of
    // probing and over both families.
    let udp = 2 * 2 * UDP_PROBES;
    assert_eq!(rx[UDP as usize], udp, "UDP received by b");
    assert_eq!(tx[UDP as usize], udp, "UDP sent by b");
    assert_eq!(
        rx[ICMP as usize],
        2 * PINGS,
        "ICMP echo requests and replies received by b"
    );
    assert_eq!(tx[ICMP as usize], 2 * PINGS, "ICMP sent by b");
    // ICMPv6 also carries neighbour discovery, TCP its handshakes and ACKs.
    assert!(rx[ICMPV6 as usize] >= 2 * PINGS && tx[ICMPV6 as usize] >= 2 * PINGS);
    assert!(rx[TCP as usize] >= 4 * 3 && tx[TCP as usize] >= 4 * 2);

    // Detach: nothing of ours may remain on the interface or in the kernel.
    let ids = our_program_ids(&mut dp);
    dp.detach().expect("detach");
    assert_nothing_attached(&pair.b, &ids);
    drop(dp);
    assert!(
        sg_tests::eventually(Duration::from_secs(5), || !sg_tests::any_loaded(&ids)),
        "programs {ids:?} still loaded 5 s after drop"
    );
}

/// Waits until the link is quiet (a new interface sends MLD reports and the
/// like on its own for a second or two), then starts both counts there: a
/// frame in flight at the baseline would be counted by one side only.
fn quiet_baseline(dp: &Dataplane, capture: &mut Capture) -> Counters {
    let read = || {
        let seen = capture.drain().expect("capture").clone();
        (seen, Counters::read(dp).expect("counters"))
    };
    let (_, counted) = sg_tests::steady(Duration::from_secs(10), Duration::from_millis(100), read)
        .expect("the link never went quiet");
    capture.reset();
    counted
}

/// No XDP program, no clsact qdisc and no BPF link of ours on `host`.
fn assert_nothing_attached(host: &Host, ids: &HashSet<u32>) {
    let link = host.link_details().expect("ip link");
    assert!(!link.contains("xdp"), "XDP still attached: {link}");
    let qdiscs = host.qdiscs().expect("tc qdisc");
    assert!(!qdiscs.contains("clsact"), "clsact left behind: {qdiscs}");
    // Link objects are freed after an RCU grace period: poll.
    assert!(
        sg_tests::eventually(Duration::from_secs(5), || sg_tests::links_of(ids) == 0),
        "links of our programs remain"
    );
    let pins = bpffs_entries();
    assert!(
        pins.iter().all(|p| !p.to_lowercase().contains("sg")),
        "pins left: {pins:?}"
    );
}

/// Every path under /sys/fs/bpf (an agent pins its session maps while it
/// runs, under `/sys/fs/bpf/sg`, and removes them when it exits).
fn bpffs_entries() -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            out.push(e.path().display().to_string());
            if e.path().is_dir() {
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(std::path::Path::new("/sys/fs/bpf"), &mut out);
    out
}

#[test]
fn traffic_passes_both_ways_and_counters_match_capture_native_xdp() {
    check_traffic(AttachMode::Native);
}

#[test]
fn traffic_passes_both_ways_and_counters_match_capture_generic_xdp() {
    check_traffic(AttachMode::Generic);
}

#[test]
fn traffic_passes_both_ways_and_counters_match_capture_tc_ingress() {
    check_traffic(AttachMode::Tc);
}

#[test]
fn dropping_the_dataplane_detaches_everything() {
    for mode in [AttachMode::Native, AttachMode::Auto] {
        let pair = Pair::new().expect("topology");
        let mut dp = Dataplane::load().expect("load");
        attach(&mut dp, &pair.b, mode);
        let ids = our_program_ids(&mut dp);
        // Auto on a veth means TC ingress (see `AttachMode::Auto`).
        let xdp = mode == AttachMode::Native;
        assert_eq!(
            pair.b.link_details().unwrap().contains("xdp"),
            xdp,
            "{mode:?}: XDP attached?"
        );
        assert_eq!(
            sg_tests::links_of(&ids),
            2,
            "{mode:?}: expected two links (XDP or tcx ingress, and tcx egress)"
        );
        drop(dp);
        assert_nothing_attached(&pair.b, &ids);
    }
}

#[test]
fn the_driver_of_a_veth_is_veth() {
    let pair = Pair::new().expect("topology");
    let name = pair.b.ifname.clone();
    let driver = pair
        .b
        .ns
        .exec(|| sg_agent::dataplane::driver(&name))
        .unwrap();
    assert_eq!(driver.as_deref(), Some("veth"));
    let none = pair
        .b
        .ns
        .exec(|| sg_agent::dataplane::driver("nosuch0"))
        .unwrap();
    assert_eq!(none, None);
}

//! `port` binding mode with real traffic: the NIC is the host side of the
//! workload's veth (`b`'s end, the workload being `a`), so the workload's
//! ingress is what leaves through it (TC egress) and its egress what arrives
//! (XDP). Anti-spoofing is on by default in this mode: the workload cannot
//! send from an address that is not its own.

use std::net::{IpAddr, SocketAddr};

use sg_agent::policy::{BindingMode, GroupSpec, NicBinding, State};
use sg_common::{policy::DIR_EGRESS, reason};
use sg_tests::{
    bench::{Bench, rule},
    probe,
};

const SPOOFED: &str = "192.168.1.10";

fn policy(bench: &Bench, anti_spoof: Option<bool>) -> State {
    let mut s = State::with_seed(9);
    let g = s.create_group(GroupSpec::basic("workload")).unwrap();
    s.authorize_all(
        &g,
        vec![
            rule("ingress", "Allow", "1", "TCP", "80/80", "0.0.0.0/0"),
            // Echo replies from the host back to the workload (no sessions yet).
            rule("ingress", "Allow", "1", "ICMP", "-1/-1", "10.77.0.2"),
        ],
    )
    .unwrap();
    let mut nic = NicBinding::new(
        &bench.pair.b.ifname,
        BindingMode::Port,
        vec![IpAddr::V4(bench.pair.a.v4), IpAddr::V6(bench.pair.a.v6)],
        vec![g],
    );
    nic.anti_spoof = anti_spoof;
    s.bind_nic(nic).unwrap();
    s
}

#[test]
fn port_mode_enforces_the_workloads_ingress_on_transmit_and_stops_spoofing() {
    let mut bench = Bench::new(&[SPOOFED], &[], &[80, 22]).unwrap();
    bench.apply(&policy(&bench, None)).unwrap();
    let (a, b) = (&bench.pair.a, &bench.pair.b);
    let workload = IpAddr::V4(a.v4);
    // Towards the workload: its ingress rules decide, on b's transmit side.
    assert!(probe::tcp(&b.ns, SocketAddr::new(workload, 80)).allowed());
    assert!(!probe::tcp(&b.ns, SocketAddr::new(workload, 22)).allowed());
    // From the workload: its own address passes, a forged one does not.
    assert!(probe::ping_from(&a.ns, Some(workload), b.v4.into(), 1).allowed());
    let spoofed: IpAddr = SPOOFED.parse().unwrap();
    assert!(!probe::ping_from(&a.ns, Some(spoofed), b.v4.into(), 1).allowed());
    let name = b.ifname.clone();
    let counts = bench.enforcer.dataplane().reason_counts(&name).unwrap();
    assert!(
        counts
            .iter()
            .any(|&(d, r, n)| d == DIR_EGRESS && r == reason::SPOOF_SOURCE && n >= 1),
        "no anti-spoofing drop counted: {counts:?}"
    );
    // Turned off for this binding, the forged source passes.
    bench.apply(&policy(&bench, Some(false))).unwrap();
    let (a, b) = (&bench.pair.a, &bench.pair.b);
    assert!(probe::ping_from(&a.ns, Some(spoofed), b.v4.into(), 1).allowed());
}

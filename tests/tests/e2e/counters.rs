//! Per-rule hits (packets, bytes) and per-reason counts, read from the agent's
//! data plane after real traffic; rule hits survive a policy switch that moves
//! the rule to another rank.

use std::{net::SocketAddr, time::Duration};

use sg_agent::dataplane::RuleHits;
use sg_common::{policy::DIR_INGRESS, reason};
use sg_policy::compile::Rank;
use sg_policy::{GroupSpec, RuleId, State};
use sg_tests::{
    bench::{Bench, rule},
    probe,
};

/// Ping's default frame: 14 Ethernet + 20 IPv4 + 8 ICMP + 56 data bytes.
const PING_FRAME: u64 = 98;

fn hits(bench: &mut Bench, id: &RuleId) -> (u64, u64) {
    let name = bench.pair.b.ifname.clone();
    let all = bench.reconciler.dataplane().rule_hits(&name).unwrap();
    all.iter()
        .find(|h: &&RuleHits| h.rank == Rank::Rule(id.clone()))
        .map_or((0, 0), |h| (h.packets, h.bytes))
}

/// Waits until the reason counters stop moving (a new interface's own MLD
/// reports reach the rules too), so what follows is counted exactly.
fn settle(bench: &mut Bench) {
    let name = bench.pair.b.ifname.clone();
    let read = || bench.reconciler.dataplane().reason_counts(&name).unwrap();
    assert!(
        sg_tests::steady(Duration::from_secs(10), Duration::from_millis(150), read).is_some(),
        "counters never settled"
    );
}

#[test]
fn rule_hits_and_drop_reasons_count_exactly_and_survive_a_switch() {
    let mut bench = Bench::new(&[], &[5353], &[]).unwrap();
    let mut s = State::with_seed(11);
    let g = s.create_group(GroupSpec::basic("web")).unwrap();
    let ping_rule = s
        .authorize(
            &g,
            rule("ingress", "Allow", "5", "ICMP", "-1/-1", "10.77.0.1"),
        )
        .unwrap();
    s.bind_nic(bench.server_nic(&[&g])).unwrap();
    bench.apply(&s).unwrap();
    settle(&mut bench);
    let drops_before = bench.decided(DIR_INGRESS, reason::DEFAULT_INGRESS_DROP);

    // Four pings of one ping process (one echo identifier): the first echo
    // request hits the rule and opens a session; the other three and every
    // reply ride on it.
    assert!(probe::ping(&bench.pair.a.ns, bench.pair.b.v4.into(), 4).allowed());
    assert_eq!(hits(&mut bench, &ping_rule), (1, PING_FRAME));
    assert_eq!(bench.decided(DIR_INGRESS, reason::SESSION), 3);
    // Three UDP datagrams no rule allows: three default drops.
    let to = SocketAddr::new(bench.pair.b.v4.into(), 5353);
    for _ in 0..3 {
        assert!(!probe::udp(&bench.pair.a.ns, to).allowed());
    }
    assert_eq!(
        bench.decided(DIR_INGRESS, reason::DEFAULT_INGRESS_DROP) - drops_before,
        3
    );

    // A stronger rule now comes first: the ping rule moves to another rank
    // (and the new version lives in the other slot), its count goes on.
    s.authorize(
        &g,
        rule("ingress", "Deny", "1", "TCP", "23/23", "0.0.0.0/0"),
    )
    .unwrap();
    bench.apply(&s).unwrap();
    assert_eq!(
        hits(&mut bench, &ping_rule),
        (1, PING_FRAME),
        "hits lost in the switch"
    );
    // A new ping process, a new identifier: a new session, opened by the rule.
    assert!(probe::ping(&bench.pair.a.ns, bench.pair.b.v4.into(), 2).allowed());
    assert_eq!(hits(&mut bench, &ping_rule), (2, 2 * PING_FRAME));
    // Revoking the rule stops the pings; the drops are counted by reason.
    s.revoke(&g, &ping_rule).unwrap();
    bench.apply(&s).unwrap();
    let before = bench.decided(DIR_INGRESS, reason::DEFAULT_INGRESS_DROP);
    assert!(!probe::ping(&bench.pair.a.ns, bench.pair.b.v4.into(), 1).allowed());
    assert_eq!(
        bench.decided(DIR_INGRESS, reason::DEFAULT_INGRESS_DROP) - before,
        1
    );
}

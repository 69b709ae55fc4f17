//! The six use cases of seed 002 as table tests: the seed's rule tables, with
//! packets that must pass and packets that must not. The seed's masked
//! addresses (`192.168.XX.XX`) are replaced by concrete ones.

use crate::support::{basic, bind, ip, ping, rule, state, tcp, udp, verdict};
use sg_policy::{Direction, Packet, RuleSpec, State, Verdict};

const WEB: &str = "10.0.0.10";
const WEB6: &str = "2001:db8::10";

/// One host NIC `eth0` in one basic group with the given rules.
fn host_with(rules: Vec<RuleSpec>) -> State {
    let mut s = state();
    let g = basic(&mut s, "case");
    s.authorize_all(&g, rules).expect("seed rules are valid");
    bind(&mut s, "eth0", &[WEB, WEB6], &[&g]);
    s
}

fn check(s: &State, direction: Direction, pass: &[Packet], fail: &[Packet]) {
    for p in pass {
        assert_eq!(
            verdict(s, "eth0", direction, p),
            Verdict::Accept,
            "must pass: {p:?}"
        );
    }
    for p in fail {
        assert_eq!(
            verdict(s, "eth0", direction, p),
            Verdict::Drop,
            "must not pass: {p:?}"
        );
    }
}

#[test]
fn case_1_web_service_opens_80_and_443_to_everyone_and_nothing_else() {
    let s = host_with(vec![
        rule("ingress", "Allow", "1", "TCP", "80/80", "0.0.0.0/0"),
        rule("ingress", "Allow", "1", "TCP", "443/443", "0.0.0.0/0"),
    ]);
    check(
        &s,
        Direction::Ingress,
        &[
            tcp("203.0.113.5", WEB, 80),
            tcp("198.51.100.1", WEB, 443),
            tcp("10.9.9.9", WEB, 80),
        ],
        &[
            tcp("203.0.113.5", WEB, 22),
            tcp("203.0.113.5", WEB, 8080),
            udp("203.0.113.5", WEB, 80),
            ping("203.0.113.5", WEB),
            // 0.0.0.0/0 is IPv4 only.
            tcp("2001:db8:ffff::1", WEB6, 80),
        ],
    );
}

#[test]
fn case_2_remote_access_only_from_the_administrator_and_workbench_ranges() {
    let s = host_with(vec![
        rule("ingress", "Allow", "1", "TCP", "22/22", "192.168.1.10"),
        rule("ingress", "Allow", "1", "TCP", "3389/3389", "192.168.1.10"),
        rule("ingress", "Allow", "1", "TCP", "22/22", "161.117.0.0/16"),
        rule("ingress", "Allow", "1", "TCP", "22/22", "100.104.0.0/16"),
    ]);
    check(
        &s,
        Direction::Ingress,
        &[
            tcp("192.168.1.10", WEB, 22),
            tcp("192.168.1.10", WEB, 3389),
            tcp("161.117.200.3", WEB, 22),
            tcp("100.104.0.1", WEB, 22),
        ],
        &[
            tcp("192.168.1.11", WEB, 22),
            tcp("203.0.113.7", WEB, 22),
            tcp("192.168.1.10", WEB, 23),
            tcp("161.117.200.3", WEB, 3389),
            tcp("161.118.0.1", WEB, 22),
        ],
    );
}

#[test]
fn case_3_databases_accept_their_port_only_from_their_clients() {
    let mut s = state();
    let app = basic(&mut s, "app");
    let db = basic(&mut s, "db");
    s.authorize_all(
        &db,
        vec![
            rule("ingress", "Allow", "1", "TCP", "3306/3306", "172.16.1.1"),
            rule("ingress", "Allow", "1", "TCP", "1521/1521", "192.168.1.1"),
            rule(
                "ingress",
                "Allow",
                "1",
                "TCP",
                "1433/1433",
                "192.168.0.0/16",
            ),
            rule("ingress", "Allow", "1", "TCP", "5432/5432", app.as_str()),
        ],
    )
    .unwrap();
    bind(&mut s, "eth0", &[WEB], &[&db]);
    bind(&mut s, "app0", &["10.0.1.5"], &[&app]);
    check(
        &s,
        Direction::Ingress,
        &[
            tcp("172.16.1.1", WEB, 3306),
            tcp("192.168.1.1", WEB, 1521),
            tcp("192.168.77.3", WEB, 1433),
            tcp("10.0.1.5", WEB, 5432),
        ],
        &[
            tcp("172.16.1.2", WEB, 3306),
            tcp("192.168.1.1", WEB, 3306),
            tcp("192.169.0.1", WEB, 1433),
            // Not a member of the app group.
            tcp("10.0.1.6", WEB, 5432),
            tcp("10.0.1.5", WEB, 3306),
        ],
    );
    // A NIC that joins the app group gets the access at once.
    bind(&mut s, "app1", &["10.0.1.6"], &[&app]);
    assert_eq!(
        verdict(&s, "eth0", Direction::Ingress, &tcp("10.0.1.6", WEB, 5432)),
        Verdict::Accept
    );
}

#[test]
fn case_3_cross_account_group_peers_are_refused_with_a_reason() {
    let err = sg_policy::RuleSpec::from_text(
        "ingress",
        "Allow",
        "1",
        "TCP",
        "6379/6379",
        "160998252992/sg-bp174yoe2ib1sqj5",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("rule.peer"), "{err}");
}

#[test]
fn case_3_deny_3306_at_priority_100_wins_only_against_an_allow_of_equal_priority() {
    // The seed's advice: against an allow from 0.0.0.0/0, add a deny for 3306
    // at priority 100. Per SPEC §3 the order is priority first, so the deny
    // blocks 3306 when the allow is also at 100 (Drop before Accept) ...
    let s = host_with(vec![
        rule("ingress", "Allow", "100", "TCP", "1/65535", "0.0.0.0/0"),
        rule("ingress", "Deny", "100", "TCP", "3306/3306", "0.0.0.0/0"),
    ]);
    check(
        &s,
        Direction::Ingress,
        &[tcp("203.0.113.1", WEB, 443)],
        &[tcp("203.0.113.1", WEB, 3306)],
    );
    // ... but an allow at priority 1 is stronger than any rule at 100.
    let s = host_with(vec![
        rule("ingress", "Allow", "1", "TCP", "1/65535", "0.0.0.0/0"),
        rule("ingress", "Deny", "100", "TCP", "3306/3306", "0.0.0.0/0"),
    ]);
    check(
        &s,
        Direction::Ingress,
        &[tcp("203.0.113.1", WEB, 3306)],
        &[],
    );
}

#[test]
fn case_4_icmp_only_from_the_client_for_each_family() {
    let s = host_with(vec![
        rule("ingress", "Allow", "1", "ICMP", "-1/-1", "198.51.100.7"),
        rule("ingress", "Allow", "1", "ICMPv6", "-1/-1", "2001:db8:1::7"),
    ]);
    check(
        &s,
        Direction::Ingress,
        &[
            ping("198.51.100.7", WEB),
            ping("2001:db8:1::7", WEB6),
            Packet::icmp(ip("198.51.100.7"), ip(WEB), 13, 0),
        ],
        &[
            ping("198.51.100.8", WEB),
            ping("2001:db8:1::8", WEB6),
            tcp("198.51.100.7", WEB, 22),
            udp("2001:db8:1::7", WEB6, 53),
        ],
    );
}

#[test]
fn case_5_group_peer_lets_members_of_a_reach_b_on_ftp() {
    let mut s = state();
    let a = basic(&mut s, "A");
    let b = basic(&mut s, "B");
    s.authorize(
        &b,
        rule("ingress", "Allow", "1", "TCP", "21/21", a.as_str()),
    )
    .unwrap();
    // Isolate B's own members so only the rule speaks.
    s.set_inner_policy(&b, sg_policy::InnerPolicy::Drop)
        .unwrap();
    bind(&mut s, "eth0", &[WEB, WEB6], &[&b]);
    bind(&mut s, "a0", &["10.0.2.1", "2001:db8:2::1"], &[&a]);
    bind(&mut s, "b1", &["10.0.3.1"], &[&b]);
    check(
        &s,
        Direction::Ingress,
        &[tcp("10.0.2.1", WEB, 21), tcp("2001:db8:2::1", WEB6, 21)],
        &[
            tcp("10.0.2.1", WEB, 22),
            tcp("10.0.2.2", WEB, 21),
            // A member of B itself: B isolates its members and the rule names A.
            tcp("10.0.3.1", WEB, 21),
        ],
    );
}

#[test]
fn case_6_outbound_whitelist_denies_everything_else() {
    let s = host_with(vec![
        rule("egress", "Deny", "2", "All", "-1/-1", "0.0.0.0/0"),
        rule("egress", "Allow", "1", "TCP", "80/80", "47.96.1.1"),
        rule("egress", "Allow", "1", "TCP", "443/443", "121.199.1.1"),
    ]);
    check(
        &s,
        Direction::Egress,
        &[tcp(WEB, "47.96.1.1", 80), tcp(WEB, "121.199.1.1", 443)],
        &[
            tcp(WEB, "47.96.1.1", 443),
            tcp(WEB, "121.199.1.1", 80),
            udp(WEB, "8.8.8.8", 53),
            ping(WEB, "1.1.1.1"),
        ],
    );
    // The deny names 0.0.0.0/0: IPv6 egress falls to the basic default (accept).
    assert_eq!(
        verdict(
            &s,
            "eth0",
            Direction::Egress,
            &tcp(WEB6, "2001:db8:9::9", 443)
        ),
        Verdict::Accept
    );
}

#[test]
fn case_6_whitelist_fails_if_the_deny_is_as_strong_as_the_allows() {
    // The seed's note: at equal priority Deny wins, so the whitelist breaks.
    let s = host_with(vec![
        rule("egress", "Deny", "1", "All", "-1/-1", "0.0.0.0/0"),
        rule("egress", "Allow", "1", "TCP", "80/80", "47.96.1.1"),
    ]);
    check(&s, Direction::Egress, &[], &[tcp(WEB, "47.96.1.1", 80)]);
}

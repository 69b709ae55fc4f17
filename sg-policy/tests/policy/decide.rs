//! SPEC §3, step by step: at least one test per rule of "deciding one packet".

use std::net::Ipv4Addr;

use crate::support::{basic, bind, decide, ip, ping, rule, state, tcp, udp, verdict};
use sg_policy::evaluate::tcp_flags;
use sg_policy::{
    AlwaysAllowed, BindingMode, Cidr, Decision, Direction, Fragment, Frame, GroupSpec, InnerPolicy,
    NicBinding, Packet, PortListEntry, PortListSpec, PortMatch, PortRange, PrefixListEntry,
    PrefixListSpec, Reason, Settings, SpoofCheck, State, Verdict, evaluate, evaluate_frame,
    merged_rules, starts_session,
};
use sg_policy::{Family, GroupId};

const ME: &str = "10.0.0.10";
const ME6: &str = "2001:db8::10";

/// A `port`-mode NIC `vm0` (anti-spoofing on by default) in one basic group.
fn port_host() -> (State, GroupId) {
    let mut s = state();
    let g = basic(&mut s, "g");
    s.bind_nic(NicBinding::new(
        "vm0",
        BindingMode::Port,
        vec![ip(ME), ip(ME6)],
        vec![g.clone()],
    ))
    .unwrap();
    (s, g)
}

/// A host whose only group is enterprise with a deny-all ingress rule.
fn locked_host() -> State {
    let mut s = state();
    let g = s.create_group(GroupSpec::enterprise("locked")).unwrap();
    s.authorize_all(
        &g,
        vec![
            rule("ingress", "Drop", "1", "ALL", "-1/-1", "0.0.0.0/0"),
            rule("ingress", "Drop", "1", "ALL", "-1/-1", "::/0"),
            rule("egress", "Drop", "1", "ALL", "-1/-1", "0.0.0.0/0"),
            rule("egress", "Drop", "1", "ALL", "-1/-1", "::/0"),
        ],
    )
    .unwrap();
    bind(&mut s, "eth0", &[ME, ME6], &[&g]);
    s
}

fn reason(s: &State, nic: &str, d: Direction, p: &Packet) -> Reason {
    decide(s, nic, d, p).reason
}

// ---- step 0: anti-spoofing ---------------------------------------------------

#[test]
fn step0_port_mode_drops_egress_from_a_foreign_source() {
    let (s, _) = port_host();
    assert_eq!(
        decide(
            &s,
            "vm0",
            Direction::Egress,
            &tcp("10.0.0.99", "8.8.8.8", 443)
        ),
        Decision {
            verdict: Verdict::Drop,
            reason: Reason::AntiSpoof(SpoofCheck::SourceAddress)
        }
    );
    assert_eq!(
        verdict(&s, "vm0", Direction::Egress, &tcp(ME, "8.8.8.8", 443)),
        Verdict::Accept
    );
    assert_eq!(
        verdict(
            &s,
            "vm0",
            Direction::Egress,
            &tcp(ME6, "2001:db8:9::1", 443)
        ),
        Verdict::Accept
    );
}

#[test]
fn step0_local_mode_is_off_by_default_and_the_switch_changes_either_mode() {
    let mut s = state();
    let g = basic(&mut s, "g");
    bind(&mut s, "eth0", &[ME], &[&g]);
    let forged = tcp("10.0.0.99", "8.8.8.8", 443);
    assert_eq!(
        verdict(&s, "eth0", Direction::Egress, &forged),
        Verdict::Accept
    );
    s.set_anti_spoof("eth0", Some(true)).unwrap();
    assert_eq!(
        reason(&s, "eth0", Direction::Egress, &forged),
        Reason::AntiSpoof(SpoofCheck::SourceAddress)
    );
    let (mut p, _) = port_host();
    p.set_anti_spoof("vm0", Some(false)).unwrap();
    assert_eq!(
        verdict(&p, "vm0", Direction::Egress, &forged),
        Verdict::Accept
    );
}

#[test]
fn step0_does_not_apply_to_ingress() {
    let (mut s, g) = port_host();
    s.authorize(
        &g,
        rule("ingress", "Accept", "1", "TCP", "22/22", "0.0.0.0/0"),
    )
    .unwrap();
    // Destination is not the NIC's address: anti-spoofing only checks egress sources.
    assert_eq!(
        verdict(
            &s,
            "vm0",
            Direction::Ingress,
            &tcp("1.2.3.4", "10.0.0.77", 22)
        ),
        Verdict::Accept
    );
}

#[test]
fn step0_extra_allowed_addresses_count_as_own_for_source_group_peer_and_intra_group() {
    let (mut s, g) = port_host();
    s.set_nic_addresses(
        "vm0",
        vec![ip(ME)],
        vec![Cidr::parse("x", "192.168.50.0/24").unwrap()],
    )
    .unwrap();
    assert_eq!(
        verdict(
            &s,
            "vm0",
            Direction::Egress,
            &tcp("192.168.50.7", "8.8.8.8", 443)
        ),
        Verdict::Accept
    );
    // Group peer: another group naming g matches the extra range.
    let other = basic(&mut s, "other");
    s.authorize(
        &other,
        rule("ingress", "Accept", "1", "TCP", "80/80", g.as_str()),
    )
    .unwrap();
    s.set_inner_policy(&other, InnerPolicy::Drop).unwrap();
    bind(&mut s, "eth1", &["10.0.9.9"], &[&other]);
    assert_eq!(
        verdict(
            &s,
            "eth1",
            Direction::Ingress,
            &tcp("192.168.50.7", "10.0.9.9", 80)
        ),
        Verdict::Accept
    );
    assert_eq!(
        verdict(
            &s,
            "eth1",
            Direction::Ingress,
            &tcp("192.168.51.7", "10.0.9.9", 80)
        ),
        Verdict::Drop
    );
    // Intra-group default: a second member of g accepts from the extra range.
    bind(&mut s, "eth2", &["10.0.8.8"], &[&g]);
    assert_eq!(
        reason(
            &s,
            "eth2",
            Direction::Ingress,
            &tcp("192.168.50.7", "10.0.8.8", 5000)
        ),
        Reason::DefaultIngressIntraGroup(g)
    );
}

#[test]
fn step0_ipv6_link_local_and_dad_exemptions() {
    let (s, _) = port_host();
    let egress = |p: &Packet| verdict(&s, "vm0", Direction::Egress, p);
    assert_eq!(egress(&udp("fe80::1", "ff02::1:2", 547)), Verdict::Accept);
    assert_eq!(egress(&udp("fe80::1", "fe80::2", 5000)), Verdict::Accept);
    assert_eq!(
        egress(&Packet::icmp(ip("fe80::1"), ip("2001:db8::1"), 133, 0)),
        Verdict::Accept
    );
    assert_eq!(egress(&udp("fe80::1", "2001:db8::1", 5000)), Verdict::Drop);
    // DAD: a neighbour solicitation from ::.
    assert_eq!(
        egress(&Packet::icmp(ip("::"), ip("ff02::1:ff00:10"), 135, 0)),
        Verdict::Accept
    );
    assert_eq!(egress(&udp("::", "ff02::1:ff00:10", 5000)), Verdict::Drop);
}

#[test]
fn step0_neighbour_advertisement_target_must_be_own() {
    let (s, _) = port_host();
    let na = |target: &str| {
        Packet::icmp(ip("fe80::1"), ip("ff02::1"), 136, 0).with_nd_target(target.parse().unwrap())
    };
    assert_eq!(
        verdict(&s, "vm0", Direction::Egress, &na(ME6)),
        Verdict::Accept
    );
    assert_eq!(
        reason(&s, "vm0", Direction::Egress, &na("2001:db8::99")),
        Reason::AntiSpoof(SpoofCheck::NdTarget)
    );
    // Inbound advertisements are neighbour discovery and pass.
    assert_eq!(
        verdict(&s, "vm0", Direction::Ingress, &na("2001:db8::99")),
        Verdict::Accept
    );
}

#[test]
fn step0_arp_sender_must_be_own_and_other_ethertypes_drop_when_on() {
    let (s, _) = port_host();
    let arp = |a: [u8; 4]| Frame::Arp {
        sender: Ipv4Addr::from(a),
    };
    let eval = |d, f: &Frame| evaluate_frame(&s, "vm0", d, f).unwrap();
    assert_eq!(
        eval(Direction::Egress, &arp([10, 0, 0, 10])).verdict,
        Verdict::Accept
    );
    assert_eq!(
        eval(Direction::Egress, &arp([10, 0, 0, 11])).reason,
        Reason::AntiSpoof(SpoofCheck::ArpSender)
    );
    assert_eq!(
        eval(Direction::Ingress, &arp([10, 0, 0, 11])).reason,
        Reason::NotIp
    );
    let lldp = Frame::Other { ethertype: 0x88cc };
    assert_eq!(
        eval(Direction::Egress, &lldp).reason,
        Reason::AntiSpoof(SpoofCheck::Ethertype)
    );
    assert_eq!(eval(Direction::Ingress, &lldp).reason, Reason::NotIp);
}

// ---- step 1: not IP, neighbour discovery ----------------------------------------

#[test]
fn step1_non_ip_passes_when_anti_spoofing_is_off() {
    let s = locked_host();
    for f in [
        Frame::Arp {
            sender: Ipv4Addr::new(1, 2, 3, 4),
        },
        Frame::Other { ethertype: 0x88cc },
    ] {
        for d in [Direction::Ingress, Direction::Egress] {
            assert_eq!(
                evaluate_frame(&s, "eth0", d, &f).unwrap().reason,
                Reason::NotIp
            );
        }
    }
}

#[test]
fn step1_neighbour_discovery_passes_both_ways_despite_deny_rules() {
    let s = locked_host();
    for t in 133..=137 {
        let ns = Packet::icmp(ip("fe80::1"), ip(ME6), t, 0).with_nd_target(ME6.parse().unwrap());
        assert_eq!(
            reason(&s, "eth0", Direction::Ingress, &ns),
            Reason::NeighbourDiscovery,
            "type {t}"
        );
        let out = Packet::icmp(ip(ME6), ip("fe80::1"), t, 0).with_nd_target(ME6.parse().unwrap());
        assert_eq!(
            reason(&s, "eth0", Direction::Egress, &out),
            Reason::NeighbourDiscovery,
            "type {t}"
        );
    }
    // 138 is not neighbour discovery.
    assert_eq!(
        verdict(
            &s,
            "eth0",
            Direction::Ingress,
            &Packet::icmp(ip("fe80::1"), ip(ME6), 138, 0)
        ),
        Verdict::Drop
    );
}

// ---- step 2: always allowed ----------------------------------------------------

#[test]
fn step2_path_mtu_messages_cannot_be_blocked() {
    let s = locked_host();
    let frag_needed = Packet::icmp(ip("192.0.2.1"), ip(ME), 3, 4);
    let too_big = Packet::icmp(ip("2001:db8:9::1"), ip(ME6), 2, 0);
    for (p, d) in [
        (&frag_needed, Direction::Ingress),
        (&too_big, Direction::Ingress),
    ] {
        assert_eq!(
            reason(&s, "eth0", d, p),
            Reason::AlwaysAllowed(AlwaysAllowed::PathMtu)
        );
    }
    let out = Packet::icmp(ip(ME), ip("192.0.2.1"), 3, 4);
    assert_eq!(
        verdict(&s, "eth0", Direction::Egress, &out),
        Verdict::Accept
    );
    // Other unreachable codes are ordinary packets.
    assert_eq!(
        verdict(
            &s,
            "eth0",
            Direction::Ingress,
            &Packet::icmp(ip("192.0.2.1"), ip(ME), 3, 3)
        ),
        Verdict::Drop
    );
}

#[test]
fn step2_platform_addresses_are_empty_by_default_and_always_allowed_when_set() {
    let mut s = locked_host();
    let meta = tcp(ME, "100.100.100.200", 80);
    assert_eq!(verdict(&s, "eth0", Direction::Egress, &meta), Verdict::Drop);
    s.set_settings(Settings {
        platform_addresses: vec![Cidr::parse("x", "100.100.100.200").unwrap()],
        ..Settings::default()
    })
    .unwrap();
    assert_eq!(
        reason(&s, "eth0", Direction::Egress, &meta),
        Reason::AlwaysAllowed(AlwaysAllowed::PlatformAddress)
    );
    let back = tcp("100.100.100.200", ME, 40000);
    assert_eq!(
        verdict(&s, "eth0", Direction::Ingress, &back),
        Verdict::Accept
    );
    // Above platform policy too: step 2 comes before step 3.
    assert_eq!(
        verdict(
            &s,
            "eth0",
            Direction::Egress,
            &tcp(ME, "100.100.100.200", 25)
        ),
        Verdict::Accept
    );
}

#[test]
fn ingress_to_a_platform_address_is_decided_by_the_rules() {
    let mut s = state();
    let g = basic(&mut s, "g");
    s.authorize_all(
        &g,
        vec![
            rule("ingress", "Drop", "1", "ALL", "-1/-1", "198.51.100.7"),
            rule("egress", "Drop", "1", "ALL", "-1/-1", "198.51.100.7"),
        ],
    )
    .unwrap();
    bind(&mut s, "eth0", &[ME], &[&g]);
    s.set_settings(Settings {
        platform_addresses: vec![Cidr::parse("x", "203.0.113.44").unwrap()],
        ..Settings::default()
    })
    .unwrap();
    // The exemption is for the peer: ingress from a platform address, egress
    // to one. Addressing a packet to (or from) a platform address on the
    // NIC's own side exempts nothing.
    let to_platform = tcp("198.51.100.7", "203.0.113.44", 22);
    assert!(matches!(
        reason(&s, "eth0", Direction::Ingress, &to_platform),
        Reason::Rule(_)
    ));
    assert_eq!(
        verdict(&s, "eth0", Direction::Ingress, &to_platform),
        Verdict::Drop
    );
    let from_platform = tcp("203.0.113.44", "198.51.100.7", 22);
    assert!(matches!(
        reason(&s, "eth0", Direction::Egress, &from_platform),
        Reason::Rule(_)
    ));
    assert_eq!(
        reason(&s, "eth0", Direction::Ingress, &from_platform),
        Reason::AlwaysAllowed(AlwaysAllowed::PlatformAddress)
    );
    assert_eq!(
        reason(&s, "eth0", Direction::Egress, &to_platform),
        Reason::AlwaysAllowed(AlwaysAllowed::PlatformAddress)
    );
}

// ---- step 3: platform policy -----------------------------------------------------

#[test]
fn step3_egress_tcp_25_drops_even_when_a_rule_allows_it() {
    let mut s = state();
    let g = basic(&mut s, "mail");
    s.authorize(
        &g,
        rule("egress", "Accept", "1", "TCP", "25/25", "0.0.0.0/0"),
    )
    .unwrap();
    s.authorize(
        &g,
        rule("ingress", "Accept", "1", "TCP", "25/25", "0.0.0.0/0"),
    )
    .unwrap();
    bind(&mut s, "eth0", &[ME, ME6], &[&g]);
    assert_eq!(
        reason(&s, "eth0", Direction::Egress, &tcp(ME, "203.0.113.25", 25)),
        Reason::PlatformPort25
    );
    assert_eq!(
        reason(
            &s,
            "eth0",
            Direction::Egress,
            &tcp(ME6, "2001:db8:25::1", 25)
        ),
        Reason::PlatformPort25
    );
    // Not ingress, not UDP, not 465.
    assert_eq!(
        verdict(&s, "eth0", Direction::Ingress, &tcp("203.0.113.25", ME, 25)),
        Verdict::Accept
    );
    assert_eq!(
        verdict(&s, "eth0", Direction::Egress, &udp(ME, "203.0.113.25", 25)),
        Verdict::Accept
    );
    assert_eq!(
        verdict(&s, "eth0", Direction::Egress, &tcp(ME, "203.0.113.25", 465)),
        Verdict::Accept
    );
}

#[test]
fn step3_the_port_25_block_can_be_turned_off() {
    let mut s = state();
    let g = basic(&mut s, "mail");
    bind(&mut s, "eth0", &[ME], &[&g]);
    assert!(Settings::default().block_port_25);
    s.set_settings(Settings {
        block_port_25: false,
        ..Settings::default()
    })
    .unwrap();
    assert_eq!(
        reason(&s, "eth0", Direction::Egress, &tcp(ME, "203.0.113.25", 25)),
        Reason::DefaultEgressBasic
    );
}

// ---- step 5: rules ---------------------------------------------------------------

#[test]
fn step5_smaller_priority_wins_and_drop_beats_accept_at_equal_priority() {
    let mut s = state();
    let g = basic(&mut s, "g");
    let allow5 = s
        .authorize(
            &g,
            rule("ingress", "Accept", "5", "TCP", "22/22", "0.0.0.0/0"),
        )
        .unwrap();
    let deny9 = s
        .authorize(
            &g,
            rule("ingress", "Drop", "9", "TCP", "1/65535", "0.0.0.0/0"),
        )
        .unwrap();
    let allow9 = s
        .authorize(
            &g,
            rule("ingress", "Accept", "9", "TCP", "80/80", "0.0.0.0/0"),
        )
        .unwrap();
    bind(&mut s, "eth0", &[ME], &[&g]);
    assert_eq!(
        reason(&s, "eth0", Direction::Ingress, &tcp("1.1.1.1", ME, 22)),
        Reason::Rule(allow5.clone())
    );
    assert_eq!(
        reason(&s, "eth0", Direction::Ingress, &tcp("1.1.1.1", ME, 80)),
        Reason::Rule(deny9.clone())
    );
    let order: Vec<_> = merged_rules(&s, "eth0", Direction::Ingress)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(order, vec![allow5, deny9, allow9]);
}

#[test]
fn step5_rules_of_all_groups_merge_and_ties_break_by_rule_id() {
    let mut s = state();
    let a = basic(&mut s, "a");
    let b = basic(&mut s, "b");
    let mut ids = vec![
        s.authorize(
            &a,
            rule("ingress", "Accept", "3", "UDP", "53/53", "0.0.0.0/0"),
        )
        .unwrap(),
        s.authorize(
            &b,
            rule("ingress", "Accept", "3", "UDP", "1/65535", "0.0.0.0/0"),
        )
        .unwrap(),
        s.authorize(
            &b,
            rule("ingress", "Accept", "3", "TCP", "53/53", "0.0.0.0/0"),
        )
        .unwrap(),
    ];
    s.authorize(&a, rule("egress", "Drop", "1", "ALL", "-1/-1", "0.0.0.0/0"))
        .unwrap();
    bind(&mut s, "eth0", &[ME], &[&a, &b]);
    ids.sort();
    let merged = merged_rules(&s, "eth0", Direction::Ingress).unwrap();
    assert_eq!(merged.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), ids);
    assert!(merged.iter().all(|r| r.direction == Direction::Ingress));
    // Egress from group a applies to the NIC too.
    assert_eq!(
        verdict(&s, "eth0", Direction::Egress, &udp(ME, "9.9.9.9", 53)),
        Verdict::Drop
    );
}

#[test]
fn step5_protocol_all_and_numbers_match_as_written() {
    let mut s = state();
    let g = basic(&mut s, "g");
    s.authorize(
        &g,
        rule("ingress", "Accept", "1", "ALL", "-1/-1", "192.0.2.0/24"),
    )
    .unwrap();
    s.authorize(
        &g,
        rule("ingress", "Accept", "1", "GRE", "-1/-1", "198.51.100.0/24"),
    )
    .unwrap();
    // 135 = IPv6 mobility header: an upper-layer protocol like any other (step 9).
    s.authorize(
        &g,
        rule(
            "ingress",
            "Accept",
            "1",
            "135",
            "-1/-1",
            "2001:db8:135::/48",
        ),
    )
    .unwrap();
    bind(&mut s, "eth0", &[ME, ME6], &[&g]);
    let v = |p: &Packet| verdict(&s, "eth0", Direction::Ingress, p);
    assert_eq!(
        v(&Packet::other(ip("192.0.2.9"), ip(ME), 132)),
        Verdict::Accept
    );
    assert_eq!(v(&tcp("192.0.2.9", ME, 1)), Verdict::Accept);
    assert_eq!(
        v(&Packet::other(ip("198.51.100.9"), ip(ME), 47)),
        Verdict::Accept
    );
    assert_eq!(
        v(&Packet::other(ip("198.51.100.9"), ip(ME), 4)),
        Verdict::Drop
    );
    assert_eq!(
        v(&Packet::other(ip("2001:db8:135::1"), ip(ME6), 135)),
        Verdict::Accept
    );
    assert_eq!(
        v(&Packet::other(ip("2001:db8:135::1"), ip(ME6), 139)),
        Verdict::Drop
    );
}

#[test]
fn step5_ports_source_ports_and_local_address_all_must_match() {
    let mut s = state();
    let g = basic(&mut s, "g");
    let q = rule("egress", "Accept", "1", "TCP", "8000/9000", "10.0.0.0/8")
        .with_source_ports(PortRange { from: 22, to: 22 })
        .with_local(Cidr::parse("x", "172.16.1.0/32").unwrap());
    s.authorize(&g, q).unwrap();
    s.authorize(&g, rule("egress", "Drop", "2", "ALL", "-1/-1", "0.0.0.0/0"))
        .unwrap();
    bind(&mut s, "eth0", &["172.16.1.0", "172.16.1.1"], &[&g]);
    let v = |src: &str, sport: u16, dst: &str, dport: u16| {
        verdict(
            &s,
            "eth0",
            Direction::Egress,
            &Packet::tcp(ip(src), sport, ip(dst), dport),
        )
    };
    assert_eq!(v("172.16.1.0", 22, "10.0.0.1", 8000), Verdict::Accept);
    assert_eq!(v("172.16.1.0", 22, "10.0.0.1", 9000), Verdict::Accept);
    assert_eq!(v("172.16.1.0", 22, "10.0.0.1", 9001), Verdict::Drop);
    assert_eq!(v("172.16.1.0", 23, "10.0.0.1", 8000), Verdict::Drop);
    assert_eq!(v("172.16.1.1", 22, "10.0.0.1", 8000), Verdict::Drop);
    assert_eq!(v("172.16.1.0", 22, "11.0.0.1", 8000), Verdict::Drop);
}

#[test]
fn step5_ingress_matches_peer_as_source_and_local_as_destination() {
    let mut s = state();
    let g = basic(&mut s, "g");
    let r = rule("ingress", "Accept", "1", "TCP", "80/80", "192.0.2.0/24")
        .with_local(Cidr::parse("x", ME).unwrap());
    s.authorize(&g, r).unwrap();
    s.set_inner_policy(&g, InnerPolicy::Drop).unwrap();
    bind(&mut s, "eth0", &[ME, "10.0.0.11"], &[&g]);
    assert_eq!(
        verdict(&s, "eth0", Direction::Ingress, &tcp("192.0.2.1", ME, 80)),
        Verdict::Accept
    );
    assert_eq!(
        verdict(
            &s,
            "eth0",
            Direction::Ingress,
            &tcp("192.0.2.1", "10.0.0.11", 80)
        ),
        Verdict::Drop
    );
    // Swapped: the peer as destination does not match an ingress rule.
    assert_eq!(
        verdict(&s, "eth0", Direction::Ingress, &tcp(ME, "192.0.2.1", 80)),
        Verdict::Drop
    );
}

#[test]
fn step5_an_ipv4_cidr_never_matches_ipv6_and_the_reverse() {
    let mut s = state();
    let g = basic(&mut s, "g");
    s.authorize(
        &g,
        rule("ingress", "Accept", "1", "ALL", "-1/-1", "0.0.0.0/0"),
    )
    .unwrap();
    bind(&mut s, "eth0", &[ME, ME6], &[&g]);
    assert_eq!(
        verdict(
            &s,
            "eth0",
            Direction::Ingress,
            &udp("2001:db8:1::1", ME6, 53)
        ),
        Verdict::Drop
    );
    assert_eq!(
        verdict(&s, "eth0", Direction::Ingress, &udp("192.0.2.1", ME, 53)),
        Verdict::Accept
    );
    let mut s6 = state();
    let g6 = basic(&mut s6, "g");
    s6.authorize(&g6, rule("ingress", "Accept", "1", "ALL", "-1/-1", "::/0"))
        .unwrap();
    bind(&mut s6, "eth0", &[ME, ME6], &[&g6]);
    assert_eq!(
        verdict(&s6, "eth0", Direction::Ingress, &udp("192.0.2.1", ME, 53)),
        Verdict::Drop
    );
}

#[test]
fn step5_prefix_lists_and_port_lists_expand_and_an_empty_port_list_matches_nothing() {
    let mut s = state();
    let pl = s
        .create_prefix_list(PrefixListSpec {
            name: "office".into(),
            description: String::new(),
            family: Family::Ipv4,
            max_entries: 5,
            entries: vec![
                PrefixListEntry {
                    cidr: Cidr::parse("x", "192.0.2.0/25").unwrap(),
                    description: String::new(),
                },
                PrefixListEntry {
                    cidr: Cidr::parse("x", "198.51.100.7").unwrap(),
                    description: String::new(),
                },
            ],
        })
        .unwrap();
    let ports = s
        .create_port_list(PortListSpec {
            name: "web".into(),
            description: String::new(),
            max_entries: 5,
            entries: vec![
                PortListEntry {
                    range: PortRange::single(443),
                    description: String::new(),
                },
                PortListEntry {
                    range: PortRange {
                        from: 8000,
                        to: 8080,
                    },
                    description: String::new(),
                },
                PortListEntry {
                    range: PortRange {
                        from: 8081,
                        to: 8090,
                    },
                    description: String::new(),
                },
            ],
        })
        .unwrap();
    let empty = s
        .create_port_list(PortListSpec {
            name: "none".into(),
            description: String::new(),
            max_entries: 5,
            entries: vec![],
        })
        .unwrap();
    let g = basic(&mut s, "g");
    s.authorize(
        &g,
        rule("ingress", "Accept", "1", "TCP", ports.as_str(), pl.as_str()),
    )
    .unwrap();
    s.authorize(
        &g,
        rule("ingress", "Accept", "1", "UDP", empty.as_str(), "0.0.0.0/0"),
    )
    .unwrap();
    bind(&mut s, "eth0", &[ME], &[&g]);
    let merged = merged_rules(&s, "eth0", Direction::Ingress).unwrap();
    let tcp_rule = merged.iter().find(|r| r.protocol == Some(6)).unwrap();
    assert_eq!(
        tcp_rule.dst_ports,
        PortMatch::Ranges(vec![(443, 443), (8000, 8090)])
    );
    assert_eq!(tcp_rule.peers.len(), 2);
    let udp_rule = merged.iter().find(|r| r.protocol == Some(17)).unwrap();
    assert_eq!(udp_rule.dst_ports, PortMatch::Ranges(vec![]));
    let v = |p: &Packet| verdict(&s, "eth0", Direction::Ingress, p);
    assert_eq!(v(&tcp("192.0.2.100", ME, 8085)), Verdict::Accept);
    assert_eq!(v(&tcp("198.51.100.7", ME, 443)), Verdict::Accept);
    assert_eq!(v(&tcp("192.0.2.200", ME, 443)), Verdict::Drop);
    assert_eq!(v(&tcp("192.0.2.100", ME, 444)), Verdict::Drop);
    assert_eq!(v(&udp("192.0.2.100", ME, 53)), Verdict::Drop);
}

// ---- step 6: defaults ------------------------------------------------------------

#[test]
fn step6_ingress_default_accepts_members_of_a_shared_accepting_basic_group_only() {
    let mut s = state();
    let g = basic(&mut s, "g");
    let h = basic(&mut s, "h");
    bind(&mut s, "eth0", &[ME], &[&g]);
    bind(&mut s, "eth1", &["10.0.0.11"], &[&g]);
    bind(&mut s, "eth2", &["10.0.0.12"], &[&h]);
    assert_eq!(
        reason(&s, "eth0", Direction::Ingress, &tcp("10.0.0.11", ME, 5)),
        Reason::DefaultIngressIntraGroup(g.clone())
    );
    assert_eq!(
        reason(&s, "eth0", Direction::Ingress, &tcp("10.0.0.12", ME, 5)),
        Reason::DefaultIngressDrop
    );
    assert_eq!(
        reason(&s, "eth0", Direction::Ingress, &tcp("8.8.8.8", ME, 5)),
        Reason::DefaultIngressDrop
    );
    s.set_inner_policy(&g, InnerPolicy::Drop).unwrap();
    assert_eq!(
        reason(&s, "eth0", Direction::Ingress, &tcp("10.0.0.11", ME, 5)),
        Reason::DefaultIngressDrop
    );
}

#[test]
fn step6_with_several_shared_groups_one_accepting_is_enough() {
    let mut s = state();
    let iso = basic(&mut s, "isolated");
    let open = basic(&mut s, "open");
    s.set_inner_policy(&iso, InnerPolicy::Drop).unwrap();
    bind(&mut s, "eth0", &[ME], &[&iso, &open]);
    bind(&mut s, "eth1", &["10.0.0.11"], &[&iso, &open]);
    assert_eq!(
        reason(&s, "eth0", Direction::Ingress, &ping("10.0.0.11", ME)),
        Reason::DefaultIngressIntraGroup(open)
    );
}

#[test]
fn step6_enterprise_groups_isolate_members_and_drop_egress() {
    let mut s = state();
    let e = s.create_group(GroupSpec::enterprise("e")).unwrap();
    bind(&mut s, "eth0", &[ME], &[&e]);
    bind(&mut s, "eth1", &["10.0.0.11"], &[&e]);
    assert_eq!(
        reason(&s, "eth0", Direction::Ingress, &tcp("10.0.0.11", ME, 5)),
        Reason::DefaultIngressDrop
    );
    assert_eq!(
        decide(&s, "eth0", Direction::Egress, &tcp(ME, "8.8.8.8", 443)),
        Decision {
            verdict: Verdict::Drop,
            reason: Reason::DefaultEgressEnterprise
        }
    );
}

#[test]
fn step6_basic_egress_default_accepts() {
    let mut s = state();
    let g = basic(&mut s, "g");
    bind(&mut s, "eth0", &[ME6], &[&g]);
    assert_eq!(
        decide(
            &s,
            "eth0",
            Direction::Egress,
            &udp(ME6, "2001:db8:77::1", 53)
        ),
        Decision {
            verdict: Verdict::Accept,
            reason: Reason::DefaultEgressBasic
        }
    );
}

// ---- step 7: what starts a session -------------------------------------------------

#[test]
fn step7_only_policy_accepted_first_packets_start_sessions() {
    let mut s = state();
    let g = basic(&mut s, "g");
    s.authorize(
        &g,
        rule("ingress", "Accept", "1", "ALL", "-1/-1", "0.0.0.0/0"),
    )
    .unwrap();
    s.authorize(&g, rule("ingress", "Accept", "1", "ALL", "-1/-1", "::/0"))
        .unwrap();
    bind(&mut s, "eth0", &[ME, ME6], &[&g]);
    let starts = |p: &Packet| starts_session(p, &decide(&s, "eth0", Direction::Ingress, p));
    assert!(starts(&udp("1.1.1.1", ME, 53)));
    assert!(starts(&Packet::other(ip("1.1.1.1"), ip(ME), 47)));
    assert!(starts(&tcp("1.1.1.1", ME, 22)));
    assert!(!starts(
        &tcp("1.1.1.1", ME, 22).with_tcp_flags(tcp_flags::SYN | tcp_flags::ACK)
    ));
    assert!(!starts(
        &tcp("1.1.1.1", ME, 22).with_tcp_flags(tcp_flags::ACK)
    ));
    assert!(!starts(
        &tcp("1.1.1.1", ME, 22).with_tcp_flags(tcp_flags::RST)
    ));
    assert!(starts(&ping("1.1.1.1", ME)));
    assert!(starts(&ping("2001:db8:1::1", ME6)));
    assert!(!starts(&Packet::icmp(ip("1.1.1.1"), ip(ME), 0, 0)));
    assert!(!starts(&Packet::icmp(ip("1.1.1.1"), ip(ME), 11, 0)));
    assert!(!starts(&Packet::icmp(ip("2001:db8:1::1"), ip(ME6), 129, 0)));
    // Always-allowed traffic and drops start nothing.
    assert!(!starts(&Packet::icmp(ip("1.1.1.1"), ip(ME), 3, 4)));
    let dropped = decide(&s, "eth0", Direction::Egress, &tcp(ME, "1.1.1.1", 25));
    assert!(!starts_session(&tcp(ME, "1.1.1.1", 25), &dropped));
}

// ---- step 8: fragments -----------------------------------------------------------

#[test]
fn step8_first_fragment_is_decided_and_later_fragments_defer_to_it() {
    let mut s = state();
    let g = basic(&mut s, "g");
    s.authorize(
        &g,
        rule("ingress", "Accept", "1", "UDP", "53/53", "0.0.0.0/0"),
    )
    .unwrap();
    bind(&mut s, "eth0", &[ME], &[&g]);
    let first = udp("1.1.1.1", ME, 53).with_fragment(Fragment::First { id: 7 });
    let first_decision = decide(&s, "eth0", Direction::Ingress, &first);
    assert_eq!(first_decision.verdict, Verdict::Accept);
    // Stateless, a later fragment is one whose first was never seen (the
    // session model remembers first fragments: `sessions.rs`).
    let later = Packet::other(ip("1.1.1.1"), ip(ME), 17).with_fragment(Fragment::Later { id: 7 });
    let d = decide(&s, "eth0", Direction::Ingress, &later);
    assert_eq!(
        d,
        Decision {
            verdict: Verdict::Drop,
            reason: Reason::LaterFragment
        }
    );
    assert!(!starts_session(&later, &first_decision));
}

#[test]
fn step8_later_fragments_still_meet_anti_spoofing() {
    let (s, _) = port_host();
    let later =
        Packet::other(ip("10.0.0.99"), ip("8.8.8.8"), 17).with_fragment(Fragment::Later { id: 1 });
    assert_eq!(
        reason(&s, "vm0", Direction::Egress, &later),
        Reason::AntiSpoof(SpoofCheck::SourceAddress)
    );
}

#[test]
fn an_ipv4_mapped_ipv6_address_is_not_the_nics_ipv4_address() {
    let (s, _) = port_host();
    let mapped = Ipv4Addr::from([10, 0, 0, 10]).to_ipv6_mapped();
    // `::ffff:10.0.0.10` is an IPv6 address: the NIC owns 10.0.0.10 (IPv4)
    // and 2001:db8::10, not it.
    let p = udp(&mapped.to_string(), "2001:db8:1::1", 53);
    assert_eq!(
        reason(&s, "vm0", Direction::Egress, &p),
        Reason::AntiSpoof(SpoofCheck::SourceAddress)
    );
    let na = Packet::icmp(ip(ME6), ip("ff02::1"), 136, 0).with_nd_target(mapped);
    assert_eq!(
        reason(&s, "vm0", Direction::Egress, &na),
        Reason::AntiSpoof(SpoofCheck::NdTarget)
    );
}

#[test]
fn tagged_frames_cannot_leave_an_anti_spoofed_nic() {
    let (s, _) = port_host();
    let own_ip = Frame::Ip(udp(ME, "8.8.8.8", 53));
    let own_arp = Frame::Arp {
        sender: Ipv4Addr::from([10, 0, 0, 10]),
    };
    let tag = |f: &Frame| Frame::Tagged(Box::new(f.clone()));
    for f in [&own_ip, &own_arp] {
        assert_eq!(
            evaluate_frame(&s, "vm0", Direction::Egress, f)
                .unwrap()
                .verdict,
            Verdict::Accept
        );
        // 802.1Q or 802.1ad, and QinQ.
        for tagged in [tag(f), tag(&tag(f))] {
            assert_eq!(
                evaluate_frame(&s, "vm0", Direction::Egress, &tagged).unwrap(),
                Decision {
                    verdict: Verdict::Drop,
                    reason: Reason::AntiSpoof(SpoofCheck::Tagged)
                }
            );
        }
        // Towards the workload the frame inside is decided.
        assert_eq!(
            evaluate_frame(&s, "vm0", Direction::Ingress, &tag(f)).unwrap(),
            evaluate_frame(&s, "vm0", Direction::Ingress, f).unwrap()
        );
        // More tags than the parser walks: malformed, either way.
        assert_eq!(
            evaluate_frame(&s, "vm0", Direction::Ingress, &tag(&tag(&tag(f))))
                .unwrap()
                .reason,
            Reason::Malformed
        );
    }
}

// ---- step 9 and bad input ----------------------------------------------------------

#[test]
fn step9_malformed_frames_and_mixed_families_drop() {
    let s = locked_host();
    assert_eq!(
        evaluate_frame(&s, "eth0", Direction::Ingress, &Frame::Malformed)
            .unwrap()
            .reason,
        Reason::Malformed
    );
    let mixed = Packet::udp(ip("1.1.1.1"), 1, ip(ME6), 2);
    assert_eq!(
        reason(&s, "eth0", Direction::Ingress, &mixed),
        Reason::Malformed
    );
}

#[test]
fn unknown_nic_is_an_error_not_a_panic() {
    let s = locked_host();
    let e = evaluate(&s, "nope0", Direction::Ingress, &tcp("1.1.1.1", ME, 1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope0"), "{e}");
    assert!(merged_rules(&s, "nope0", Direction::Egress).is_err());
}

#[test]
fn step6_nic_defaults_give_the_compiler_what_the_evaluator_decides() {
    let mut s = state();
    let iso = basic(&mut s, "isolated");
    let open = basic(&mut s, "open");
    s.set_inner_policy(&iso, InnerPolicy::Drop).unwrap();
    bind(&mut s, "eth0", &[ME], &[&iso, &open]);
    bind(&mut s, "eth1", &["10.0.0.11", "2001:db8::11"], &[&open]);
    let d = sg_policy::nic_defaults(&s, "eth0").unwrap();
    assert_eq!(d.egress, sg_policy::Action::Accept);
    assert_eq!(d.ingress_intra_group.len(), 1);
    let (g, members) = &d.ingress_intra_group[0];
    assert_eq!(g, &open);
    let want: Vec<Cidr> = ["10.0.0.10", "10.0.0.11", "2001:db8::11"]
        .iter()
        .map(|a| Cidr::host(ip(a)))
        .collect();
    assert_eq!(members, &want);
    let e = s.create_group(GroupSpec::enterprise("e")).unwrap();
    bind(&mut s, "eth9", &["10.0.0.99"], &[&e]);
    let d = sg_policy::nic_defaults(&s, "eth9").unwrap();
    assert_eq!(
        (d.egress, d.ingress_intra_group.len()),
        (sg_policy::Action::Drop, 0)
    );
}

#[test]
fn binding_mode_maps_hooks_to_the_workloads_direction() {
    assert_eq!(BindingMode::Local.direction(true), Direction::Ingress);
    assert_eq!(BindingMode::Local.direction(false), Direction::Egress);
    assert_eq!(BindingMode::Port.direction(true), Direction::Egress);
    assert_eq!(BindingMode::Port.direction(false), Direction::Ingress);
}

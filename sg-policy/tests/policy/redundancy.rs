//! SPEC §5 health check: redundant rules, each with the rule that covers it.

use crate::support::{basic, rule, state};
use sg_policy::{
    Cidr, Family, GroupId, PortRange, PrefixListEntry, PrefixListSpec, Redundancy, RuleId,
    RuleSpec, State, health_check,
};

fn group_with(rules: Vec<RuleSpec>) -> (State, GroupId, Vec<RuleId>) {
    let mut s = state();
    let g = basic(&mut s, "g");
    let ids = s.authorize_all(&g, rules).unwrap();
    (s, g, ids)
}

fn pairs(s: &State, g: &GroupId) -> Vec<(RuleId, RuleId)> {
    health_check(s, g)
        .unwrap()
        .into_iter()
        .map(|Redundancy { rule, covered_by }| (rule, covered_by))
        .collect()
}

#[test]
fn a_narrower_rule_behind_a_stronger_wider_one_is_redundant() {
    let (s, g, ids) = group_with(vec![
        rule("ingress", "Accept", "5", "TCP", "22/22", "10.1.0.0/16"),
        rule("ingress", "Accept", "1", "ALL", "-1/-1", "10.0.0.0/8"),
        rule("ingress", "Accept", "5", "TCP", "80/80", "192.168.0.0/16"),
    ]);
    assert_eq!(pairs(&s, &g), vec![(ids[0].clone(), ids[1].clone())]);
}

#[test]
fn a_wider_rule_of_weaker_priority_covers_nothing() {
    let (s, g, _) = group_with(vec![
        rule("ingress", "Accept", "1", "TCP", "22/22", "10.1.0.0/16"),
        rule("ingress", "Drop", "2", "ALL", "-1/-1", "0.0.0.0/0"),
    ]);
    assert_eq!(pairs(&s, &g), vec![]);
}

#[test]
fn at_equal_priority_a_drop_covers_an_accept_but_not_the_reverse() {
    let (s, g, ids) = group_with(vec![
        rule("ingress", "Accept", "3", "TCP", "22/22", "10.1.0.0/16"),
        rule("ingress", "Drop", "3", "TCP", "1/1024", "10.0.0.0/8"),
    ]);
    assert_eq!(pairs(&s, &g), vec![(ids[0].clone(), ids[1].clone())]);
    let (s, g, _) = group_with(vec![
        rule("ingress", "Drop", "3", "TCP", "22/22", "10.1.0.0/16"),
        rule("ingress", "Accept", "3", "TCP", "1/1024", "10.0.0.0/8"),
    ]);
    assert!(
        pairs(&s, &g).is_empty(),
        "the drop decides first; removing it would change verdicts"
    );
}

#[test]
fn of_two_rules_matching_the_same_packets_only_the_later_by_id_is_reported() {
    let mut s = state();
    let pl = s
        .create_prefix_list(PrefixListSpec {
            name: "ten".into(),
            description: String::new(),
            family: Family::Ipv4,
            max_entries: 1,
            entries: vec![PrefixListEntry {
                cidr: Cidr::parse("x", "10.0.0.0/8").unwrap(),
                description: String::new(),
            }],
        })
        .unwrap();
    let g = basic(&mut s, "g");
    let mut ids = s
        .authorize_all(
            &g,
            vec![
                rule("ingress", "Accept", "3", "UDP", "53/53", "10.0.0.0/8"),
                rule("ingress", "Accept", "3", "UDP", "53/53", pl.as_str()),
                rule("ingress", "Accept", "4", "UDP", "53/53", "10.0.0.0/8"),
            ],
        )
        .unwrap();
    let weaker = ids.pop().unwrap();
    ids.sort();
    // Each of the first two covers the other: only the later by id is reported,
    // and the priority-4 copy is reported with the first in decision order.
    assert_eq!(
        pairs(&s, &g),
        vec![(ids[1].clone(), ids[0].clone()), (weaker, ids[0].clone())]
    );
}

#[test]
fn direction_protocol_source_ports_and_local_address_all_count() {
    let (s, g, _) = group_with(vec![
        rule("ingress", "Accept", "1", "TCP", "1/65535", "0.0.0.0/0").with_source_ports(
            PortRange {
                from: 1024,
                to: 65535,
            },
        ),
        rule("ingress", "Accept", "2", "TCP", "80/80", "10.0.0.0/8"),
        rule("egress", "Accept", "2", "TCP", "80/80", "10.0.0.0/8").with_source_ports(PortRange {
            from: 2000,
            to: 3000,
        }),
        rule("ingress", "Accept", "1", "UDP", "1/65535", "0.0.0.0/0")
            .with_local(Cidr::parse("x", "10.0.0.10").unwrap()),
        rule("ingress", "Accept", "2", "UDP", "53/53", "10.0.0.0/8"),
    ]);
    assert!(pairs(&s, &g).is_empty(), "{:?}", pairs(&s, &g));
    let (s, g, ids) = group_with(vec![
        rule("ingress", "Accept", "1", "UDP", "1/65535", "0.0.0.0/0"),
        rule("ingress", "Accept", "2", "UDP", "53/53", "10.0.0.0/8")
            .with_local(Cidr::parse("x", "10.0.0.10").unwrap())
            .with_source_ports(PortRange::single(53)),
    ]);
    assert_eq!(pairs(&s, &g), vec![(ids[1].clone(), ids[0].clone())]);
}

#[test]
fn a_prefix_list_covers_by_the_union_of_its_entries() {
    let mut s = state();
    let pl = s
        .create_prefix_list(PrefixListSpec {
            name: "halves".into(),
            description: String::new(),
            family: Family::Ipv4,
            max_entries: 2,
            entries: ["10.0.0.0/25", "10.0.0.128/25"]
                .iter()
                .map(|c| PrefixListEntry {
                    cidr: Cidr::parse("x", c).unwrap(),
                    description: String::new(),
                })
                .collect(),
        })
        .unwrap();
    let g = basic(&mut s, "g");
    let ids = s
        .authorize_all(
            &g,
            vec![
                rule("ingress", "Accept", "1", "TCP", "22/22", pl.as_str()),
                rule("ingress", "Accept", "1", "TCP", "22/22", "10.0.0.0/24"),
                rule("ingress", "Accept", "1", "TCP", "22/22", "10.0.0.0/23"),
            ],
        )
        .unwrap();
    let found = pairs(&s, &g);
    assert!(found.iter().any(|(r, _)| r == &ids[1]), "{found:?}");
    assert!(!found.iter().any(|(r, _)| r == &ids[2]), "{found:?}");
}

#[test]
fn a_group_peer_is_covered_only_by_the_same_group() {
    let mut s = state();
    let peer = basic(&mut s, "peer");
    let g = basic(&mut s, "g");
    let ids = s
        .authorize_all(
            &g,
            vec![
                rule("ingress", "Accept", "1", "ALL", "-1/-1", "0.0.0.0/0"),
                rule("ingress", "Accept", "1", "ALL", "-1/-1", "::/0"),
                rule("ingress", "Accept", "2", "TCP", "22/22", peer.as_str()),
                rule("ingress", "Accept", "1", "ALL", "-1/-1", peer.as_str()),
            ],
        )
        .unwrap();
    assert_eq!(pairs(&s, &g), vec![(ids[2].clone(), ids[3].clone())]);
}

#[test]
fn an_unknown_group_is_an_error() {
    let s = state();
    assert!(health_check(&s, &GroupId::parse("g", "sg-0").unwrap()).is_err());
}

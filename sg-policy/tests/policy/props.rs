//! Property tests (proptest) over a small universe of addresses, ports and
//! protocols, small enough that rules overlap, cover and tie often:
//! - the decision does not depend on the order rules were added;
//! - export then import is the identity (JSON and CSV);
//! - removing a rule the health check calls redundant changes no verdict;
//! - every accepted input re-validates after a round trip.

use crate::support::{basic, bind, ip, state};
use proptest::prelude::*;
use sg_policy::{
    Action, Cidr, Decision, Direction, Family, GroupId, Packet, Peer, PortListEntry, PortListSpec,
    PortRange, PortSpec, PrefixListEntry, PrefixListSpec, Protocol, Reason, RuleSpec, State,
    Verdict, evaluate, export_csv, export_json, health_check, import_csv, import_json,
    validate_state,
};

const PEERS: [&str; 9] = [
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.3",
    "192.168.0.0/16",
    "::/0",
    "2001:db8::/32",
    "2001:db8:1::1",
    "10.0.0.11",
];
const LOCALS: [&str; 4] = ["10.0.0.10", "10.0.0.0/24", "2001:db8::10", "2001:db8::/64"];
const RANGES: [(u16, u16); 6] = [
    (22, 22),
    (80, 80),
    (1, 1024),
    (1, 65535),
    (80, 443),
    (443, 8080),
];
const ADDRS_V4: [&str; 7] = [
    "10.0.0.10",
    "10.0.0.11",
    "10.1.2.3",
    "192.168.5.5",
    "8.8.8.8",
    "10.1.9.9",
    "192.168.0.7",
];
const ADDRS_V6: [&str; 4] = [
    "2001:db8::10",
    "2001:db8:1::1",
    "2001:db8:5::5",
    "2606:4700::1",
];
const PORTS: [u16; 7] = [22, 25, 80, 443, 1000, 8080, 65535];

/// The fixture: groups `g` and `other`, a prefix list, a port list, three NICs.
struct World {
    state: State,
    g: GroupId,
    other: GroupId,
    pl: sg_policy::PrefixListId,
    prl: sg_policy::PortListId,
}

fn world() -> World {
    let mut s = state();
    let pl = s
        .create_prefix_list(PrefixListSpec {
            name: "pl".into(),
            description: String::new(),
            family: Family::Ipv4,
            max_entries: 4,
            entries: ["10.1.0.0/16", "192.168.0.0/24"]
                .iter()
                .map(|c| PrefixListEntry {
                    cidr: Cidr::parse("x", c).unwrap(),
                    description: String::new(),
                })
                .collect(),
        })
        .unwrap();
    let prl = s
        .create_port_list(PortListSpec {
            name: "prl".into(),
            description: String::new(),
            max_entries: 4,
            entries: [(80, 80), (443, 443), (8000, 8080)]
                .iter()
                .map(|&(from, to)| PortListEntry {
                    range: PortRange { from, to },
                    description: String::new(),
                })
                .collect(),
        })
        .unwrap();
    let g = basic(&mut s, "g");
    let other = basic(&mut s, "other");
    bind(&mut s, "eth0", &["10.0.0.10", "2001:db8::10"], &[&g]);
    bind(&mut s, "eth1", &["10.1.2.3", "2001:db8:1::1"], &[&other]);
    bind(&mut s, "eth2", &["10.0.0.11"], &[&g, &other]);
    World {
        state: s,
        g,
        other,
        pl,
        prl,
    }
}

/// Rule "genes": indices into the universe, turned into a spec by [`spec`].
#[derive(Debug, Clone)]
struct Gene {
    egress: bool,
    drop: bool,
    priority: u8,
    protocol: usize,
    ports: usize,
    peer: usize,
    source_ports: Option<usize>,
    local: Option<usize>,
    in_other: bool,
}

fn gene(
    priorities: std::ops::RangeInclusive<u8>,
    other_weight: f64,
) -> impl Strategy<Value = Gene> {
    (
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(1u8), Just(2), Just(3), priorities],
        0usize..6,
        0usize..8,
        0usize..12,
        proptest::option::weighted(0.3, 0usize..3),
        proptest::option::weighted(0.15, 0usize..4),
        proptest::bool::weighted(other_weight),
    )
        .prop_map(
            |(egress, drop, priority, protocol, ports, peer, source_ports, local, in_other)| Gene {
                egress,
                drop,
                priority,
                protocol,
                ports,
                peer,
                source_ports,
                local,
                in_other,
            },
        )
}

fn spec(w: &World, g: &Gene) -> RuleSpec {
    let protocol = [
        Protocol::All,
        Protocol::TCP,
        Protocol::UDP,
        Protocol::ICMP,
        Protocol::GRE,
        Protocol::ICMPV6,
    ][g.protocol];
    let ports = if protocol.has_ports() {
        match g.ports {
            6 | 7 => PortSpec::List(w.prl.clone()),
            i => PortSpec::Range(PortRange {
                from: RANGES[i].0,
                to: RANGES[i].1,
            }),
        }
    } else {
        PortSpec::Any
    };
    let peer = match g.peer {
        9 => Peer::Group(w.g.clone()),
        10 => Peer::Group(w.other.clone()),
        11 => Peer::PrefixList(w.pl.clone()),
        i => Peer::Cidr(Cidr::parse("x", PEERS[i]).unwrap()),
    };
    RuleSpec {
        direction: if g.egress {
            Direction::Egress
        } else {
            Direction::Ingress
        },
        action: if g.drop { Action::Drop } else { Action::Accept },
        priority: g.priority,
        protocol,
        ports,
        peer,
        source_ports: if protocol.has_ports() {
            g.source_ports.map(|i| {
                [
                    PortRange::single(40000),
                    PortRange {
                        from: 1024,
                        to: 65535,
                    },
                    PortRange::single(22),
                ][i]
            })
        } else {
            None
        },
        local: g.local.map(|i| Cidr::parse("x", LOCALS[i]).unwrap()),
        description: String::new(),
    }
}

/// Adds the genes' rules in order; refused ones (bad family mixes,
/// duplicates, bad priorities) are skipped. Returns the accepted specs.
fn add_all(w: &mut World, genes: &[Gene]) -> Vec<RuleSpec> {
    let mut accepted = Vec::new();
    for g in genes {
        let s = spec(w, g);
        let group = if g.in_other {
            w.other.clone()
        } else {
            w.g.clone()
        };
        if w.state.authorize(&group, s.clone()).is_ok() {
            accepted.push(s);
        }
    }
    accepted
}

fn packet() -> impl Strategy<Value = (Direction, usize, Packet)> {
    (
        any::<bool>(),
        0usize..3,
        any::<bool>(),
        0usize..7,
        0usize..7,
        0usize..5,
        0usize..7,
        0usize..7,
        0u8..4,
    )
        .prop_map(|(egress, nic, v6, a, b, proto, sp, dp, icmp)| {
            let (src, dst) = if v6 {
                (ip(ADDRS_V6[a % 4]), ip(ADDRS_V6[b % 4]))
            } else {
                (ip(ADDRS_V4[a]), ip(ADDRS_V4[b]))
            };
            let p = match proto {
                0 => Packet::tcp(src, PORTS[sp], dst, PORTS[dp]),
                1 => Packet::udp(src, PORTS[sp], dst, PORTS[dp]),
                2 => Packet::icmp(src, dst, [0, 8, 3, 128][usize::from(icmp)], 0),
                3 => Packet::other(src, dst, 47),
                _ => Packet::other(src, dst, 132),
            };
            (
                if egress {
                    Direction::Egress
                } else {
                    Direction::Ingress
                },
                nic,
                p,
            )
        })
}

fn nic(i: usize) -> &'static str {
    ["eth0", "eth1", "eth2"][i]
}

fn decide(s: &State, (d, n, p): &(Direction, usize, Packet)) -> Decision {
    evaluate(s, nic(*n), *d, p).unwrap()
}

/// The verdict and which kind of step decided (rule ids differ between states).
fn shape(d: &Decision) -> (Verdict, bool) {
    (d.verdict, matches!(d.reason, Reason::Rule(_)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn decision_does_not_depend_on_rule_insertion_order(
        (genes, shuffled) in proptest::collection::vec(gene(0..=100, 0.5), 0..24)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        packets in proptest::collection::vec(packet(), 48),
    ) {
        let mut a = world();
        let mut b = world();
        let mut got_a = add_all(&mut a, &genes);
        let mut got_b = add_all(&mut b, &shuffled);
        got_a.sort();
        got_b.sort();
        prop_assert_eq!(got_a, got_b);
        for p in &packets {
            prop_assert_eq!(shape(&decide(&a.state, p)), shape(&decide(&b.state, p)), "{:?}", p);
        }
    }

    #[test]
    fn export_then_import_is_the_identity(genes in proptest::collection::vec(gene(1..=100, 0.3), 0..40)) {
        let mut w = world();
        add_all(&mut w, &genes);
        let g = w.g.clone();
        let rules = w.state.describe_group(&g).unwrap().rules.clone();
        let mut empty = w.state.clone();
        for r in &rules {
            empty.revoke(&g, &r.id).unwrap();
        }
        let json = export_json(&w.state, &g).unwrap();
        let mut back = empty.clone();
        let report = import_json(&mut back, &g, &json).unwrap();
        prop_assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        prop_assert_eq!(&back, &w.state);
        prop_assert_eq!(export_json(&back, &g).unwrap(), json);

        let csv = export_csv(&w.state, &g).unwrap();
        let mut back = empty;
        let report = import_csv(&mut back, &g, &csv).unwrap();
        prop_assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        prop_assert_eq!(&back.describe_group(&g).unwrap().rules, &rules);
        prop_assert_eq!(export_csv(&back, &g).unwrap(), csv);
    }

    #[test]
    fn removing_a_redundant_rule_changes_no_verdict(
        genes in proptest::collection::vec(gene(1..=3, 0.1), 4..32),
        packets in proptest::collection::vec(packet(), 160),
    ) {
        let mut w = world();
        add_all(&mut w, &genes);
        let g = w.g.clone();
        let before: Vec<Verdict> = packets.iter().map(|p| decide(&w.state, p).verdict).collect();
        let redundant = health_check(&w.state, &g).unwrap();
        for red in &redundant {
            let mut s = w.state.clone();
            s.revoke(&g, &red.rule).unwrap();
            let after: Vec<Verdict> = packets.iter().map(|p| decide(&s, p).verdict).collect();
            prop_assert_eq!(&before, &after, "removing {} (covered by {})", red.rule, red.covered_by);
        }
        // All at once too.
        let mut s = w.state.clone();
        for red in &redundant {
            s.revoke(&g, &red.rule).unwrap();
        }
        let after: Vec<Verdict> = packets.iter().map(|p| decide(&s, p).verdict).collect();
        prop_assert_eq!(before, after);
    }

    #[test]
    fn every_accepted_input_revalidates_after_a_round_trip(genes in proptest::collection::vec(gene(0..=120, 0.5), 0..30)) {
        let mut w = world();
        add_all(&mut w, &genes);
        validate_state(&w.state).unwrap();
        // The store's form: serde JSON of the whole state.
        let text = serde_json::to_string(&w.state).unwrap();
        let back: State = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &w.state);
        prop_assert!(validate_state(&back).is_ok());
        // Priorities outside 1..=100 never got in.
        prop_assert!(back.all_rules().all(|(_, r)| (1..=100).contains(&r.spec.priority)));
        // Exported text of every rule parses back to the same spec.
        for gid in [&w.g, &w.other] {
            let mut again = w.state.clone();
            let rules = again.describe_group(gid).unwrap().rules.clone();
            for r in &rules {
                again.revoke(gid, &r.id).unwrap();
            }
            import_csv(&mut again, gid, &export_csv(&w.state, gid).unwrap()).unwrap();
            prop_assert!(validate_state(&again).is_ok());
            prop_assert_eq!(&again.describe_group(gid).unwrap().rules, &rules);
        }
    }

    #[test]
    fn cidr_text_round_trips_to_the_same_normalised_value(v6 in any::<bool>(), raw in any::<u128>(), len in 0u8..=128) {
        let (bits, len, value) = if v6 { (128u32, len, raw) } else { (32, len % 33, raw & u128::from(u32::MAX)) };
        let host = bits - u32::from(len);
        let masked = if host >= 128 { 0 } else { value >> host << host };
        let to_ip = |v: u128| if v6 {
            std::net::IpAddr::V6(v.into())
        } else {
            std::net::IpAddr::V4(u32::try_from(v).unwrap().into())
        };
        let (net, addr) = (to_ip(masked), to_ip(value));
        prop_assume!(!matches!(addr, std::net::IpAddr::V6(a) if a.to_ipv4_mapped().is_some()));
        prop_assume!(!matches!(net, std::net::IpAddr::V6(a) if a.to_ipv4_mapped().is_some()));
        let c = Cidr::new(net, len).unwrap();
        let parsed = Cidr::parse("x", &c.to_string()).unwrap();
        prop_assert_eq!(parsed, c);
        prop_assert_eq!(Cidr::parse("x", &c.to_cidr_string()).unwrap(), c);
        prop_assert_eq!(parsed.to_string(), c.to_string());
        // Host bits set: refused, never silently masked.
        prop_assert_eq!(Cidr::parse("x", &format!("{addr}/{len}")).is_err(), masked != value);
    }

    #[test]
    fn bad_text_is_refused_never_a_panic(text in ".{0,40}", pick in 0usize..6) {
        let _ = Cidr::parse("x", &text);
        let _ = Protocol::parse("x", &text);
        let _ = PortRange::parse("x", &text);
        let _ = sg_policy::model::parse_port_spec("x", &text);
        let _ = sg_policy::model::parse_priority("x", &text);
        let _ = Peer::parse("x", &text);
        let mut w = world();
        let g = w.g.clone();
        let doc = match pick {
            0 => text.clone(),
            1 => format!(r#"{{"Permissions":[{{"Direction":"ingress","IpProtocol":"TCP","PortRange":{text:?},"SourceCidrIp":"0.0.0.0/0"}}]}}"#),
            2 => format!(r#"[{{"Direction":{text:?},"IpProtocol":"ALL","PortRange":"-1/-1","Ipv6SourceCidrIp":"::/0"}}]"#),
            3 => format!(r#"[{{"Direction":"egress","IpProtocol":{text:?},"PortRange":"-1/-1","DestPrefixListId":"{}"}}]"#, w.pl),
            4 => format!(r#"[{{"Direction":"ingress","IpProtocol":"UDP","PortRange":"53/53","SourceGroupId":{text:?},"Priority":{text:?}}}]"#),
            _ => format!("Direction,IpProtocol,PortRange,SourceCidrIp\ningress,TCP,22/22,{text}\n"),
        };
        let result = if pick == 5 { import_csv(&mut w.state, &g, &doc) } else { import_json(&mut w.state, &g, &doc) };
        // One JSON rule in: it is imported or skipped, never lost. (Raw text
        // spliced into CSV may make several rows, so CSV is not counted.)
        if let (Ok(report), 1..=4) = (&result, pick) {
            prop_assert_eq!(report.imported.len() + report.skipped.len(), 1);
        }
        prop_assert!(validate_state(&w.state).is_ok());
    }
}

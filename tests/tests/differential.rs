//! The data plane must decide every packet exactly as the reference evaluator
//! does, and name the same deciding rule or default: random policies (some
//! with 1,000 rules; group peers, prefix lists, port lists, IPv6, both binding
//! modes, anti-spoofing, platform addresses) and random packets (fragments,
//! VLAN tags, IPv4 options, IPv6 extension chains, ARP, other ethertypes,
//! frames cut short inside their headers with or without consistent lengths),
//! through the loaded
//! programs with `BPF_PROG_TEST_RUN`. Seeded: `SG_SEED` replays a failure.

use std::collections::HashMap;

use sg_agent::{
    compile::Rank,
    dataplane::Dataplane,
    enforce::{Enforcer, ifindex},
    policy::{
        AlwaysAllowed, Decision, Direction, Fragment, Frame, Reason, SpoofCheck, State, Verdict,
        evaluate, evaluate_frame,
    },
};
use sg_common::{policy::NO_RANK, reason};
use sg_tests::{
    classify::classify,
    packet::{self, L3, Spec},
    policygen::{Rng, Shape, random_packet, random_state, spec_of},
    testrun::{self, Hook},
    topology::Netns,
};

const POLICIES: usize = 50;
const PACKETS_PER_POLICY: usize = 4_200;
const NICS: [&str; 3] = ["n0", "n1", "n2"];

/// What the kernel must report: verdict, reason code, and the rank's meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Want {
    accept: bool,
    reason: u32,
    rank: Option<Rank>,
}

fn want_of(d: &Decision) -> Want {
    let accept = d.verdict == Verdict::Accept;
    let (reason, rank) = match &d.reason {
        Reason::Malformed => (reason::MALFORMED, None),
        Reason::AntiSpoof(SpoofCheck::SourceAddress) => (reason::SPOOF_SOURCE, None),
        Reason::AntiSpoof(SpoofCheck::ArpSender) => (reason::SPOOF_ARP, None),
        Reason::AntiSpoof(SpoofCheck::NdTarget) => (reason::SPOOF_ND_TARGET, None),
        Reason::AntiSpoof(SpoofCheck::Ethertype) => (reason::SPOOF_ETHERTYPE, None),
        Reason::NotIp => (reason::NOT_IP, None),
        Reason::NeighbourDiscovery => (reason::NEIGHBOUR_DISCOVERY, None),
        Reason::AlwaysAllowed(AlwaysAllowed::PathMtu) => (reason::PATH_MTU, None),
        Reason::AlwaysAllowed(AlwaysAllowed::PlatformAddress) => (reason::PLATFORM_ADDRESS, None),
        Reason::PlatformPort25 => (reason::PORT_25, None),
        Reason::LaterFragment => (reason::FRAGMENT_NO_FIRST, None),
        Reason::Rule(id) => (reason::RULE, Some(Rank::Rule(id.clone()))),
        Reason::DefaultIngressIntraGroup(g) => (
            reason::DEFAULT_INTRA_GROUP,
            Some(Rank::IntraGroup(g.clone())),
        ),
        Reason::DefaultIngressDrop => (reason::DEFAULT_INGRESS_DROP, None),
        Reason::DefaultEgressBasic => (reason::DEFAULT_EGRESS_BASIC, None),
        Reason::DefaultEgressEnterprise => (reason::DEFAULT_EGRESS_ENTERPRISE, None),
    };
    Want {
        accept,
        reason,
        rank,
    }
}

/// The evaluator's model of the kernel's fragment table: the first
/// fragment's verdict per (NIC, direction, addresses, protocol); the builder
/// gives every datagram the same id.
type Fragments = HashMap<(String, bool, std::net::IpAddr, std::net::IpAddr, u8), bool>;

struct Case {
    nic: &'static str,
    hook: Hook,
    frame: Vec<u8>,
    want: Want,
    what: String,
}

fn make_case(rng: &mut Rng, state: &State, frags: &mut Fragments) -> Option<Case> {
    let nic = *rng.pick(&NICS);
    let binding = state.nics.get(nic)?;
    let hook = if rng.chance(50) {
        Hook::Xdp
    } else {
        Hook::TcEgress
    };
    let dir = binding.mode.direction(hook == Hook::Xdp);
    let kind = rng.below(100);
    if kind < 8 {
        return non_ip_case(rng, state, nic, hook, dir, kind < 5);
    }
    ip_case(rng, state, frags, nic, hook, dir, kind < 15)
}

/// An ARP frame (`arp`) or an LLDP frame.
fn non_ip_case(
    rng: &mut Rng,
    state: &State,
    nic: &'static str,
    hook: Hook,
    dir: Direction,
    arp: bool,
) -> Option<Case> {
    let binding = state.nics.get(nic)?;
    if arp {
        let sender = if rng.chance(50) {
            binding.addresses.iter().find_map(|a| match a {
                std::net::IpAddr::V4(v) => Some(*v),
                std::net::IpAddr::V6(_) => None,
            })?
        } else {
            sg_tests::policygen::pool_v4(rng)
        };
        let frame = packet::build(&Spec {
            l4: None,
            ..Spec::new(L3::ArpFrom(sender.octets()), packet::L4::Gre)
        })
        .bytes;
        let d = evaluate_frame(state, nic, dir, &Frame::Arp { sender }).ok()?;
        return Some(Case {
            nic,
            hook,
            frame,
            want: want_of(&d),
            what: format!("ARP from {sender}"),
        });
    }
    let spec = Spec {
        l4: None,
        ..Spec::new(
            L3::Raw {
                ethertype: 0x88cc,
                len: 46,
            },
            packet::L4::Gre,
        )
    };
    let d = evaluate_frame(state, nic, dir, &Frame::Other { ethertype: 0x88cc }).ok()?;
    Some(Case {
        nic,
        hook,
        frame: packet::build(&spec).bytes,
        want: want_of(&d),
        what: "LLDP".into(),
    })
}

/// An IP packet, or (`malformed`) one cut short inside its headers.
fn ip_case(
    rng: &mut Rng,
    state: &State,
    frags: &mut Fragments,
    nic: &'static str,
    hook: Hook,
    dir: Direction,
    malformed: bool,
) -> Option<Case> {
    let p = random_packet(rng, state);
    let vlan = rng.chance(10);
    let built = packet::build(&spec_of(&p, vlan, rng));
    if malformed {
        // Malformed: the datagram cut short inside its headers.
        let cut = packet::MIN_L2 + rng.below(built.bytes.len() - packet::MIN_L2);
        // With the IP length fields rewritten to end there, or left claiming more.
        let frame = if rng.chance(50) {
            built.cut_consistent(cut)
        } else {
            built.cut(cut)
        };
        if classify(&frame).class != sg_common::counter::MALFORMED
            || !testrun::kernel_runs(hook, &frame)
        {
            return None;
        }
        let want = Want {
            accept: false,
            reason: reason::MALFORMED,
            rank: None,
        };
        return Some(Case {
            nic,
            hook,
            frame,
            want,
            what: format!("{p:?} cut at {cut}"),
        });
    }
    let d = evaluate(state, nic, dir, &p).ok()?;
    let mut want = want_of(&d);
    let key = (
        nic.to_owned(),
        dir == Direction::Ingress,
        p.src,
        p.dst,
        p.protocol,
    );
    match p.fragment {
        Fragment::First => {
            frags.insert(key, want.accept);
        }
        Fragment::Later if d.reason == Reason::LaterFragment => {
            if let Some(&first) = frags.get(&key) {
                want = Want {
                    accept: first,
                    reason: reason::FRAGMENT_FOLLOWS_FIRST,
                    rank: None,
                };
            }
        }
        _ => {}
    }
    Some(Case {
        nic,
        hook,
        frame: built.bytes,
        want,
        what: format!("{p:?}"),
    })
}

#[test]
fn kernel_agrees_with_the_evaluator_on_random_policies_and_packets() {
    let seed: u64 = std::env::var("SG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_123);
    println!("seed {seed} (set SG_SEED to replay)");
    let ns = Netns::new("diff").expect("namespace");
    for nic in NICS {
        // This kernel has no dummy driver: a veth pair gives an interface too.
        let peer = format!("{nic}p");
        ns.ip(&["link", "add", nic, "type", "veth", "peer", "name", &peer])
            .expect("veth");
        ns.ip(&["link", "set", nic, "up"]).expect("up");
    }
    ns.exec(|| {
        testrun::pin_to_cpu0().expect("pin to CPU 0");
        let mut enforcer = Enforcer::new(Dataplane::load().expect("load"), None);
        let ifindexes: HashMap<&str, u32> = NICS.iter().map(|n| (*n, ifindex(n).expect("interface exists"))).collect();
        let mut rng = Rng::new(seed);
        let mut frags = Fragments::new();
        let (mut checked, mut big, mut most, mut by_reason) = (0usize, 0usize, 0usize, HashMap::<u32, usize>::new());
        for policy in 0..POLICIES {
            let shape = if policy % 4 == 0 {
                Shape { big_rules: 1000, small_rules: 5 }
            } else {
                Shape { big_rules: 1 + rng.below(60), small_rules: rng.below(20) }
            };
            let state = random_state(&mut rng, seed ^ policy as u64, &shape);
            let rules_n0 = sg_agent::policy::merged_rules(&state, "n0", Direction::Ingress).map_or(0, |v| v.len())
                + sg_agent::policy::merged_rules(&state, "n0", Direction::Egress).map_or(0, |v| v.len());
            if rules_n0 >= 900 {
                big += 1;
            }
            most = most.max(rules_n0);
            enforcer.apply(&state).expect("apply");
            let mut made = 0;
            while made < PACKETS_PER_POLICY {
                let Some(case) = make_case(&mut rng, &state, &mut frags) else { continue };
                made += 1;
                let dp = enforcer.dataplane();
                let v = testrun::verdict_on(dp, case.hook, &case.frame, ifindexes[case.nic]).expect("test run");
                let last = dp.last_decision(0).expect("last decision");
                let dir = last.dir;
                let rank = (last.rank != NO_RANK).then(|| dp.rank(case.nic, dir, last.rank).cloned()).flatten();
                let got = Want { accept: testrun::passes(case.hook, v), reason: last.reason, rank };
                assert_eq!(
                    got, case.want,
                    "seed {seed}, policy {policy} ({rules_n0} rules on n0), packet {made}: {} on {} via {:?}\nframe {:02x?}\nbinding {:?}\nkernel config {:?}",
                    case.what, case.nic, case.hook, case.frame, state.nics.get(case.nic), dp.iface_config(case.nic)
                );
                *by_reason.entry(case.want.reason).or_default() += 1;
                checked += 1;
            }
        }
        let mut reasons: Vec<_> = by_reason.into_iter().collect();
        reasons.sort_unstable();
        for (r, n) in &reasons {
            println!("{:>26} {n}", reason::NAMES[*r as usize]);
        }
        println!("{checked} packets over {POLICIES} policies ({big} with 900+ rules on n0, at most {most}) agree");
        assert!(checked >= 200_000, "only {checked} packets");
        assert!(big >= 5 && most >= 990, "{big} policies with 900+ rules, at most {most}");
        // Every kind of decision was exercised.
        for r in [reason::RULE, reason::DEFAULT_INGRESS_DROP, reason::MALFORMED, reason::NOT_IP, reason::SPOOF_SOURCE, reason::FRAGMENT_FOLLOWS_FIRST, reason::FRAGMENT_NO_FIRST, reason::NEIGHBOUR_DISCOVERY, reason::PATH_MTU] {
            assert!(reasons.iter().any(|(x, _)| *x == r), "no packet was decided by {}", reason::NAMES[r as usize]);
        }
    })
    .expect("namespace thread");
}

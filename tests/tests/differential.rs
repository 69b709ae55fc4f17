//! The data plane must decide every packet exactly as the reference evaluator
//! does, and name the same deciding rule or default: random policies (some
//! with 1,000 rules; group peers, prefix lists, port lists, IPv6, both binding
//! modes, anti-spoofing, platform addresses) and random packets (fragments,
//! VLAN tags, IPv4 options, IPv6 extension chains, ARP, other ethertypes,
//! frames cut short inside their headers with or without consistent lengths),
//! through the loaded programs with `BPF_PROG_TEST_RUN`.
//!
//! Stateful: the evaluator's session model runs beside the kernel's table,
//! and a third of the IP packets follow up on an earlier one (replies, TCP
//! handshakes and closes, more of the same flow, ICMP errors quoting it),
//! while small policy changes land between packets and whole new policies
//! between batches, so sessions are revalidated, revoked and reopened.
//! Seeded: `SG_SEED` replays a failure.

use std::collections::HashMap;

use sg_agent::{
    compile::Rank,
    dataplane::Dataplane,
    enforce::{Enforcer, ifindex},
    policy::{
        AlwaysAllowed, Decision, Direction, Fragment, Frame, Packet, Reason, SessionTimeouts,
        Sessions, Settings, SpoofCheck, State, Verdict, evaluate_frame,
    },
};
use sg_common::{policy::NO_RANK, reason};
use sg_tests::{
    classify::classify,
    packet::{self, L3, Spec},
    policygen::{Rng, Shape, follow_up, mutate, random_packet, random_state, spec_of},
    testrun::{self, Hook},
    topology::Netns,
};

const POLICIES: usize = 50;
const PACKETS_PER_POLICY: usize = 4_200;
/// Packets between small policy changes.
const CHANGE_EVERY: usize = 700;
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
        Reason::AntiSpoof(SpoofCheck::Tagged) => (reason::SPOOF_TAGGED, None),
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
        Reason::Session => (reason::SESSION, None),
        Reason::Related => (reason::RELATED, None),
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

/// The evaluator's side of everything the kernel remembers between packets.
#[derive(Default)]
struct Model {
    sessions: Sessions,
    frags: Fragments,
    /// Recent IP packets the evaluator accepted, to follow up on.
    recent: Vec<(&'static str, Hook, Packet)>,
    /// TCP connections being played out (see [`SCRIPT`]): the SYN that
    /// started each and how far its script has gone.
    scripts: Vec<(&'static str, Hook, Packet, usize)>,
}

impl Model {
    fn remember(&mut self, nic: &'static str, hook: Hook, p: &Packet) {
        const KEEP: usize = 48;
        const PLAYING: usize = 6;
        if self.recent.len() == KEEP {
            self.recent.swap_remove(0);
        }
        self.recent.push((nic, hook, p.clone()));
        if p.protocol == 6 && p.tcp_flags & 0x12 == 0x02 && self.scripts.len() < PLAYING {
            self.scripts.push((nic, hook, p.clone(), 0));
        }
    }
}

/// The hook that sees a NIC's traffic the other way.
fn other(hook: Hook) -> Hook {
    match hook {
        Hook::Xdp => Hook::TcEgress,
        Hook::TcEgress => Hook::Xdp,
    }
}

/// A TCP connection's life after its SYN, as (from the responder, flags):
/// handshake, data both ways, a FIN from each side, then the port reused by
/// a new SYN. [`RST_SCRIPT`] ends it with a reset instead.
const SCRIPT: [(bool, u8); 7] = [
    (true, 0x12),
    (false, 0x10),
    (false, 0x18),
    (true, 0x18),
    (false, 0x11),
    (true, 0x11),
    (false, 0x02),
];
const RST_SCRIPT: [(bool, u8); 4] = [(true, 0x12), (false, 0x10), (true, 0x14), (false, 0x02)];

/// The next packet of a scripted TCP connection started by `syn`, if the
/// script has one left; and whether it crosses the NIC the other way.
fn scripted(syn: &Packet, step: usize, rst: bool) -> Option<(Packet, bool)> {
    let (back, flags) = if rst {
        *RST_SCRIPT.get(step)?
    } else {
        *SCRIPT.get(step)?
    };
    let mut p = syn.clone().with_tcp_flags(flags);
    p.fragment = Fragment::None;
    if back {
        std::mem::swap(&mut p.src, &mut p.dst);
        std::mem::swap(&mut p.src_port, &mut p.dst_port);
    }
    Some((p, back))
}

/// Session timeouts no test run outlives: expiry is tested where time is
/// controlled (`e2e_sessions`), not here.
fn no_expiry(state: &mut State) {
    let week = 604_800;
    let settings = Settings {
        session_timeouts: SessionTimeouts {
            tcp_handshake_secs: week,
            tcp_established_secs: week,
            tcp_closing_secs: week,
            other_secs: week,
        },
        ..state.settings.clone()
    };
    state.set_settings(settings).expect("settings");
}

struct Case {
    nic: &'static str,
    hook: Hook,
    frame: Vec<u8>,
    want: Want,
    what: String,
}

fn make_case(rng: &mut Rng, state: &State, model: &mut Model) -> Option<Case> {
    let kind = rng.below(100);
    // A third of the time, something that belongs with an earlier packet.
    // A TCP connection's next step (which script, by its source port).
    if kind >= 85 && !model.scripts.is_empty() {
        let i = rng.below(model.scripts.len());
        let (nic, hook, syn, step) = model.scripts[i].clone();
        model.scripts[i].3 += 1;
        if let Some((p, back)) = scripted(&syn, step, syn.src_port % 3 == 0) {
            let hook = if back { other(hook) } else { hook };
            let dir = state.nics.get(nic)?.mode.direction(hook == Hook::Xdp);
            return ip_case(rng, state, model, nic, hook, dir, Some(p));
        }
        model.scripts.swap_remove(i);
    }
    if kind >= 65 && !model.recent.is_empty() {
        let (nic, hook, earlier) = rng.pick(&model.recent).clone();
        let (p, back) = follow_up(rng, &earlier, state);
        let hook = if back { other(hook) } else { hook };
        let dir = state.nics.get(nic)?.mode.direction(hook == Hook::Xdp);
        return ip_case(rng, state, model, nic, hook, dir, Some(p));
    }
    let nic = *rng.pick(&NICS);
    let binding = state.nics.get(nic)?;
    let hook = if rng.chance(50) {
        Hook::Xdp
    } else {
        Hook::TcEgress
    };
    let dir = binding.mode.direction(hook == Hook::Xdp);
    if kind < 8 {
        return non_ip_case(rng, state, nic, hook, dir, kind < 5);
    }
    if kind < 15 {
        return malformed_case(rng, state, nic, hook);
    }
    ip_case(rng, state, model, nic, hook, dir, None)
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

/// An IP packet cut short inside its headers (no session effects).
fn malformed_case(rng: &mut Rng, state: &State, nic: &'static str, hook: Hook) -> Option<Case> {
    let p = random_packet(rng, state);
    let built = packet::build(&spec_of(&p, rng.chance(10), rng));
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
    Some(Case {
        nic,
        hook,
        frame,
        want,
        what: format!("{p:?} cut at {cut}"),
    })
}

/// An IP packet (`p`, or a random one), decided by the evaluator with sessions.
fn ip_case(
    rng: &mut Rng,
    state: &State,
    model: &mut Model,
    nic: &'static str,
    hook: Hook,
    dir: Direction,
    p: Option<Packet>,
) -> Option<Case> {
    let p = p.unwrap_or_else(|| random_packet(rng, state));
    let vlan = rng.chance(10);
    let built = packet::build(&spec_of(&p, vlan, rng));
    let frame = if vlan {
        Frame::Tagged(Box::new(Frame::Ip(p.clone())))
    } else {
        Frame::Ip(p.clone())
    };
    let d = model
        .sessions
        .decide_frame(state, nic, dir, &frame, std::time::Duration::ZERO)
        .ok()?;
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
            model.frags.insert(key, want.accept);
        }
        Fragment::Later if d.reason == Reason::LaterFragment => {
            if let Some(&first) = model.frags.get(&key) {
                want = Want {
                    accept: first,
                    reason: reason::FRAGMENT_FOLLOWS_FIRST,
                    rank: None,
                };
            }
        }
        _ => {}
    }
    if want.accept && p.fragment != Fragment::Later && p.quoted.is_none() {
        model.remember(nic, hook, &p);
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
        let mut model = Model::default();
        let mut changes = HashMap::<&str, usize>::new();
        let (mut checked, mut big, mut most, mut by_reason) = (0usize, 0usize, 0usize, HashMap::<u32, usize>::new());
        for policy in 0..POLICIES {
            let shape = if policy % 4 == 0 {
                Shape { big_rules: 1000, small_rules: 5 }
            } else {
                Shape { big_rules: 1 + rng.below(60), small_rules: rng.below(20) }
            };
            let mut state = random_state(&mut rng, seed ^ policy as u64, &shape);
            no_expiry(&mut state);
            let rules_n0 = sg_agent::policy::merged_rules(&state, "n0", Direction::Ingress).map_or(0, |v| v.len())
                + sg_agent::policy::merged_rules(&state, "n0", Direction::Egress).map_or(0, |v| v.len());
            if rules_n0 >= 900 {
                big += 1;
            }
            most = most.max(rules_n0);
            let report = enforcer.apply(&state).expect("apply");
            for gone in &report.removed {
                model.sessions.flush_nic(gone);
            }
            let mut made = 0;
            while made < PACKETS_PER_POLICY {
                if made > 0 && made % CHANGE_EVERY == 0 {
                    *changes.entry(mutate(&mut rng, &mut state)).or_default() += 1;
                    enforcer.apply(&state).expect("apply a change");
                }
                let Some(case) = make_case(&mut rng, &state, &mut model) else { continue };
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
        println!("policy changes between packets: {changes:?}");
        let events = enforcer.dataplane().session_events().expect("session events");
        println!("kernel session events: {events:?}");
        for e in ["created", "revoked", "revalidated", "reopened"] {
            assert!(enforcer.dataplane().session_event(e).expect("session events") > 0, "no session was {e}");
        }
        assert!(checked >= 200_000, "only {checked} packets");
        assert!(big >= 5 && most >= 990, "{big} policies with 900+ rules, at most {most}");
        // Every kind of decision was exercised.
        for r in [reason::RULE, reason::DEFAULT_INGRESS_DROP, reason::MALFORMED, reason::NOT_IP, reason::SPOOF_SOURCE, reason::FRAGMENT_FOLLOWS_FIRST, reason::FRAGMENT_NO_FIRST, reason::NEIGHBOUR_DISCOVERY, reason::PATH_MTU, reason::SESSION, reason::RELATED] {
            assert!(reasons.iter().any(|(x, _)| *x == r), "no packet was decided by {}", reason::NAMES[r as usize]);
        }
    })
    .expect("namespace thread");
}

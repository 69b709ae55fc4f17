//! The data plane must decide every packet exactly as the reference evaluator
//! does, and name the same deciding rule or default: random policies (some
//! with 1,000 rules; group peers, prefix lists, port lists, IPv6, both binding
//! modes, anti-spoofing, platform addresses) and random packets (fragments,
//! VLAN tags (802.1Q, 802.1ad, QinQ) around IP, ARP and other frames, IPv4
//! options, IPv6 extension chains, two fragment headers in one chain, ARP,
//! other ethertypes, frames cut short inside their headers with or without
//! consistent lengths, platform addresses as sources and destinations, IPv6
//! packets from and to IPv4-mapped forms of the NICs' addresses), through the
//! loaded programs (XDP, TC egress, TC ingress) with `BPF_PROG_TEST_RUN`.
//!
//! Stateful: the evaluator's session and fragment model runs beside the
//! kernel's tables, and a third of the IP packets follow up on an earlier one
//! (replies, TCP handshakes and closes, more of the same flow, the responder's
//! own echo request, ICMP errors quoting it, later fragments of a first
//! fragment, in its family or in the other one), while small policy changes
//! land between packets and whole new policies between batches, so sessions
//! are revalidated, revoked and reopened and first fragments decided again.
//! Seeded: `SG_SEED` replays a failure.

use std::{collections::HashMap, net::IpAddr};

use sg_agent::{
    dataplane::{Dataplane, Limits},
    iface::index as ifindex,
    reconcile::Reconciler,
};
use sg_common::{policy::NO_RANK, reason};
use sg_policy::compile::Rank;
use sg_policy::{
    AlwaysAllowed, Decision, Direction, Fragment, Frame, Packet, Reason, SessionTimeouts, Sessions,
    Settings, SpoofCheck, State, Verdict,
};
use sg_tests::{
    classify::classify,
    packet::{self, Ext, L3, Spec},
    policygen::{
        Rng, Shape, follow_up, later_fragment_of, mutate, random_packet, random_state,
        random_vlans, spec_of, tagged, v4_mapped,
    },
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
        Reason::FragmentFollowsFirst => (reason::FRAGMENT_FOLLOWS_FIRST, None),
        Reason::FragmentExpired => (reason::FRAGMENT_EXPIRED, None),
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

/// A first fragment seen: where, the packet, whether it was accepted.
type First = (&'static str, Hook, Packet, bool);

/// The evaluator's side of everything the kernel remembers between packets
/// (sessions and first fragments, in `sessions`), and what to follow up on.
#[derive(Default)]
struct Model {
    sessions: Sessions,
    /// Recent IP packets the evaluator accepted, to follow up on.
    recent: Vec<(&'static str, Hook, Packet)>,
    /// Recent first fragments, accepted or not, for later fragments to follow.
    firsts: Vec<First>,
    /// Recent echo requests the evaluator accepted.
    echoes: Vec<(&'static str, Hook, Packet)>,
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
        if p.is_echo_request() {
            if self.echoes.len() == PLAYING {
                self.echoes.swap_remove(0);
            }
            self.echoes.push((nic, hook, p.clone()));
        }
    }

    fn remember_first(&mut self, first: First) {
        const KEEP: usize = 32;
        if self.firsts.len() == KEEP {
            self.firsts.swap_remove(0);
        }
        self.firsts.push(first);
    }
}

/// What the run saw of the classes of packet that once passed wrongly, so the
/// test can require that each was tried.
#[derive(Default, Debug)]
struct Seen {
    /// A tagged frame leaving an anti-spoofed NIC.
    tagged_guarded: usize,
    /// An IPv6 packet from an IPv4-mapped form of its NIC's IPv4 address,
    /// leaving an anti-spoofed NIC.
    mapped_source_guarded: usize,
    /// A later fragment in the other family than its first (mapped addresses).
    other_family_fragment: usize,
    /// A later fragment whose accepted first fragment, decided again, drops.
    first_no_longer_accepted: usize,
    /// A later fragment whose first fragment was accepted and still is.
    first_still_accepted: usize,
    /// An IPv6 chain with a second fragment header.
    two_fragment_headers: usize,
    /// An echo request from the responder of an echo the model accepted.
    responder_echo_request: usize,
    /// A packet whose NIC-side address (ingress destination, egress source)
    /// is a platform address, decided by a later step than step 2.
    platform_on_the_nics_side: usize,
}

/// The receive side: XDP, or TC ingress (attach mode `tc`).
fn receive_hook(rng: &mut Rng) -> Hook {
    if rng.chance(50) {
        Hook::Xdp
    } else {
        Hook::TcIngress
    }
}

/// A hook that sees a NIC's traffic the other way.
fn other(hook: Hook, rng: &mut Rng) -> Hook {
    if hook.receives() {
        Hook::TcEgress
    } else {
        receive_hook(rng)
    }
}

/// Forgets every first fragment the kernel remembers (the model forgets its
/// own beside): between whole policies, since a NIC unbound and bound again
/// may or may not get its old NIC id, and with it its old fragment entries.
fn flush_kernel_fragments(dp: &mut Dataplane) {
    dp.maps_mut().forget_fragments();
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

/// Session and fragment timeouts no test run outlives (the model's clock
/// stands still; fragment entries are flushed between whole policies, which
/// take far less than the fragment timeout's 10 minutes): expiry is tested
/// where time is controlled (`e2e_sessions`, `fragments_dataplane`), not here.
fn no_expiry(state: &mut State) {
    let week = 604_800;
    let settings = Settings {
        session_timeouts: SessionTimeouts {
            tcp_handshake_secs: week,
            tcp_established_secs: week,
            tcp_closing_secs: week,
            other_secs: week,
        },
        fragment_timeout_secs: 600,
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

fn make_case(rng: &mut Rng, state: &State, model: &mut Model, seen: &mut Seen) -> Option<Case> {
    let kind = rng.below(100);
    // A third of the time, something that belongs with an earlier packet.
    // A TCP connection's next step (which script, by its source port).
    if kind >= 85 && !model.scripts.is_empty() {
        let i = rng.below(model.scripts.len());
        let (nic, hook, syn, step) = model.scripts[i].clone();
        model.scripts[i].3 += 1;
        if let Some((p, back)) = scripted(&syn, step, syn.src_port % 3 == 0) {
            let hook = if back { other(hook, rng) } else { hook };
            let dir = state.nics.get(nic)?.mode.direction(hook.receives());
            return ip_case(rng, state, model, seen, nic, hook, dir, Some(p));
        }
        model.scripts.swap_remove(i);
    }
    // A later fragment of a recent first fragment.
    if kind >= 78 && !model.firsts.is_empty() {
        let (nic, hook, first, accepted) = rng.pick(&model.firsts).clone();
        let mut later = later_fragment_of(&first);
        if rng.chance(15)
            && let Some(other_family) = in_the_other_family(&later)
        {
            later = other_family;
            seen.other_family_fragment += 1;
        }
        let dir = state.nics.get(nic)?.mode.direction(hook.receives());
        let case = ip_case(rng, state, model, seen, nic, hook, dir, Some(later.clone()))?;
        if accepted && case.want.reason == reason::FRAGMENT_FOLLOWS_FIRST {
            if case.want.accept {
                seen.first_still_accepted += 1;
            } else {
                seen.first_no_longer_accepted += 1;
            }
        }
        return Some(case);
    }
    // An echo that was accepted, followed up: the responder's own echo
    // request with the initiator's identifier (a new flow), a reply, or the
    // initiator's next request.
    if (60..65).contains(&kind) && !model.echoes.is_empty() {
        let (nic, hook, echo) = rng.pick(&model.echoes).clone();
        let (p, back) = match rng.below(10) {
            0..=4 => {
                seen.responder_echo_request += 1;
                (Packet::echo_request(echo.dst, echo.src, echo.icmp_id), true)
            }
            5..=7 => (Packet::echo_reply(echo.dst, echo.src, echo.icmp_id), true),
            _ => (echo.clone(), false),
        };
        let hook = if back { other(hook, rng) } else { hook };
        let dir = state.nics.get(nic)?.mode.direction(hook.receives());
        return ip_case(rng, state, model, seen, nic, hook, dir, Some(p));
    }
    if kind >= 65 && !model.recent.is_empty() {
        let (nic, hook, earlier) = rng.pick(&model.recent).clone();
        let (p, back) = follow_up(rng, &earlier, state);
        let hook = if back { other(hook, rng) } else { hook };
        let dir = state.nics.get(nic)?.mode.direction(hook.receives());
        return ip_case(rng, state, model, seen, nic, hook, dir, Some(p));
    }
    let nic = *rng.pick(&NICS);
    let binding = state.nics.get(nic)?;
    let hook = if rng.chance(50) {
        receive_hook(rng)
    } else {
        Hook::TcEgress
    };
    let dir = binding.mode.direction(hook.receives());
    if kind < 8 {
        return non_ip_case(rng, state, model, seen, nic, hook, dir, kind < 5);
    }
    if kind < 14 {
        return malformed_case(rng, state, nic, hook);
    }
    if kind < 16 {
        return two_fragment_headers_case(rng, state, seen, nic, hook);
    }
    ip_case(rng, state, model, seen, nic, hook, dir, None)
}

/// `p` with its addresses in the other family: IPv4 as IPv4-mapped IPv6, and
/// IPv6 between mapped addresses as IPv4; `None` if they have no such form.
fn in_the_other_family(p: &Packet) -> Option<Packet> {
    let swap = |a: IpAddr| match a {
        IpAddr::V4(v) => Some(v4_mapped(v)),
        IpAddr::V6(v) => v.to_ipv4_mapped().map(IpAddr::V4),
    };
    let mut q = p.clone();
    q.src = swap(p.src)?;
    q.dst = swap(p.dst)?;
    Some(q)
}

/// An ARP frame (`arp`) or an LLDP frame, tagged now and then.
#[expect(clippy::too_many_arguments, reason = "the case's whole context")]
fn non_ip_case(
    rng: &mut Rng,
    state: &State,
    model: &mut Model,
    seen: &mut Seen,
    nic: &'static str,
    hook: Hook,
    dir: Direction,
    arp: bool,
) -> Option<Case> {
    let binding = state.nics.get(nic)?;
    let vlans = random_vlans(rng);
    let (spec, frame, what) = if arp {
        let sender = if rng.chance(50) {
            binding.addresses.iter().find_map(|a| match a {
                IpAddr::V4(v) => Some(*v),
                IpAddr::V6(_) => None,
            })?
        } else {
            sg_tests::policygen::pool_v4(rng)
        };
        let spec = Spec {
            l4: None,
            ..Spec::new(L3::ArpFrom(sender.octets()), packet::L4::Gre)
        };
        (spec, Frame::Arp { sender }, format!("ARP from {sender}"))
    } else {
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
        (spec, Frame::Other { ethertype: 0x88cc }, "LLDP".into())
    };
    let spec = Spec {
        vlans: vlans.clone(),
        ..spec
    };
    let d = model
        .sessions
        .decide_frame(
            state,
            nic,
            dir,
            &tagged(frame, vlans.len()),
            std::time::Duration::ZERO,
        )
        .ok()?;
    if d.reason == Reason::AntiSpoof(SpoofCheck::Tagged) {
        seen.tagged_guarded += 1;
    }
    Some(Case {
        nic,
        hook,
        frame: packet::build(&spec).bytes,
        want: want_of(&d),
        what: format!("{what} in tags {vlans:x?}"),
    })
}

/// An IP packet cut short inside its headers (no session effects).
fn malformed_case(rng: &mut Rng, state: &State, nic: &'static str, hook: Hook) -> Option<Case> {
    let p = random_packet(rng, state);
    let built = packet::build(&spec_of(&p, &random_vlans(rng), rng));
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

/// An IPv6 first fragment (or whole datagram) whose chain holds a second
/// fragment header, first or later: malformed, whatever it would have been
/// (SPEC §3 item 8). It once passed as a later fragment of another datagram.
fn two_fragment_headers_case(
    rng: &mut Rng,
    state: &State,
    seen: &mut Seen,
    nic: &'static str,
    hook: Hook,
) -> Option<Case> {
    let mut p = random_packet(rng, state);
    if p.src.is_ipv4() {
        return None;
    }
    if p.is_later_fragment() || rng.chance(70) {
        p.fragment = Fragment::First { id: 0x1234 };
    }
    let mut spec = spec_of(&p, &random_vlans(rng), rng);
    let L3::V6 { ext, .. } = &mut spec.l3 else {
        return None;
    };
    let at = ext
        .iter()
        .position(|e| matches!(e, Ext::Fragment { .. }))
        .map_or(ext.len(), |i| i + 1);
    let offset = if rng.chance(70) { 64 } else { 0 };
    ext.insert(
        at,
        Ext::Fragment {
            offset,
            more: rng.chance(50),
        },
    );
    let frame = packet::build(&spec).bytes;
    if classify(&frame).class != sg_common::counter::MALFORMED
        || !testrun::kernel_runs(hook, &frame)
    {
        return None;
    }
    seen.two_fragment_headers += 1;
    Some(Case {
        nic,
        hook,
        frame,
        want: Want {
            accept: false,
            reason: reason::MALFORMED,
            rank: None,
        },
        what: format!("{p:?} with a second fragment header (offset {offset})"),
    })
}

/// An IP packet (`p`, or a random one), tagged now and then, decided by the
/// evaluator with sessions and fragments.
#[expect(clippy::too_many_arguments, reason = "the case's whole context")]
fn ip_case(
    rng: &mut Rng,
    state: &State,
    model: &mut Model,
    seen: &mut Seen,
    nic: &'static str,
    hook: Hook,
    dir: Direction,
    p: Option<Packet>,
) -> Option<Case> {
    let p = p.unwrap_or_else(|| random_packet(rng, state));
    let vlans = random_vlans(rng);
    let built = packet::build(&spec_of(&p, &vlans, rng));
    let frame = tagged(Frame::Ip(p.clone()), vlans.len());
    let d = model
        .sessions
        .decide_frame(state, nic, dir, &frame, std::time::Duration::ZERO)
        .ok()?;
    let want = want_of(&d);
    note(seen, state, nic, dir, &p, &d);
    if let Fragment::First { .. } = p.fragment {
        model.remember_first((nic, hook, p.clone(), want.accept));
    }
    if want.accept && !p.is_later_fragment() && p.quoted.is_none() {
        model.remember(nic, hook, &p);
    }
    Some(Case {
        nic,
        hook,
        frame: built.bytes,
        want,
        what: format!("{p:?} in tags {vlans:x?}"),
    })
}

/// Counts the classes of [`Seen`] that `p`'s decision `d` belongs to.
fn note(seen: &mut Seen, state: &State, nic: &str, dir: Direction, p: &Packet, d: &Decision) {
    let Some(binding) = state.nics.get(nic) else {
        return;
    };
    let guarded = dir == Direction::Egress && binding.anti_spoof_enabled();
    if d.reason == Reason::AntiSpoof(SpoofCheck::Tagged) {
        seen.tagged_guarded += 1;
    }
    let mapped_own = binding.addresses.iter().any(|a| match a {
        IpAddr::V4(v) => v4_mapped(*v) == p.src,
        IpAddr::V6(_) => false,
    });
    if guarded && mapped_own && d.reason == Reason::AntiSpoof(SpoofCheck::SourceAddress) {
        seen.mapped_source_guarded += 1;
    }
    let nics_side = match dir {
        Direction::Ingress => p.dst,
        Direction::Egress => p.src,
    };
    let platform_side = state
        .settings
        .platform_addresses
        .iter()
        .any(|c| c.contains(&nics_side));
    if platform_side
        && !matches!(
            d.reason,
            Reason::AlwaysAllowed(_) | Reason::AntiSpoof(_) | Reason::Malformed
        )
    {
        seen.platform_on_the_nics_side += 1;
    }
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
        let mut reconciler = Reconciler::new(Dataplane::load_for_tests(Limits::default()).expect("load"), None);
        let ifindexes: HashMap<&str, u32> = NICS.iter().map(|n| (*n, ifindex(n).expect("interface exists"))).collect();
        let mut rng = Rng::new(seed);
        let mut model = Model::default();
        let mut tried = Seen::default();
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
            let rules_n0 = sg_policy::merged_rules(&state, "n0", Direction::Ingress).map_or(0, |v| v.len())
                + sg_policy::merged_rules(&state, "n0", Direction::Egress).map_or(0, |v| v.len());
            if rules_n0 >= 900 {
                big += 1;
            }
            most = most.max(rules_n0);
            let report = reconciler.reconcile(&state).expect("apply");
            for gone in &report.removed {
                model.sessions.flush_nic(gone);
            }
            flush_kernel_fragments(reconciler.dataplane());
            model.sessions.flush_fragments();
            let mut made = 0;
            while made < PACKETS_PER_POLICY {
                if made > 0 && made % CHANGE_EVERY == 0 {
                    *changes.entry(mutate(&mut rng, &mut state)).or_default() += 1;
                    reconciler.reconcile(&state).expect("apply a change");
                }
                let Some(case) = make_case(&mut rng, &state, &mut model, &mut tried) else { continue };
                made += 1;
                let dp = reconciler.dataplane();
                let v = testrun::verdict_on(dp, case.hook, &case.frame, ifindexes[case.nic]).expect("test run");
                let last = dp.maps().last_decision(0).expect("last decision");
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
        let events = reconciler.dataplane().maps().session_events().expect("session events");
        println!("kernel session events: {events:?}");
        for e in ["created", "revoked", "revalidated", "reopened"] {
            assert!(reconciler.dataplane().maps().session_event(e).expect("session events") > 0, "no session was {e}");
        }
        assert!(checked >= 200_000, "only {checked} packets");
        assert!(big >= 5 && most >= 990, "{big} policies with 900+ rules, at most {most}");
        // Every kind of decision was exercised.
        for r in [reason::RULE, reason::DEFAULT_INGRESS_DROP, reason::MALFORMED, reason::NOT_IP, reason::SPOOF_SOURCE, reason::SPOOF_TAGGED, reason::SPOOF_ARP, reason::SPOOF_ETHERTYPE, reason::FRAGMENT_FOLLOWS_FIRST, reason::FRAGMENT_NO_FIRST, reason::NEIGHBOUR_DISCOVERY, reason::PATH_MTU, reason::PLATFORM_ADDRESS, reason::SESSION, reason::RELATED] {
            assert!(reasons.iter().any(|(x, _)| *x == r), "no packet was decided by {}", reason::NAMES[r as usize]);
        }
        // Every class of packet that once passed wrongly was tried.
        println!("{tried:?}");
        let Seen { tagged_guarded, mapped_source_guarded, other_family_fragment, first_no_longer_accepted, first_still_accepted, two_fragment_headers, responder_echo_request, platform_on_the_nics_side } = tried;
        for (n, what) in [
            (tagged_guarded, "tagged frames leaving an anti-spoofed NIC"),
            (mapped_source_guarded, "IPv4-mapped sources leaving an anti-spoofed NIC"),
            (other_family_fragment, "later fragments in the other family"),
            (first_no_longer_accepted, "later fragments whose first is no longer accepted"),
            (first_still_accepted, "later fragments whose first is still accepted"),
            (two_fragment_headers, "chains with two fragment headers"),
            (responder_echo_request, "echo requests from a responder"),
            (platform_on_the_nics_side, "platform addresses on the NIC's side"),
        ] {
            assert!(n >= 10, "only {n} {what}");
        }
    })
    .expect("namespace thread");
}

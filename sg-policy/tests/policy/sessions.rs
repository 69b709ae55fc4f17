//! SPEC §3 step 4 and §4: the reference session model, packet by packet.
//!
//! Each test drives a [`Sessions`] table through a scenario with explicit times
//! and checks verdicts, the step that decided, and what the table holds.

use std::time::Duration;

use crate::support::{basic, bind, ip, rule, state};
use sg_policy::evaluate::tcp_flags::{ACK, FIN, PSH, RST, SYN};
use sg_policy::{
    BindingMode, Decision, Direction, Endpoint, Fragment, Frame, GroupId, GroupSpec, NicBinding,
    Packet, PolicyError, Quoted, Reason, RuleId, SessionTimeouts, SessionView, Sessions, Settings,
    State, TcpState, Verdict, evaluate,
};

const ME: &str = "10.0.0.10";
const ME6: &str = "2001:db8::10";
const ME2: &str = "10.0.0.11";
const PEER: &str = "203.0.113.5";
const PEER6: &str = "2001:db8:ff::5";
const OTHER: &str = "198.51.100.9";
/// The client's (initiator's) port.
const C: u16 = 40000;
/// The server's (responder's) port.
const S: u16 = 443;

use Direction::{Egress as Out, Ingress as In};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// A TCP segment with the given flags.
fn seg(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Packet {
    Packet::tcp(ip(src), sport, ip(dst), dport).with_tcp_flags(flags)
}

fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Packet {
    Packet::udp(ip(src), sport, ip(dst), dport)
}

/// A policy state and a session table, driven together.
struct Host {
    s: State,
    t: Sessions,
}

impl Host {
    fn new(s: State) -> Self {
        Self {
            s,
            t: Sessions::new(),
        }
    }

    fn go(&mut self, nic: &str, d: Direction, p: &Packet, at: Duration) -> Decision {
        self.t.decide(&self.s, nic, d, p, at).expect("decide")
    }

    /// The verdict on `eth0`.
    fn v(&mut self, d: Direction, p: &Packet, at: Duration) -> Verdict {
        self.go("eth0", d, p, at).verdict
    }

    /// The reason on `eth0`.
    fn r(&mut self, d: Direction, p: &Packet, at: Duration) -> Reason {
        self.go("eth0", d, p, at).reason
    }

    fn only(&self) -> SessionView {
        let e = self.t.entries();
        assert_eq!(e.len(), 1, "{e:?}");
        e.into_iter().next().expect("one entry")
    }

    fn tcp_state(&self) -> Option<TcpState> {
        self.only().tcp
    }

    /// The full TCP handshake from ME:`port` to PEER:S at `at`.
    fn handshake(&mut self, port: u16, at: Duration) {
        assert_eq!(
            self.r(Out, &seg(ME, port, PEER, S, SYN), at),
            Reason::DefaultEgressBasic
        );
        assert_eq!(
            self.r(In, &seg(PEER, S, ME, port, SYN | ACK), at),
            Reason::Session
        );
        assert_eq!(
            self.r(Out, &seg(ME, port, PEER, S, ACK), at),
            Reason::Session
        );
    }
}

fn is_rule(r: &Reason) -> bool {
    matches!(r, Reason::Rule(_))
}

/// `eth0` (ME, ME6) in a basic group whose ingress is denied by explicit rules;
/// egress falls to the basic default, which accepts.
fn outbound_host() -> Host {
    let mut s = state();
    let g = basic(&mut s, "g");
    s.authorize_all(
        &g,
        vec![
            rule("ingress", "Drop", "100", "ALL", "-1/-1", "0.0.0.0/0"),
            rule("ingress", "Drop", "100", "ALL", "-1/-1", "::/0"),
        ],
    )
    .unwrap();
    bind(&mut s, "eth0", &[ME, ME6], &[&g]);
    Host::new(s)
}

/// An enterprise group (egress and ingress default to drop) accepting `ports`
/// of `protocol` from anywhere (IPv4).
fn enterprise_accepting(s: &mut State, name: &str, protocol: &str, ports: &str) -> GroupId {
    let g = s.create_group(GroupSpec::enterprise(name)).unwrap();
    s.authorize(
        &g,
        rule("ingress", "Accept", "1", protocol, ports, "0.0.0.0/0"),
    )
    .unwrap();
    g
}

/// `eth0` (ME) in an enterprise group accepting ingress SSH; the group and the
/// rule's id.
fn ssh_server() -> (Host, GroupId, RuleId) {
    let mut s = state();
    let g = enterprise_accepting(&mut s, "ssh", "TCP", "22/22");
    let r = s.describe_group(&g).unwrap().rules[0].id.clone();
    bind(&mut s, "eth0", &[ME], &[&g]);
    (Host::new(s), g, r)
}

/// PEER:C opens SSH to ME:22 at `at`, through the handshake.
fn ssh_handshake(h: &mut Host, at: Duration) {
    assert!(is_rule(&h.r(In, &seg(PEER, C, ME, 22, SYN), at)));
    assert_eq!(
        h.r(Out, &seg(ME, 22, PEER, C, SYN | ACK), at),
        Reason::Session
    );
    assert_eq!(h.r(In, &seg(PEER, C, ME, 22, ACK), at), Reason::Session);
    assert_eq!(h.tcp_state(), Some(TcpState::Established));
}

// ---- replies ---------------------------------------------------------------------

#[test]
fn replies_pass_although_ingress_denies() {
    let mut h = outbound_host();
    let reply = seg(PEER, S, ME, C, SYN | ACK);
    // Without a session the rules drop the reply.
    let without = evaluate(&h.s, "eth0", In, &reply).unwrap();
    assert_eq!(without.verdict, Verdict::Drop);
    assert!(is_rule(&without.reason));

    assert_eq!(
        h.r(Out, &seg(ME, C, PEER, S, SYN), secs(0)),
        Reason::DefaultEgressBasic
    );
    assert_eq!(h.t.len(), 1);
    assert_eq!(
        h.go("eth0", In, &reply, secs(1)),
        Decision {
            verdict: Verdict::Accept,
            reason: Reason::Session
        }
    );
    // Another port of the same peer is another session: none.
    assert_eq!(
        h.v(In, &seg(PEER, S, ME, C + 1, SYN | ACK), secs(1)),
        Verdict::Drop
    );

    // UDP, IPv4 and IPv6.
    h.go("eth0", Out, &udp(ME, 5353, PEER, 53), secs(2));
    assert_eq!(h.r(In, &udp(PEER, 53, ME, 5353), secs(3)), Reason::Session);
    assert_eq!(h.v(In, &udp(PEER, 54, ME, 5353), secs(3)), Verdict::Drop);
    assert_eq!(h.v(In, &udp(OTHER, 53, ME, 5353), secs(3)), Verdict::Drop);
    h.go("eth0", Out, &udp(ME6, 5353, PEER6, 53), secs(2));
    assert_eq!(
        h.r(In, &udp(PEER6, 53, ME6, 5353), secs(3)),
        Reason::Session
    );

    // Other protocols (GRE) by addresses alone.
    let gre = |a: &str, b: &str| Packet::other(ip(a), ip(b), 47);
    assert_eq!(
        h.r(Out, &gre(ME, PEER), secs(4)),
        Reason::DefaultEgressBasic
    );
    assert_eq!(h.r(In, &gre(PEER, ME), secs(5)), Reason::Session);
    assert_eq!(h.v(In, &gre(OTHER, ME), secs(5)), Verdict::Drop);
    // GRE's key is not another protocol's.
    assert_eq!(
        h.v(In, &Packet::other(ip(PEER), ip(ME), 132), secs(5)),
        Verdict::Drop
    );
    assert_eq!(h.t.len(), 4);
}

#[test]
fn entries_show_who_started_the_session_and_when() {
    let mut h = outbound_host();
    h.go("eth0", Out, &seg(ME, C, PEER, S, SYN), secs(3));
    h.go("eth0", In, &seg(PEER, S, ME, C, SYN | ACK), secs(4));
    assert_eq!(
        h.only(),
        SessionView {
            nic: "eth0".into(),
            protocol: 6,
            initiator: Endpoint {
                addr: ip(ME),
                port: C
            },
            responder: Endpoint {
                addr: ip(PEER),
                port: S
            },
            first_direction: Out,
            tcp: Some(TcpState::Handshake),
            created: secs(3),
            last_seen: secs(4),
        }
    );
}

// ---- idle timeouts -----------------------------------------------------------------

#[test]
fn udp_reply_after_the_idle_timeout_is_dropped() {
    let mut h = outbound_host();
    h.go("eth0", Out, &udp(ME, C, PEER, 53), secs(0));
    // Alive while idle < 910 s; each packet restarts the clock.
    assert_eq!(h.r(In, &udp(PEER, 53, ME, C), ms(909_999)), Reason::Session);
    assert_eq!(h.only().last_seen, ms(909_999));
    assert_eq!(
        h.r(In, &udp(PEER, 53, ME, C), ms(909_999 + 909_999)),
        Reason::Session
    );
    // Exactly the timeout: expired, removed, decided by the rules.
    let late = h.go("eth0", In, &udp(PEER, 53, ME, C), ms(909_999 * 2 + 910_000));
    assert_eq!(late.verdict, Verdict::Drop);
    assert!(is_rule(&late.reason));
    assert!(h.t.is_empty());
}

#[test]
fn the_other_timeout_is_configurable() {
    let mut h = outbound_host();
    h.s.set_settings(Settings {
        session_timeouts: SessionTimeouts {
            other_secs: 30,
            ..SessionTimeouts::default()
        },
        ..Settings::default()
    })
    .unwrap();
    h.go("eth0", Out, &udp(ME, C, PEER, 53), secs(100));
    assert_eq!(h.v(In, &udp(PEER, 53, ME, C), secs(129)), Verdict::Accept);
    assert_eq!(h.v(In, &udp(PEER, 53, ME, C), secs(159)), Verdict::Drop);
    assert!(h.t.is_empty());
}

#[test]
fn tcp_uses_the_handshake_timeout_until_the_initiator_acks_the_syn_ack() {
    // Handshake completed: 61 s of silence is fine (910 s applies).
    let mut h = outbound_host();
    h.handshake(C, secs(0));
    assert_eq!(h.tcp_state(), Some(TcpState::Established));
    assert_eq!(
        h.r(In, &seg(PEER, S, ME, C, ACK), secs(61)),
        Reason::Session
    );
    assert_eq!(
        h.r(In, &seg(PEER, S, ME, C, ACK), secs(61 + 909)),
        Reason::Session
    );

    // Only a SYN: 61 s later the SYN-ACK finds nothing.
    let mut h = outbound_host();
    h.go("eth0", Out, &seg(ME, C, PEER, S, SYN), secs(0));
    assert_eq!(h.tcp_state(), Some(TcpState::Handshake));
    assert_eq!(
        h.v(In, &seg(PEER, S, ME, C, SYN | ACK), secs(61)),
        Verdict::Drop
    );
    assert!(h.t.is_empty());

    // SYN and SYN-ACK but no final ACK: still the handshake's 60 s.
    let mut h = outbound_host();
    h.go("eth0", Out, &seg(ME, C, PEER, S, SYN), secs(0));
    h.go("eth0", In, &seg(PEER, S, ME, C, SYN | ACK), secs(1));
    assert_eq!(h.tcp_state(), Some(TcpState::Handshake));
    assert_eq!(
        h.r(In, &seg(PEER, S, ME, C, SYN | ACK), ms(60_999)),
        Reason::Session
    );
    assert_eq!(
        h.v(In, &seg(PEER, S, ME, C, SYN | ACK), ms(120_999)),
        Verdict::Drop
    );
}

#[test]
fn only_the_initiators_ack_after_the_responders_syn_ack_completes_the_handshake() {
    // The initiator's ACK before any SYN-ACK does not count, even once one comes.
    let mut h = outbound_host();
    h.go("eth0", Out, &seg(ME, C, PEER, S, SYN), secs(0));
    h.go("eth0", Out, &seg(ME, C, PEER, S, ACK), secs(1));
    h.go("eth0", In, &seg(PEER, S, ME, C, SYN | ACK), secs(2));
    assert_eq!(h.tcp_state(), Some(TcpState::Handshake));
    assert_eq!(h.v(In, &seg(PEER, S, ME, C, ACK), secs(62)), Verdict::Drop);

    // A SYN-ACK from the initiator is not the responder's.
    let mut h = outbound_host();
    h.go("eth0", Out, &seg(ME, C, PEER, S, SYN), secs(0));
    h.go("eth0", Out, &seg(ME, C, PEER, S, SYN | ACK), secs(0));
    h.go("eth0", Out, &seg(ME, C, PEER, S, ACK), secs(0));
    assert_eq!(h.tcp_state(), Some(TcpState::Handshake));

    // The responder's ACK does not complete it either.
    let mut h = outbound_host();
    h.go("eth0", Out, &seg(ME, C, PEER, S, SYN), secs(0));
    h.go("eth0", In, &seg(PEER, S, ME, C, SYN | ACK), secs(0));
    h.go("eth0", In, &seg(PEER, S, ME, C, ACK), secs(0));
    assert_eq!(h.tcp_state(), Some(TcpState::Handshake));
    // The initiator's ACK with data (PSH) does.
    h.go("eth0", Out, &seg(ME, C, PEER, S, PSH | ACK), secs(0));
    assert_eq!(h.tcp_state(), Some(TcpState::Established));
}

#[test]
fn one_fin_keeps_the_established_timeout_and_both_fins_give_10_s() {
    let mut h = outbound_host();
    h.handshake(C, secs(0));
    // Half-closed by the initiator: still established.
    assert_eq!(
        h.r(Out, &seg(ME, C, PEER, S, FIN | ACK), secs(1)),
        Reason::Session
    );
    assert_eq!(h.tcp_state(), Some(TcpState::Established));
    // The same side's FIN again changes nothing.
    h.go("eth0", Out, &seg(ME, C, PEER, S, FIN | ACK), secs(2));
    assert_eq!(h.tcp_state(), Some(TcpState::Established));
    assert_eq!(
        h.r(In, &seg(PEER, S, ME, C, PSH | ACK), secs(102)),
        Reason::Session
    );
    // The responder's FIN: closing.
    assert_eq!(
        h.r(In, &seg(PEER, S, ME, C, FIN | ACK), secs(103)),
        Reason::Session
    );
    assert_eq!(h.tcp_state(), Some(TcpState::Closing));
    assert_eq!(
        h.r(In, &seg(PEER, S, ME, C, ACK), ms(112_999)),
        Reason::Session
    );
    assert_eq!(
        h.v(In, &seg(PEER, S, ME, C, ACK), ms(122_999)),
        Verdict::Drop
    );
    assert!(h.t.is_empty());

    // FIN from the responder first, then the initiator: the same.
    let mut h = outbound_host();
    h.handshake(C, secs(0));
    h.go("eth0", In, &seg(PEER, S, ME, C, FIN | ACK), secs(1));
    assert_eq!(h.tcp_state(), Some(TcpState::Established));
    h.go("eth0", Out, &seg(ME, C, PEER, S, FIN | ACK), secs(1));
    assert_eq!(h.tcp_state(), Some(TcpState::Closing));
    assert_eq!(h.v(In, &seg(PEER, S, ME, C, ACK), secs(11)), Verdict::Drop);
}

#[test]
fn a_fin_ack_that_completes_the_handshake_also_half_closes() {
    let mut h = outbound_host();
    h.go("eth0", Out, &seg(ME, C, PEER, S, SYN), secs(0));
    h.go("eth0", In, &seg(PEER, S, ME, C, SYN | ACK), secs(0));
    h.go("eth0", Out, &seg(ME, C, PEER, S, FIN | ACK), secs(0));
    assert_eq!(h.tcp_state(), Some(TcpState::Established));
    h.go("eth0", In, &seg(PEER, S, ME, C, FIN | ACK), secs(1));
    assert_eq!(h.tcp_state(), Some(TcpState::Closing));
}

#[test]
fn rst_from_either_side_gives_10_s() {
    let mut h = outbound_host();
    h.handshake(C, secs(0));
    assert_eq!(h.r(In, &seg(PEER, S, ME, C, RST), secs(5)), Reason::Session);
    assert_eq!(h.tcp_state(), Some(TcpState::Closing));
    assert_eq!(
        h.r(In, &seg(PEER, S, ME, C, ACK), secs(14)),
        Reason::Session
    );
    assert_eq!(h.v(In, &seg(PEER, S, ME, C, ACK), secs(24)), Verdict::Drop);
    assert!(h.t.is_empty());

    // From the initiator, and during the handshake.
    let mut h = outbound_host();
    h.go("eth0", Out, &seg(ME, C, PEER, S, SYN), secs(0));
    h.go("eth0", Out, &seg(ME, C, PEER, S, RST | ACK), secs(5));
    assert_eq!(h.tcp_state(), Some(TcpState::Closing));
    assert_eq!(
        h.v(In, &seg(PEER, S, ME, C, SYN | ACK), secs(15)),
        Verdict::Drop
    );
}

#[test]
fn the_closing_timeout_is_configurable() {
    let mut h = outbound_host();
    h.s.set_settings(Settings {
        session_timeouts: SessionTimeouts {
            tcp_closing_secs: 100,
            tcp_handshake_secs: 5,
            ..SessionTimeouts::default()
        },
        ..Settings::default()
    })
    .unwrap();
    h.handshake(C, secs(0));
    h.go("eth0", In, &seg(PEER, S, ME, C, RST), secs(0));
    assert_eq!(
        h.r(In, &seg(PEER, S, ME, C, ACK), secs(99)),
        Reason::Session
    );
    // And the handshake timeout: 5 s.
    h.go("eth0", Out, &seg(ME, C + 1, PEER, S, SYN), secs(0));
    assert_eq!(
        h.v(In, &seg(PEER, S, ME, C + 1, SYN | ACK), secs(5)),
        Verdict::Drop
    );
}

// ---- what starts a session -------------------------------------------------------

#[test]
fn a_syn_after_close_starts_afresh_and_is_decided_by_the_rules() {
    let mut h = outbound_host();
    h.handshake(C, secs(0));
    h.go("eth0", In, &seg(PEER, S, ME, C, RST), secs(1));
    // The same ports again: not the old session (the rules decide), a new one.
    assert_eq!(
        h.r(Out, &seg(ME, C, PEER, S, SYN), secs(2)),
        Reason::DefaultEgressBasic
    );
    let fresh = h.only();
    assert_eq!(
        (fresh.tcp, fresh.created),
        (Some(TcpState::Handshake), secs(2))
    );
    assert_eq!(
        h.r(In, &seg(PEER, S, ME, C, SYN | ACK), secs(3)),
        Reason::Session
    );

    // After both FINs, a SYN from the other side is decided by the rules, which
    // drop it, and the closed session is gone.
    let mut h = outbound_host();
    h.handshake(C, secs(0));
    h.go("eth0", Out, &seg(ME, C, PEER, S, FIN | ACK), secs(1));
    h.go("eth0", In, &seg(PEER, S, ME, C, FIN | ACK), secs(1));
    let back = h.go("eth0", In, &seg(PEER, S, ME, C, SYN), secs(2));
    assert_eq!(back.verdict, Verdict::Drop);
    assert!(is_rule(&back.reason));
    assert!(h.t.is_empty());

    // A SYN on a session that is not closing is just a retransmission.
    let mut h = outbound_host();
    h.go("eth0", Out, &seg(ME, C, PEER, S, SYN), secs(0));
    assert_eq!(
        h.r(Out, &seg(ME, C, PEER, S, SYN), secs(1)),
        Reason::Session
    );
    assert_eq!((h.only().created, h.only().last_seen), (secs(0), secs(1)));
}

#[test]
fn tcp_other_than_a_bare_syn_never_starts_a_session() {
    let mut h = outbound_host();
    for flags in [ACK, SYN | ACK, FIN | ACK, RST, PSH | ACK, 0] {
        assert_eq!(
            h.r(Out, &seg(ME, C, PEER, S, flags), secs(0)),
            Reason::DefaultEgressBasic,
            "flags {flags:#x}"
        );
    }
    assert!(h.t.is_empty());
    assert_eq!(h.v(In, &seg(PEER, S, ME, C, ACK), secs(0)), Verdict::Drop);
    // A SYN with other flags but not ACK does.
    h.go("eth0", Out, &seg(ME, C, PEER, S, SYN | PSH), secs(0));
    assert_eq!(h.t.len(), 1);
}

#[test]
fn dropped_packets_start_nothing() {
    let mut h = outbound_host();
    assert_eq!(h.v(In, &udp(PEER, 53, ME, C), secs(0)), Verdict::Drop);
    assert!(h.t.is_empty());
    // Not even when the other direction would then pass as a reply.
    assert_eq!(
        h.r(Out, &udp(ME, C, PEER, 53), secs(0)),
        Reason::DefaultEgressBasic
    );
    assert_eq!(h.only().initiator.addr, ip(ME));
}

#[test]
fn echo_requests_and_replies_match_by_identifier() {
    let mut h = outbound_host();
    assert_eq!(
        h.r(Out, &Packet::echo_request(ip(ME), ip(PEER), 7), secs(0)),
        Reason::DefaultEgressBasic
    );
    let e = h.only();
    assert_eq!(
        (e.protocol, e.initiator.port, e.responder.port, e.tcp),
        (1, 7, 7, None)
    );
    assert_eq!(
        h.v(In, &Packet::echo_reply(ip(PEER), ip(ME), 8), secs(1)),
        Verdict::Drop
    );
    assert_eq!(
        h.v(In, &Packet::echo_reply(ip(OTHER), ip(ME), 7), secs(1)),
        Verdict::Drop
    );
    assert_eq!(
        h.r(In, &Packet::echo_reply(ip(PEER), ip(ME), 7), secs(1)),
        Reason::Session
    );
    // An echo reply starts nothing, nor does another ICMP type (timestamp).
    h.go(
        "eth0",
        Out,
        &Packet::echo_reply(ip(ME), ip(PEER), 9),
        secs(1),
    );
    h.go("eth0", Out, &Packet::icmp(ip(ME), ip(PEER), 13, 0), secs(1));
    assert_eq!(h.t.len(), 1);
    assert_eq!(
        h.v(In, &Packet::echo_request(ip(PEER), ip(ME), 9), secs(1)),
        Verdict::Drop
    );
    assert_eq!(
        h.v(In, &Packet::icmp(ip(PEER), ip(ME), 14, 0), secs(1)),
        Verdict::Drop
    );
    // Echo sessions time out as "other": 910 s.
    assert_eq!(
        h.v(In, &Packet::echo_reply(ip(PEER), ip(ME), 7), secs(911)),
        Verdict::Drop
    );

    // ICMPv6.
    h.go(
        "eth0",
        Out,
        &Packet::echo_request(ip(ME6), ip(PEER6), 7),
        secs(0),
    );
    assert_eq!(h.only().protocol, 58);
    assert_eq!(
        h.r(In, &Packet::echo_reply(ip(PEER6), ip(ME6), 7), secs(1)),
        Reason::Session
    );
    assert_eq!(
        h.v(In, &Packet::echo_reply(ip(PEER6), ip(ME6), 8), secs(1)),
        Verdict::Drop
    );
}

#[test]
fn a_first_fragment_starts_a_session_and_later_fragments_touch_none() {
    let mut h = outbound_host();
    h.go(
        "eth0",
        Out,
        &udp(ME, C, PEER, 53).with_fragment(Fragment::First { id: 5 }),
        secs(0),
    );
    assert_eq!(h.t.len(), 1);
    assert_eq!(h.t.fragments(), 1);
    // The other way is another datagram: no first seen.
    let later = Packet::other(ip(PEER), ip(ME), 17).with_fragment(Fragment::Later { id: 5 });
    assert_eq!(h.r(In, &later, secs(5)), Reason::LaterFragment);
    assert_eq!(h.only().last_seen, secs(0));
    assert_eq!(h.r(In, &udp(PEER, 53, ME, C), secs(6)), Reason::Session);
}

#[test]
fn echo_request_from_the_responder_is_a_new_flow() {
    let mut h = outbound_host();
    assert_eq!(
        h.r(Out, &Packet::echo_request(ip(ME), ip(PEER), 77), secs(0)),
        Reason::DefaultEgressBasic
    );
    let session = h.only();
    // The responder's echo request with the initiator's identifier is no
    // part of the initiator's session: the rules decide it (ingress drops).
    assert!(is_rule(&h.r(
        In,
        &Packet::echo_request(ip(PEER), ip(ME), 77),
        secs(1)
    )));
    // It neither refreshed nor removed that session.
    assert_eq!(h.only(), session);
    assert_eq!(
        h.r(In, &Packet::echo_reply(ip(PEER), ip(ME), 77), secs(2)),
        Reason::Session
    );
    // Nor is the initiator's echo reply part of it: egress rules decide it.
    assert_eq!(
        h.r(Out, &Packet::echo_reply(ip(ME), ip(PEER), 77), secs(3)),
        Reason::DefaultEgressBasic
    );
    // Accepted by the rules, the responder's request starts a session of its
    // own beside the first, each admitting its own replies.
    let g = h.s.groups.keys().next().unwrap().clone();
    h.s.authorize(&g, rule("ingress", "Accept", "1", "ICMP", "-1/-1", PEER))
        .unwrap();
    assert!(is_rule(&h.r(
        In,
        &Packet::echo_request(ip(PEER), ip(ME), 77),
        secs(4)
    )));
    assert_eq!(h.t.len(), 2);
    assert_eq!(
        h.r(Out, &Packet::echo_reply(ip(ME), ip(PEER), 77), secs(5)),
        Reason::Session
    );
    assert_eq!(
        h.r(In, &Packet::echo_reply(ip(PEER), ip(ME), 77), secs(5)),
        Reason::Session
    );
}

#[test]
fn an_icmp_error_relates_to_the_echo_session_of_the_echo_it_quotes() {
    let mut h = outbound_host();
    h.go(
        "eth0",
        Out,
        &Packet::echo_request(ip(ME), ip(PEER), 77),
        secs(0),
    );
    let quoted = |src: &str, dst: &str, icmp_type: u8| Quoted {
        src: ip(src),
        dst: ip(dst),
        protocol: 1,
        src_port: 0,
        dst_port: 0,
        icmp_type,
        icmp_id: 77,
    };
    // About the initiator's request, back to the initiator: related.
    let e = Packet::icmp_error(ip(OTHER), ip(ME), 11, 0, quoted(ME, PEER, 8));
    assert_eq!(h.r(In, &e, secs(1)), Reason::Related);
    // About the initiator's echo reply (to a request of the responder's
    // with the same identifier), back to the initiator: that is the
    // responder's flow, which has no session, so nothing relates.
    let e = Packet::icmp_error(ip(OTHER), ip(ME), 11, 0, quoted(ME, PEER, 0));
    assert_eq!(h.v(In, &e, secs(1)), Verdict::Drop);
}

// ---- later fragments: their first, decided again -------------------------------

/// `eth0` (ME) whose ingress accepts DNS from anywhere (IPv4) by one rule;
/// the host and the rule's group and id.
fn dns_server() -> (Host, GroupId, RuleId) {
    let mut s = state();
    let g = enterprise_accepting(&mut s, "dns", "UDP", "53/53");
    let r = s.describe_group(&g).unwrap().rules[0].id.clone();
    bind(&mut s, "eth0", &[ME], &[&g]);
    (Host::new(s), g, r)
}

fn accepted(reason: Reason) -> Decision {
    Decision {
        verdict: Verdict::Accept,
        reason,
    }
}

fn dropped(reason: Reason) -> Decision {
    Decision {
        verdict: Verdict::Drop,
        reason,
    }
}

fn first(p: Packet, id: u32) -> Packet {
    p.with_fragment(Fragment::First { id })
}

fn later(src: &str, dst: &str, id: u32) -> Packet {
    Packet::other(ip(src), ip(dst), 17).with_fragment(Fragment::Later { id })
}

#[test]
fn a_later_fragment_drops_once_its_first_fragments_rule_is_revoked() {
    let (mut h, g, r) = dns_server();
    assert!(is_rule(&h.r(In, &first(udp(PEER, C, ME, 53), 9), secs(0))));
    assert_eq!(
        h.go("eth0", In, &later(PEER, ME, 9), secs(1)),
        accepted(Reason::FragmentFollowsFirst)
    );
    h.s.revoke(&g, &r).unwrap();
    assert_eq!(
        h.go("eth0", In, &later(PEER, ME, 9), secs(2)),
        dropped(Reason::FragmentFollowsFirst)
    );
    // A first that was dropped is never followed, whatever the policy says now.
    assert_eq!(
        h.v(In, &first(udp(PEER, C, ME, 53), 10), secs(3)),
        Verdict::Drop
    );
    h.s.authorize(
        &g,
        rule("ingress", "Accept", "1", "UDP", "53/53", "0.0.0.0/0"),
    )
    .unwrap();
    assert_eq!(
        h.go("eth0", In, &later(PEER, ME, 10), secs(4)),
        dropped(Reason::FragmentFollowsFirst)
    );
}

#[test]
fn later_fragments_drop_after_the_fragment_timeout() {
    let (mut h, _, _) = dns_server();
    assert_eq!(h.s.settings.fragment_timeout_secs, 30);
    h.go("eth0", In, &first(udp(PEER, C, ME, 53), 9), secs(0));
    assert_eq!(
        h.r(In, &later(PEER, ME, 9), ms(29_999)),
        Reason::FragmentFollowsFirst
    );
    assert_eq!(
        h.go("eth0", In, &later(PEER, ME, 9), secs(30)),
        dropped(Reason::FragmentExpired)
    );
    // Forgotten once found expired.
    assert_eq!(h.t.fragments(), 0);
    assert_eq!(
        h.r(In, &later(PEER, ME, 9), secs(31)),
        Reason::LaterFragment
    );
    // Configurable.
    let mut settings = h.s.settings.clone();
    settings.fragment_timeout_secs = 2;
    h.s.set_settings(settings).unwrap();
    h.go("eth0", In, &first(udp(PEER, C, ME, 53), 11), secs(40));
    assert_eq!(
        h.r(In, &later(PEER, ME, 11), secs(41)),
        Reason::FragmentFollowsFirst
    );
    assert_eq!(
        h.r(In, &later(PEER, ME, 11), secs(42)),
        Reason::FragmentExpired
    );
}

#[test]
fn a_fragmented_reply_of_a_live_session_passes_across_an_unrelated_policy_change() {
    let mut h = outbound_host();
    h.go("eth0", Out, &udp(ME, C, PEER, 53), secs(0));
    assert_eq!(
        h.r(In, &first(udp(PEER, 53, ME, C), 3), secs(1)),
        Reason::Session
    );
    let g = h.s.groups.keys().next().unwrap().clone();
    h.s.authorize(
        &g,
        rule("ingress", "Accept", "1", "TCP", "8080/8080", "192.0.2.0/24"),
    )
    .unwrap();
    assert_eq!(
        h.go("eth0", In, &later(PEER, ME, 3), secs(2)),
        accepted(Reason::FragmentFollowsFirst)
    );
}

#[test]
fn deciding_a_first_fragment_again_changes_no_session() {
    let mut h = outbound_host();
    h.go("eth0", Out, &udp(ME, C, PEER, 53), secs(0));
    h.go("eth0", In, &first(udp(PEER, 53, ME, C), 3), secs(1));
    let before = h.only();
    assert_eq!(
        h.r(In, &later(PEER, ME, 3), secs(5)),
        Reason::FragmentFollowsFirst
    );
    // Not refreshed by the later fragment.
    assert_eq!(h.only(), before);
    // The session no longer allowed: its fragments drop, and the entry stays
    // until a packet of the session itself finds it revoked.
    let g = h.s.groups.keys().next().unwrap().clone();
    h.s.authorize(&g, rule("egress", "Drop", "1", "UDP", "53/53", "0.0.0.0/0"))
        .unwrap();
    assert_eq!(h.v(In, &later(PEER, ME, 3), secs(6)), Verdict::Drop);
    assert_eq!(h.only(), before);
    assert_eq!(h.v(In, &udp(PEER, 53, ME, C), secs(7)), Verdict::Drop);
    assert!(h.t.is_empty());
    // Nor does an accepted first decided again start one.
    let (mut d, _, _) = dns_server();
    d.go("eth0", In, &first(udp(PEER, C, ME, 53), 4), secs(0));
    d.t.flush();
    assert_eq!(
        d.r(In, &later(PEER, ME, 4), secs(1)),
        Reason::FragmentFollowsFirst
    );
    assert!(d.t.is_empty());
}

#[test]
fn an_ipv6_later_fragment_between_mapped_addresses_does_not_follow_an_ipv4_first() {
    let (mut h, _, _) = dns_server();
    h.go("eth0", In, &first(udp(PEER, C, ME, 53), 9), secs(0));
    let mapped = |a: &str| format!("::ffff:{a}");
    assert_eq!(
        h.r(In, &later(&mapped(PEER), &mapped(ME), 9), secs(1)),
        Reason::LaterFragment
    );
    assert_eq!(
        h.r(In, &later(PEER, ME, 9), secs(1)),
        Reason::FragmentFollowsFirst
    );
}

// ---- related ICMP errors ---------------------------------------------------------

fn quote_udp(src: &str, sport: u16, dst: &str, dport: u16) -> Quoted {
    Quoted {
        src: ip(src),
        dst: ip(dst),
        protocol: 17,
        src_port: sport,
        dst_port: dport,
        icmp_type: 0,
        icmp_id: 0,
    }
}

fn unreachable(src: &str, dst: &str, q: Quoted) -> Packet {
    let t = if ip(src).is_ipv4() { 3 } else { 1 };
    Packet::icmp_error(ip(src), ip(dst), t, 3, q)
}

#[test]
fn a_port_unreachable_passes_towards_the_initiator() {
    let mut h = outbound_host();
    let q = quote_udp(ME, C, PEER, 53);
    let error = unreachable(PEER, ME, q);
    // Without a session the rules drop it.
    assert_eq!(
        evaluate(&h.s, "eth0", In, &error).unwrap().verdict,
        Verdict::Drop
    );
    h.go("eth0", Out, &udp(ME, C, PEER, 53), secs(0));
    assert_eq!(
        h.go("eth0", In, &error, secs(5)),
        Decision {
            verdict: Verdict::Accept,
            reason: Reason::Related
        }
    );
    // A related error neither refreshes the session nor needs to come from its peer.
    assert_eq!(h.only().last_seen, secs(0));
    let time_exceeded = Packet::icmp_error(ip(OTHER), ip(ME), 11, 0, q);
    assert_eq!(h.r(In, &time_exceeded, secs(6)), Reason::Related);
    let parameter_problem = Packet::icmp_error(ip(OTHER), ip(ME), 12, 0, q);
    assert_eq!(h.r(In, &parameter_problem, secs(6)), Reason::Related);
    // Only error types relate: a redirect quoting the same header does not.
    let redirect = Packet::icmp_error(ip(OTHER), ip(ME), 5, 0, q);
    assert_eq!(h.v(In, &redirect, secs(6)), Verdict::Drop);
    // Nor does an error carrying no quoted header.
    assert_eq!(
        h.v(In, &Packet::icmp(ip(PEER), ip(ME), 3, 3), secs(6)),
        Verdict::Drop
    );
    // Past the session's timeout the error is not related and the entry goes.
    assert_eq!(h.v(In, &error, secs(910)), Verdict::Drop);
    assert!(h.t.is_empty());
}

#[test]
fn an_error_relates_only_when_sent_back_to_the_quoted_source_of_a_known_session() {
    let mut h = outbound_host();
    h.go("eth0", Out, &udp(ME, C, PEER, 53), secs(0));
    // Quoting the session's reply direction: packet.dst (ME) != quoted src (PEER).
    let backwards = unreachable(PEER, ME, quote_udp(PEER, 53, ME, C));
    assert_eq!(h.v(In, &backwards, secs(1)), Verdict::Drop);
    // An unknown session: another port, another protocol.
    let other_port = unreachable(PEER, ME, quote_udp(ME, C, PEER, 54));
    assert_eq!(h.v(In, &other_port, secs(1)), Verdict::Drop);
    let other_proto = unreachable(
        PEER,
        ME,
        Quoted {
            protocol: 6,
            ..quote_udp(ME, C, PEER, 53)
        },
    );
    assert_eq!(h.v(In, &other_proto, secs(1)), Verdict::Drop);
    // A quoted header of the other family never relates.
    h.go("eth0", Out, &udp(ME6, C, PEER6, 53), secs(0));
    let mixed = unreachable(PEER, ME, quote_udp(ME6, C, PEER6, 53));
    assert_eq!(h.v(In, &mixed, secs(1)), Verdict::Drop);
    assert_eq!(h.t.len(), 2);
}

#[test]
fn icmpv6_errors_relate_tcp_and_echo_sessions_too() {
    let mut h = outbound_host();
    h.go("eth0", Out, &udp(ME6, C, PEER6, 53), secs(0));
    let q6 = quote_udp(ME6, C, PEER6, 53);
    for t in [1, 3, 4] {
        let e = Packet::icmp_error(ip(PEER6), ip(ME6), t, 0, q6);
        assert_eq!(h.r(In, &e, secs(1)), Reason::Related, "ICMPv6 type {t}");
    }
    // Packet too big passes earlier, at step 2, whatever it quotes.
    let ptb = Packet::icmp_error(ip(PEER6), ip(ME6), 2, 0, q6);
    assert!(matches!(h.r(In, &ptb, secs(1)), Reason::AlwaysAllowed(_)));

    // TCP.
    h.go("eth0", Out, &seg(ME, C, PEER, S, SYN), secs(0));
    let q = Quoted {
        protocol: 6,
        ..quote_udp(ME, C, PEER, S)
    };
    let host_unreachable = Packet::icmp_error(ip(PEER), ip(ME), 3, 1, q);
    assert_eq!(h.r(In, &host_unreachable, secs(1)), Reason::Related);

    // An echo request, by its identifier.
    h.go(
        "eth0",
        Out,
        &Packet::echo_request(ip(ME), ip(PEER), 9),
        secs(0),
    );
    let quoted_echo = |id| Quoted {
        src: ip(ME),
        dst: ip(PEER),
        protocol: 1,
        src_port: 0,
        dst_port: 0,
        icmp_type: 8,
        icmp_id: id,
    };
    let te = |id| Packet::icmp_error(ip(OTHER), ip(ME), 11, 0, quoted_echo(id));
    assert_eq!(h.r(In, &te(9), secs(1)), Reason::Related);
    assert_eq!(h.v(In, &te(10), secs(1)), Verdict::Drop);
}

#[test]
fn the_responder_side_sends_related_errors_out_and_revocation_stops_them() {
    // An enterprise NIC: egress drops everything that is not a session's.
    let mut s = state();
    let g = enterprise_accepting(&mut s, "dns", "UDP", "53/53");
    let r = s.describe_group(&g).unwrap().rules[0].id.clone();
    bind(&mut s, "eth0", &[ME], &[&g]);
    let mut h = Host::new(s);
    assert!(is_rule(&h.r(In, &udp(PEER, C, ME, 53), secs(0))));
    assert_eq!(h.r(Out, &udp(ME, 53, PEER, C), secs(0)), Reason::Session);
    let error = unreachable(ME, PEER, quote_udp(PEER, C, ME, 53));
    assert_eq!(h.r(Out, &error, secs(1)), Reason::Related);
    h.s.revoke(&g, &r).unwrap();
    assert_eq!(
        h.go("eth0", Out, &error, secs(2)),
        Decision {
            verdict: Verdict::Drop,
            reason: Reason::DefaultEgressEnterprise
        }
    );
    assert!(h.t.is_empty());
}

// ---- policy changes ----------------------------------------------------------------

#[test]
fn revocation_removes_the_session_and_the_rules_decide() {
    let (mut h, g, r) = ssh_server();
    ssh_handshake(&mut h, secs(0));
    let spec = h.s.revoke(&g, &r).unwrap().spec;
    assert_eq!(
        h.go("eth0", In, &seg(PEER, C, ME, 22, ACK), secs(1)),
        Decision {
            verdict: Verdict::Drop,
            reason: Reason::DefaultIngressDrop
        }
    );
    assert!(h.t.is_empty());
    assert_eq!(
        h.r(Out, &seg(ME, 22, PEER, C, ACK), secs(1)),
        Reason::DefaultEgressEnterprise
    );
    // Allowed again, the connection is not revived from one side: the peer's
    // ACK passes by the rule but starts nothing, so the reply still drops.
    h.s.authorize(&g, spec).unwrap();
    assert!(is_rule(&h.r(In, &seg(PEER, C, ME, 22, ACK), secs(2))));
    assert!(h.t.is_empty());
    assert_eq!(h.v(Out, &seg(ME, 22, PEER, C, ACK), secs(2)), Verdict::Drop);
    // A new SYN does start a new session.
    ssh_handshake(&mut h, secs(3));
}

#[test]
fn revocation_is_seen_from_either_side() {
    let (mut h, g, r) = ssh_server();
    ssh_handshake(&mut h, secs(0));
    h.s.revoke(&g, &r).unwrap();
    // The responder's packet finds the session, re-checks its first packet
    // (ingress SYN to 22), and removes it.
    assert_eq!(
        h.r(Out, &seg(ME, 22, PEER, C, ACK), secs(1)),
        Reason::DefaultEgressEnterprise
    );
    assert!(h.t.is_empty());
}

#[test]
fn still_allowed_means_the_first_packet_in_its_own_direction() {
    let (mut h, g, _) = ssh_server();
    ssh_handshake(&mut h, secs(0));
    // An egress rule dropping the server's replies does not cut the session: the
    // session's first packet was an ingress SYN, and that is still accepted.
    h.s.authorize(
        &g,
        rule("egress", "Drop", "1", "TCP", "1/65535", "0.0.0.0/0"),
    )
    .unwrap();
    assert_eq!(
        h.r(Out, &seg(ME, 22, PEER, C, ACK), secs(1)),
        Reason::Session
    );
    assert_eq!(h.t.len(), 1);
}

#[test]
fn a_policy_change_that_still_allows_keeps_the_session() {
    let (mut h, g, r) = ssh_server();
    ssh_handshake(&mut h, secs(0));
    h.s.modify_rule(
        &g,
        &r,
        rule("ingress", "Accept", "5", "TCP", "20/30", "203.0.113.0/24"),
    )
    .unwrap();
    h.s.authorize(
        &g,
        rule("ingress", "Drop", "1", "TCP", "23/23", "0.0.0.0/0"),
    )
    .unwrap();
    assert_eq!(
        h.r(In, &seg(PEER, C, ME, 22, ACK), secs(1)),
        Reason::Session
    );
    assert_eq!(h.only().created, secs(0));
    // A drop of higher priority that matches the first packet cuts it.
    h.s.authorize(
        &g,
        rule("ingress", "Drop", "1", "TCP", "22/22", "203.0.113.5/32"),
    )
    .unwrap();
    assert!(is_rule(&h.r(In, &seg(PEER, C, ME, 22, ACK), secs(2))));
    assert!(h.t.is_empty());
}

#[test]
fn joining_the_new_group_before_leaving_the_old_keeps_the_session() {
    let (mut h, old, _) = ssh_server();
    let new = enterprise_accepting(&mut h.s, "ssh-new", "TCP", "22/22");
    ssh_handshake(&mut h, secs(0));
    h.s.join("eth0", &new).unwrap();
    h.s.leave("eth0", &old).unwrap();
    assert_eq!(
        h.r(In, &seg(PEER, C, ME, 22, ACK), secs(1)),
        Reason::Session
    );
    assert_eq!(h.t.len(), 1);

    // Leaving first (for a group that does not allow it) cuts the session.
    let (mut h, old, _) = ssh_server();
    let empty = h.s.create_group(GroupSpec::enterprise("empty")).unwrap();
    ssh_handshake(&mut h, secs(0));
    h.s.join("eth0", &empty).unwrap();
    h.s.leave("eth0", &old).unwrap();
    assert_eq!(h.v(In, &seg(PEER, C, ME, 22, ACK), secs(1)), Verdict::Drop);
    assert!(h.t.is_empty());
}

#[test]
fn an_address_the_nic_no_longer_owns_cuts_its_sessions() {
    // A port-mode NIC: anti-spoofing decides the rebuilt first packet too.
    let mut s = state();
    let g = basic(&mut s, "g");
    s.bind_nic(NicBinding::new(
        "eth0",
        BindingMode::Port,
        vec![ip(ME)],
        vec![g.clone()],
    ))
    .unwrap();
    let mut h = Host::new(s);
    h.go("eth0", Out, &udp(ME, C, PEER, 53), secs(0));
    assert_eq!(h.r(In, &udp(PEER, 53, ME, C), secs(1)), Reason::Session);
    h.s.set_nic_addresses("eth0", vec![ip(ME2)], vec![])
        .unwrap();
    assert_eq!(
        h.r(In, &udp(PEER, 53, ME, C), secs(2)),
        Reason::DefaultIngressDrop
    );
    assert!(h.t.is_empty());
}

// ---- scope -------------------------------------------------------------------------

#[test]
fn sessions_are_per_nic() {
    let mut s = state();
    let g = basic(&mut s, "g");
    s.authorize(
        &g,
        rule("ingress", "Drop", "100", "ALL", "-1/-1", "0.0.0.0/0"),
    )
    .unwrap();
    bind(&mut s, "eth0", &[ME], &[&g]);
    bind(&mut s, "eth1", &[ME2], &[&g]);
    let mut h = Host::new(s);
    h.go("eth0", Out, &udp(ME, C, PEER, 53), secs(0));
    // The very same reply crossing eth1 finds no session there.
    assert_eq!(
        h.go("eth1", In, &udp(PEER, 53, ME, C), secs(1)).verdict,
        Verdict::Drop
    );
    let error = unreachable(PEER, ME, quote_udp(ME, C, PEER, 53));
    assert_eq!(h.go("eth1", In, &error, secs(1)).verdict, Verdict::Drop);
    assert_eq!(
        h.go("eth0", In, &udp(PEER, 53, ME, C), secs(1)).reason,
        Reason::Session
    );
    assert_eq!(h.only().nic, "eth0");

    h.go("eth1", Out, &udp(ME2, C, PEER, 53), secs(2));
    assert_eq!(h.t.len(), 2);
    h.t.flush_nic("eth1");
    assert_eq!(h.only().nic, "eth0");
    h.go("eth1", Out, &udp(ME2, C, PEER, 53), secs(2));
    h.t.flush();
    assert!(h.t.is_empty());
    assert_eq!(
        h.go("eth0", In, &udp(PEER, 53, ME, C), secs(3)).verdict,
        Verdict::Drop
    );
}

#[test]
fn steps_0_to_3_decide_before_sessions_and_leave_them_alone() {
    let mut s = state();
    let g = basic(&mut s, "g");
    s.authorize(
        &g,
        rule("ingress", "Accept", "1", "TCP", "22/22", "0.0.0.0/0"),
    )
    .unwrap();
    s.bind_nic(NicBinding::new(
        "eth0",
        BindingMode::Port,
        vec![ip(ME)],
        vec![g.clone()],
    ))
    .unwrap();
    let mut h = Host::new(s);
    h.go("eth0", In, &seg(PEER, 25, ME, 22, SYN), secs(0));
    assert_eq!(h.t.len(), 1);
    // Step 3: the reply goes to port 25, which egress never reaches.
    assert_eq!(
        h.r(Out, &seg(ME, 22, PEER, 25, SYN | ACK), secs(1)),
        Reason::PlatformPort25
    );
    // Step 0: a forged packet with the session's addresses and ports.
    assert!(matches!(
        h.r(Out, &seg(PEER, 25, ME, 22, ACK), secs(1)),
        Reason::AntiSpoof(_)
    ));
    // Step 2: fragmentation needed quoting the session passes as path MTU.
    let frag_needed = Packet::icmp_error(
        ip(PEER),
        ip(ME),
        3,
        4,
        Quoted {
            protocol: 6,
            ..quote_udp(ME, 22, PEER, 25)
        },
    );
    assert!(matches!(
        h.r(In, &frag_needed, secs(1)),
        Reason::AlwaysAllowed(_)
    ));
    assert_eq!(h.only().last_seen, secs(0));
    assert_eq!(h.tcp_state(), Some(TcpState::Handshake));
}

#[test]
fn frames_other_than_ip_have_no_session_effects() {
    let mut h = outbound_host();
    let p = udp(ME, C, PEER, 53);
    let d =
        h.t.decide_frame(&h.s, "eth0", Out, &Frame::Ip(p), secs(0))
            .unwrap();
    assert_eq!(d.reason, Reason::DefaultEgressBasic);
    assert_eq!(h.t.len(), 1);
    let before = h.t.entries();
    let arp = Frame::Arp {
        sender: "10.0.0.10".parse().unwrap(),
    };
    for f in [arp, Frame::Other { ethertype: 0x88cc }, Frame::Malformed] {
        let d = h.t.decide_frame(&h.s, "eth0", In, &f, secs(1)).unwrap();
        assert_ne!(d.reason, Reason::Session);
    }
    assert_eq!(h.t.entries(), before);
    let reply = Frame::Ip(udp(PEER, 53, ME, C));
    assert_eq!(
        h.t.decide_frame(&h.s, "eth0", In, &reply, secs(1))
            .unwrap()
            .reason,
        Reason::Session
    );
}

#[test]
fn an_unknown_nic_is_an_error_and_changes_nothing() {
    let mut h = outbound_host();
    let e =
        h.t.decide(&h.s, "eth9", Out, &udp(ME, C, PEER, 53), secs(0))
            .unwrap_err();
    assert!(matches!(e, PolicyError::NotFound { .. }), "{e}");
    assert!(h.t.is_empty());
}

#[test]
fn removing_expired_entries_changes_no_decision() {
    let mut h = outbound_host();
    h.go("eth0", Out, &udp(ME, C, PEER, 53), secs(0));
    h.go("eth0", Out, &seg(ME, C, PEER, S, SYN), secs(0));
    let timeouts = h.s.settings.session_timeouts;
    assert_eq!(h.t.remove_expired(&timeouts, secs(59)), 0);
    // The TCP handshake (60 s) expires, UDP (910 s) does not.
    assert_eq!(h.t.remove_expired(&timeouts, secs(60)), 1);
    assert_eq!(h.only().protocol, 17);
    assert_eq!(h.r(In, &udp(PEER, 53, ME, C), secs(61)), Reason::Session);
}

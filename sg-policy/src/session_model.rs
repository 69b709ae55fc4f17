//! The reference session model: SPEC §3 step 4 and §4, one packet at a time.
//!
//! [`Sessions`] is the table the kernel keeps, written for clarity: unbounded (no
//! LRU; an evicted session in the kernel is a packet decided by the rules again,
//! which the model gets by [`Sessions::flush`] or [`Sessions::flush_nic`]), and
//! lazy (an expired or no longer allowed entry is removed when a packet finds it).
//! Time is whatever the caller says it is: `now` is a [`Duration`] since any epoch.
//!
//! A packet goes through [`evaluate_before_sessions`] (steps 0–3; no session
//! effects when they decide), then step 4: a related ICMP error, or a packet of a
//! live session that the current policy still allows; otherwise
//! [`evaluate_rules`] (steps 5–6), and a new session when [`starts_session`].
//!
//! "Still allowed" (SPEC §4) means: the session's first packet, rebuilt from the
//! entry (a TCP SYN, a UDP datagram, an echo request or a bare packet of the
//! protocol, from the initiator in the direction it was first seen), decided
//! again by [`evaluate`], is accepted. The model re-checks on every packet; the
//! kernel only after a policy change, which gives the same answers.
//!
//! An echo session is directed (SPEC §4): it admits echo requests from its
//! initiator and echo replies from its responder. Its key says which endpoint
//! is which, so an echo request from the responder with the same identifier
//! is another flow, with a key (and, if the rules accept it, a session) of its
//! own, and never touches the first.
//!
//! Fragments (SPEC §3 step 8) are remembered here too, as the kernel's fragment
//! table does: a first fragment is decided like any packet and remembered with
//! its verdict and the time it was seen; a later fragment of its datagram (same
//! NIC, direction, addresses, protocol and identification) passes only if the
//! first was accepted, was seen less than `settings.fragment_timeout_secs` ago
//! (an expired entry is forgotten), and, decided again now by every step
//! (sessions included), is still accepted. Deciding again only looks: it
//! creates, refreshes, advances and removes no session.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use super::{
    error::PolicyError,
    evaluate::{
        Decision, Fragment, Frame, Packet, Quoted, Reason, Verdict, evaluate,
        evaluate_before_sessions, evaluate_rules, frame_before_ip, starts_session, tcp_flags,
    },
    model::{Direction, SessionTimeouts, State, proto},
};

/// One end of a session: an address and a port (TCP, UDP), the echo identifier
/// (ICMP echo) or 0 (every other protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: u16,
}

/// Where a TCP session stands, which picks its idle timeout (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// Until the initiator's ACK after the responder's SYN-ACK.
    Handshake,
    /// Handshake done; one FIN alone keeps this state (half-closed is legal).
    Established,
    /// Either side sent RST, or both sides sent FIN.
    Closing,
}

/// One session as [`Sessions::entries`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionView {
    pub nic: String,
    pub protocol: u8,
    /// The source of the packet that started the session.
    pub initiator: Endpoint,
    /// Its destination.
    pub responder: Endpoint,
    /// The direction the starting packet crossed the NIC in.
    pub first_direction: Direction,
    /// `None` for every protocol but TCP.
    pub tcp: Option<TcpState>,
    pub created: Duration,
    pub last_seen: Duration,
}

/// A session's key: the NIC, the protocol and the unordered pair of endpoints,
/// stored in order (`low <= high`) so both directions find the same entry;
/// for ICMP echo the ordered pair (`low` the initiator, `high` the responder),
/// since an echo session is directed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    nic: String,
    protocol: u8,
    low: Endpoint,
    high: Endpoint,
}

/// A datagram in the fragment table: the NIC and direction it was seen in, its
/// addresses (of its own family: an IPv6 datagram between IPv4-mapped
/// addresses is not the IPv4 one), protocol and identification.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct FragKey {
    nic: String,
    direction: Direction,
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    id: u32,
}

impl FragKey {
    fn of(nic: &str, direction: Direction, p: &Packet, id: u32) -> Self {
        Self {
            nic: nic.to_owned(),
            direction,
            src: p.src,
            dst: p.dst,
            protocol: p.protocol,
            id,
        }
    }
}

/// What is remembered of a first fragment: the frame as it crossed (its tags
/// included), whether it was accepted, and when.
#[derive(Debug, Clone)]
struct FirstFragment {
    frame: Frame,
    accepted: bool,
    seen: Duration,
}

/// What step 4 found for a packet, before anything is changed.
enum Step {
    /// An ICMP error related to a live, allowed session.
    Related,
    /// A packet of this live, allowed session.
    Session(Key),
    /// Neither; these entries were found expired, no longer allowed, or a
    /// closed TCP connection's port reused (a live decision removes them).
    Miss(Vec<Key>),
}

/// What has been seen of a TCP session's flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "five independent facts, each set once and never cleared; named fields read as SPEC §4 does"
)]
struct TcpSeen {
    synack: bool,
    established: bool,
    rst: bool,
    fin_initiator: bool,
    fin_responder: bool,
}

impl TcpSeen {
    fn closing(self) -> bool {
        self.rst || (self.fin_initiator && self.fin_responder)
    }

    fn state(self) -> TcpState {
        if self.closing() {
            TcpState::Closing
        } else if self.established {
            TcpState::Established
        } else {
            TcpState::Handshake
        }
    }

    /// Applies one packet's flags; every rule that applies does (a FIN|ACK can
    /// both complete the handshake and half-close).
    fn update(&mut self, flags: u8, from_initiator: bool) {
        let synack_before = self.synack;
        if flags & tcp_flags::RST != 0 {
            self.rst = true;
        }
        if flags & tcp_flags::FIN != 0 {
            if from_initiator {
                self.fin_initiator = true;
            } else {
                self.fin_responder = true;
            }
        }
        let syn_ack = flags & (tcp_flags::SYN | tcp_flags::ACK);
        if syn_ack == tcp_flags::SYN | tcp_flags::ACK && !from_initiator {
            self.synack = true;
        }
        if syn_ack == tcp_flags::ACK && from_initiator && synack_before {
            self.established = true;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    initiator: Endpoint,
    responder: Endpoint,
    first_direction: Direction,
    created: Duration,
    last_seen: Duration,
    tcp: TcpSeen,
}

impl Entry {
    fn idle_timeout(&self, protocol: u8, t: &SessionTimeouts) -> Duration {
        let secs = if protocol == proto::TCP {
            match self.tcp.state() {
                TcpState::Handshake => t.tcp_handshake_secs,
                TcpState::Established => t.tcp_established_secs,
                TcpState::Closing => t.tcp_closing_secs,
            }
        } else {
            t.other_secs
        };
        Duration::from_secs(u64::from(secs))
    }

    /// Alive while the idle time is below the timeout (SPEC §4).
    fn live(&self, protocol: u8, t: &SessionTimeouts, now: Duration) -> bool {
        now.saturating_sub(self.last_seen) < self.idle_timeout(protocol, t)
    }

    /// The session's first packet, rebuilt: what "still allowed" re-decides.
    fn first_packet(&self, protocol: u8) -> Packet {
        let (i, r) = (self.initiator, self.responder);
        match protocol {
            proto::TCP => Packet::tcp(i.addr, i.port, r.addr, r.port),
            proto::UDP => Packet::udp(i.addr, i.port, r.addr, r.port),
            _ if is_icmp_of_family(protocol, i.addr) => {
                Packet::echo_request(i.addr, r.addr, i.port)
            }
            _ => Packet::other(i.addr, r.addr, protocol),
        }
    }

    /// Whether the current policy still accepts the session's first packet.
    fn allowed(&self, state: &State, key: &Key) -> Result<bool, PolicyError> {
        let first = self.first_packet(key.protocol);
        Ok(evaluate(state, &key.nic, self.first_direction, &first)?.verdict == Verdict::Accept)
    }

    fn view(&self, key: &Key) -> SessionView {
        SessionView {
            nic: key.nic.clone(),
            protocol: key.protocol,
            initiator: self.initiator,
            responder: self.responder,
            first_direction: self.first_direction,
            tcp: (key.protocol == proto::TCP).then(|| self.tcp.state()),
            created: self.created,
            last_seen: self.last_seen,
        }
    }
}

/// ICMP over IPv4 or `ICMPv6` over IPv6 (the other pairings are "other"
/// protocols, as for the rules).
fn is_icmp_of_family(protocol: u8, addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(_) => protocol == proto::ICMP,
        IpAddr::V6(_) => protocol == proto::ICMPV6,
    }
}

/// A packet's (source, destination) endpoints, if it can belong to a session:
/// TCP/UDP by ports, an echo request or reply by identifier, any other ICMP
/// message never, a later fragment never, any other protocol by address alone.
fn endpoints(p: &Packet) -> Option<(Endpoint, Endpoint)> {
    let ep = |addr, port| Endpoint { addr, port };
    if p.is_later_fragment() {
        return None;
    }
    match p.protocol {
        proto::TCP | proto::UDP => Some((ep(p.src, p.src_port), ep(p.dst, p.dst_port))),
        _ if is_icmp_of_family(p.protocol, p.src) => (p.is_echo_request() || p.is_echo_reply())
            .then(|| (ep(p.src, p.icmp_id), ep(p.dst, p.icmp_id))),
        _ => Some((ep(p.src, 0), ep(p.dst, 0))),
    }
}

fn key_of(nic: &str, p: &Packet) -> Option<Key> {
    let (a, b) = endpoints(p)?;
    let (low, high) = if p.is_echo_request() {
        (a, b)
    } else if p.is_echo_reply() {
        (b, a)
    } else {
        (a.min(b), a.max(b))
    };
    Some(Key {
        nic: nic.to_owned(),
        protocol: p.protocol,
        low,
        high,
    })
}

/// The quoted header as a packet, to compute its session key.
fn quoted_packet(q: &Quoted) -> Packet {
    Packet {
        src_port: q.src_port,
        dst_port: q.dst_port,
        icmp_type: q.icmp_type,
        icmp_id: q.icmp_id,
        ..Packet::other(q.src, q.dst, q.protocol)
    }
}

/// The key of the session an ICMP error relates to, if it can relate to one: an
/// error (not a later fragment) quoting a header of its own family, sent back
/// towards the quoted packet's source.
fn related_key(nic: &str, p: &Packet) -> Option<Key> {
    let q = p.quoted.filter(|_| p.is_icmp_error())?;
    let v4 = p.src.is_ipv4();
    if q.src.is_ipv4() != v4 || q.dst.is_ipv4() != v4 || p.dst != q.src {
        return None;
    }
    key_of(nic, &quoted_packet(&q))
}

/// The session table, the fragment table, and SPEC §3 with steps 4 and 8 (see
/// the module documentation).
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    table: BTreeMap<Key, Entry>,
    fragments: BTreeMap<FragKey, FirstFragment>,
}

impl Sessions {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides one IP packet crossing `nic` in `direction` at time `now`, with
    /// sessions and fragments, and updates the tables.
    pub fn decide(
        &mut self,
        state: &State,
        nic: &str,
        direction: Direction,
        packet: &Packet,
        now: Duration,
    ) -> Result<Decision, PolicyError> {
        self.decide_frame(state, nic, direction, &Frame::Ip(packet.clone()), now)
    }

    /// Decides one frame crossing `nic` in `direction` at time `now`: what
    /// decides before the IP packet (tags, ARP, other ethertypes), then the IP
    /// packet with sessions and fragments; updates the tables. A first fragment
    /// is remembered whatever its verdict, unless malformed.
    pub fn decide_frame(
        &mut self,
        state: &State,
        nic: &str,
        direction: Direction,
        frame: &Frame,
        now: Duration,
    ) -> Result<Decision, PolicyError> {
        let d = match frame_before_ip(state, nic, direction, frame)? {
            Ok(d) => d,
            Err(p) => self.decide_packet(state, nic, direction, p, now)?,
        };
        if let (Frame::Ip(p), _) = frame.untagged()
            && let Fragment::First { id } = p.fragment
            && d.reason != Reason::Malformed
        {
            self.fragments.insert(
                FragKey::of(nic, direction, p, id),
                FirstFragment {
                    frame: frame.clone(),
                    accepted: d.verdict == Verdict::Accept,
                    seen: now,
                },
            );
        }
        Ok(d)
    }

    fn decide_packet(
        &mut self,
        state: &State,
        nic: &str,
        direction: Direction,
        packet: &Packet,
        now: Duration,
    ) -> Result<Decision, PolicyError> {
        // Steps 0–3 decide without touching sessions; a later fragment that
        // gets past steps 0–2 is decided by its first fragment (step 8).
        if let Some(d) = evaluate_before_sessions(state, nic, direction, packet)? {
            if d.reason == Reason::LaterFragment {
                return self.later_fragment(state, nic, direction, packet, now);
            }
            return Ok(d);
        }
        // Step 4.
        let key = match self.session_step(state, nic, packet, now)? {
            Step::Related => return Ok(Decision::accept(Reason::Related)),
            Step::Session(key) => {
                let entry = self.table.get_mut(&key).expect("found by session_step");
                entry.last_seen = now;
                if key.protocol == proto::TCP {
                    let from = Endpoint {
                        addr: packet.src,
                        port: packet.src_port,
                    };
                    entry.tcp.update(packet.tcp_flags, from == entry.initiator);
                }
                return Ok(Decision::accept(Reason::Session));
            }
            Step::Miss(gone) => {
                // Expired, no longer allowed, or a closed connection's port
                // reused: the packet is decided as if it had no session.
                for k in gone {
                    self.table.remove(&k);
                }
                key_of(nic, packet)
            }
        };
        // Steps 5–6, and step 7: what starts a session.
        let d = evaluate_rules(state, nic, direction, packet)?;
        if let Some(key) = key
            && starts_session(packet, &d)
            && let Some((initiator, responder)) = endpoints(packet)
        {
            self.table.insert(
                key,
                Entry {
                    initiator,
                    responder,
                    first_direction: direction,
                    created: now,
                    last_seen: now,
                    tcp: TcpSeen::default(),
                },
            );
        }
        Ok(d)
    }

    /// Step 4 without changing anything: a related ICMP error, a packet of a
    /// live session the policy still allows, or neither (with the entries a
    /// live decision would remove).
    fn session_step(
        &self,
        state: &State,
        nic: &str,
        packet: &Packet,
        now: Duration,
    ) -> Result<Step, PolicyError> {
        let timeouts = &state.settings.session_timeouts;
        let mut gone = Vec::new();
        // Related: neither refreshes nor advances the session.
        if let Some(key) = related_key(nic, packet)
            && let Some(entry) = self.table.get(&key)
        {
            if entry.live(key.protocol, timeouts, now) && entry.allowed(state, &key)? {
                return Ok(Step::Related);
            }
            gone.push(key);
        }
        if let Some(key) = key_of(nic, packet)
            && let Some(entry) = self.table.get(&key)
        {
            let reopened = packet.protocol == proto::TCP
                && packet.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
                && entry.tcp.closing();
            if entry.live(key.protocol, timeouts, now) && entry.allowed(state, &key)? && !reopened {
                return Ok(Step::Session(key));
            }
            gone.push(key);
        }
        Ok(Step::Miss(gone))
    }

    /// Step 8 for a later fragment that got past steps 0–2.
    fn later_fragment(
        &mut self,
        state: &State,
        nic: &str,
        direction: Direction,
        packet: &Packet,
        now: Duration,
    ) -> Result<Decision, PolicyError> {
        let Fragment::Later { id } = packet.fragment else {
            unreachable!("only later fragments get Reason::LaterFragment");
        };
        let key = FragKey::of(nic, direction, packet, id);
        let Some(first) = self.fragments.get(&key) else {
            return Ok(Decision::drop(Reason::LaterFragment));
        };
        let timeout = Duration::from_secs(u64::from(state.settings.fragment_timeout_secs));
        if now.saturating_sub(first.seen) >= timeout {
            self.fragments.remove(&key);
            return Ok(Decision::drop(Reason::FragmentExpired));
        }
        if !first.accepted {
            return Ok(Decision::drop(Reason::FragmentFollowsFirst));
        }
        let again = self.decide_again(state, nic, direction, &first.frame, now)?;
        Ok(if again.verdict == Verdict::Accept {
            Decision::accept(Reason::FragmentFollowsFirst)
        } else {
            Decision::drop(Reason::FragmentFollowsFirst)
        })
    }

    /// A remembered first fragment decided again under the policy in force,
    /// changing nothing.
    fn decide_again(
        &self,
        state: &State,
        nic: &str,
        direction: Direction,
        first: &Frame,
        now: Duration,
    ) -> Result<Decision, PolicyError> {
        let p = match frame_before_ip(state, nic, direction, first)? {
            Ok(d) => return Ok(d),
            Err(p) => p,
        };
        if let Some(d) = evaluate_before_sessions(state, nic, direction, p)? {
            return Ok(d);
        }
        Ok(match self.session_step(state, nic, p, now)? {
            Step::Related => Decision::accept(Reason::Related),
            Step::Session(_) => Decision::accept(Reason::Session),
            Step::Miss(_) => evaluate_rules(state, nic, direction, p)?,
        })
    }

    /// How many entries the table holds, expired ones not yet removed included.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Every entry, expired ones not yet removed included, in key order.
    pub fn entries(&self) -> Vec<SessionView> {
        self.table.iter().map(|(k, e)| e.view(k)).collect()
    }

    /// Removes the entries that are no longer alive at `now`; returns how many.
    /// Never changes a decision: a packet finding an expired entry removes it.
    pub fn remove_expired(&mut self, timeouts: &SessionTimeouts, now: Duration) -> usize {
        let before = self.table.len();
        self.table.retain(|k, e| e.live(k.protocol, timeouts, now));
        before - self.table.len()
    }

    /// Forgets every session.
    pub fn flush(&mut self) {
        self.table.clear();
    }

    /// Forgets the sessions of one NIC.
    pub fn flush_nic(&mut self, nic: &str) {
        self.table.retain(|k, _| k.nic != nic);
    }

    /// How many first fragments are remembered, expired ones not yet removed
    /// included.
    pub fn fragments(&self) -> usize {
        self.fragments.len()
    }

    /// Forgets every first fragment.
    pub fn flush_fragments(&mut self) {
        self.fragments.clear();
    }
}

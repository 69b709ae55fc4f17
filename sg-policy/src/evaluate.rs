//! The reference evaluator: SPEC §3, one packet at a time, written for clarity.
//!
//! It is the oracle the kernel is tested against, so it follows SPEC §3 step by
//! step and says which step decided. It is stateless:
//! - sessions (step 4) are not consulted: the answer is what the policy says of a
//!   packet that belongs to no session. [`super::session_model::Sessions`] adds step 4
//!   between [`evaluate_before_sessions`] (steps 0–3) and [`evaluate_rules`]
//!   (steps 5–6);
//! - fragment tracking (step 8) is not faked: a later fragment that gets past
//!   steps 0–2 gets [`Reason::LaterFragment`], whose verdict (`Drop`) is the one
//!   for a later fragment whose first was never seen. [`super::session_model::Sessions`]
//!   remembers first fragments and decides later ones by deciding their first
//!   again.
//!
//! Direction: ingress = towards the NIC's workload (peer = source, local =
//! destination); egress = from it (peer = destination, local = source).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{
    error::PolicyError,
    ids::{GroupId, RuleId},
    merge::{ResolvedRule, merged_rules, nic_defaults},
    model::{Action, Direction, NicBinding, State, proto},
};

/// TCP flag bits as in the TCP header's flags byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// ICMP types the steps look at.
pub mod icmp {
    pub const V4_ECHO_REPLY: u8 = 0;
    pub const V4_ECHO_REQUEST: u8 = 8;
    pub const V4_DEST_UNREACHABLE: u8 = 3;
    pub const V4_FRAG_NEEDED_CODE: u8 = 4;
    pub const V4_TIME_EXCEEDED: u8 = 11;
    pub const V4_PARAMETER_PROBLEM: u8 = 12;
    pub const V6_DEST_UNREACHABLE: u8 = 1;
    pub const V6_PACKET_TOO_BIG: u8 = 2;
    pub const V6_TIME_EXCEEDED: u8 = 3;
    pub const V6_PARAMETER_PROBLEM: u8 = 4;
    pub const V6_ECHO_REQUEST: u8 = 128;
    pub const V6_ECHO_REPLY: u8 = 129;
    pub const V6_ND_FIRST: u8 = 133;
    pub const V6_NEIGHBOR_SOLICITATION: u8 = 135;
    pub const V6_NEIGHBOR_ADVERTISEMENT: u8 = 136;
    pub const V6_ND_LAST: u8 = 137;
}

/// Where a packet stands among the fragments of its datagram. `id` is the
/// datagram's identification: the IPv4 header's 16 bits, or the IPv6
/// fragment header's 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Fragment {
    /// Not fragmented.
    #[default]
    None,
    /// The first fragment (offset 0, more fragments): decided like any packet.
    First { id: u32 },
    /// A later fragment (offset > 0): carries no upper-layer header; its ports,
    /// ICMP type and TCP flags are meaningless and ignored.
    Later { id: u32 },
}

/// An IP packet, as parsed (IPv6 extension headers already walked, SPEC §3 step 9).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The upper-layer protocol number.
    pub protocol: u8,
    /// TCP/UDP ports; 0 otherwise.
    pub src_port: u16,
    pub dst_port: u16,
    /// ICMP/`ICMPv6` type and code; 0 otherwise.
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// TCP flags ([`tcp_flags`]); 0 otherwise.
    pub tcp_flags: u8,
    pub fragment: Fragment,
    /// Target address of an `ICMPv6` neighbour advertisement (type 136).
    pub nd_target: Option<Ipv6Addr>,
    /// Identifier of an ICMP/`ICMPv6` echo request or reply; 0 otherwise.
    pub icmp_id: u16,
    /// The header quoted inside an ICMP/`ICMPv6` error; `None` otherwise.
    pub quoted: Option<Quoted>,
}

/// The header an ICMP/`ICMPv6` error quotes: the packet that caused the error,
/// as its sender sent it (so its `src` is where the error goes back to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quoted {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    /// TCP/UDP ports; 0 otherwise.
    pub src_port: u16,
    pub dst_port: u16,
    /// ICMP/`ICMPv6` type and echo identifier; 0 otherwise.
    pub icmp_type: u8,
    pub icmp_id: u16,
}

impl Packet {
    fn base(src: IpAddr, dst: IpAddr, protocol: u8) -> Self {
        Self {
            src,
            dst,
            protocol,
            src_port: 0,
            dst_port: 0,
            icmp_type: 0,
            icmp_code: 0,
            tcp_flags: 0,
            fragment: Fragment::None,
            nd_target: None,
            icmp_id: 0,
            quoted: None,
        }
    }

    /// A TCP SYN.
    pub fn tcp(src: IpAddr, src_port: u16, dst: IpAddr, dst_port: u16) -> Self {
        Self {
            src_port,
            dst_port,
            tcp_flags: tcp_flags::SYN,
            ..Self::base(src, dst, proto::TCP)
        }
    }

    /// A UDP datagram.
    pub fn udp(src: IpAddr, src_port: u16, dst: IpAddr, dst_port: u16) -> Self {
        Self {
            src_port,
            dst_port,
            ..Self::base(src, dst, proto::UDP)
        }
    }

    /// An ICMP (IPv4) or `ICMPv6` (IPv6) message, by the addresses' family.
    pub fn icmp(src: IpAddr, dst: IpAddr, icmp_type: u8, icmp_code: u8) -> Self {
        let p = if src.is_ipv4() {
            proto::ICMP
        } else {
            proto::ICMPV6
        };
        Self {
            icmp_type,
            icmp_code,
            ..Self::base(src, dst, p)
        }
    }

    /// An echo request (ICMP type 8, or `ICMPv6` type 128) with identifier `id`.
    pub fn echo_request(src: IpAddr, dst: IpAddr, id: u16) -> Self {
        let t = if src.is_ipv4() {
            icmp::V4_ECHO_REQUEST
        } else {
            icmp::V6_ECHO_REQUEST
        };
        Self::icmp(src, dst, t, 0).with_icmp_id(id)
    }

    /// An echo reply (ICMP type 0, or `ICMPv6` type 129) with identifier `id`.
    pub fn echo_reply(src: IpAddr, dst: IpAddr, id: u16) -> Self {
        let t = if src.is_ipv4() {
            icmp::V4_ECHO_REPLY
        } else {
            icmp::V6_ECHO_REPLY
        };
        Self::icmp(src, dst, t, 0).with_icmp_id(id)
    }

    /// An ICMP/`ICMPv6` error quoting the header of the packet that caused it.
    pub fn icmp_error(
        src: IpAddr,
        dst: IpAddr,
        icmp_type: u8,
        icmp_code: u8,
        quoted: Quoted,
    ) -> Self {
        Self {
            quoted: Some(quoted),
            ..Self::icmp(src, dst, icmp_type, icmp_code)
        }
    }

    /// Any other protocol.
    pub fn other(src: IpAddr, dst: IpAddr, protocol: u8) -> Self {
        Self::base(src, dst, protocol)
    }

    #[must_use]
    pub fn with_tcp_flags(mut self, flags: u8) -> Self {
        self.tcp_flags = flags;
        self
    }

    #[must_use]
    pub fn with_fragment(mut self, fragment: Fragment) -> Self {
        self.fragment = fragment;
        self
    }

    #[must_use]
    pub fn with_icmp_id(mut self, id: u16) -> Self {
        self.icmp_id = id;
        self
    }

    #[must_use]
    pub fn with_nd_target(mut self, target: Ipv6Addr) -> Self {
        self.nd_target = Some(target);
        self
    }

    /// A later fragment (no upper-layer header).
    pub fn is_later_fragment(&self) -> bool {
        matches!(self.fragment, Fragment::Later { .. })
    }

    fn is_icmp_kind(&self, v4_proto: u8) -> bool {
        !self.is_later_fragment()
            && ((self.src.is_ipv4() && self.protocol == v4_proto)
                || (self.src.is_ipv6() && self.protocol == proto::ICMPV6))
    }

    /// `ICMPv6` neighbour discovery (types 133..=137) over IPv6, not a later fragment.
    pub fn is_neighbour_discovery(&self) -> bool {
        self.src.is_ipv6()
            && self.protocol == proto::ICMPV6
            && !self.is_later_fragment()
            && (icmp::V6_ND_FIRST..=icmp::V6_ND_LAST).contains(&self.icmp_type)
    }

    /// ICMP "fragmentation needed" or `ICMPv6` "packet too big".
    pub fn is_path_mtu(&self) -> bool {
        if self.is_later_fragment() {
            return false;
        }
        match self.src {
            IpAddr::V4(_) => {
                self.protocol == proto::ICMP
                    && self.icmp_type == icmp::V4_DEST_UNREACHABLE
                    && self.icmp_code == icmp::V4_FRAG_NEEDED_CODE
            }
            IpAddr::V6(_) => {
                self.protocol == proto::ICMPV6 && self.icmp_type == icmp::V6_PACKET_TOO_BIG
            }
        }
    }

    /// An ICMP echo request (IPv4, type 8) or `ICMPv6` echo request (type 128).
    pub fn is_echo_request(&self) -> bool {
        self.is_icmp_kind(proto::ICMP)
            && match self.src {
                IpAddr::V4(_) => self.icmp_type == icmp::V4_ECHO_REQUEST,
                IpAddr::V6(_) => self.icmp_type == icmp::V6_ECHO_REQUEST,
            }
    }

    /// An ICMP echo reply (IPv4, type 0) or `ICMPv6` echo reply (type 129).
    pub fn is_echo_reply(&self) -> bool {
        self.is_icmp_kind(proto::ICMP)
            && match self.src {
                IpAddr::V4(_) => self.icmp_type == icmp::V4_ECHO_REPLY,
                IpAddr::V6(_) => self.icmp_type == icmp::V6_ECHO_REPLY,
            }
    }

    /// An ICMP error that can be related to a session (SPEC §3 step 4):
    /// destination unreachable, time exceeded or parameter problem (ICMP types
    /// 3, 11, 12; `ICMPv6` types 1, 2, 3, 4).
    pub fn is_icmp_error(&self) -> bool {
        self.is_icmp_kind(proto::ICMP)
            && match self.src {
                IpAddr::V4(_) => matches!(
                    self.icmp_type,
                    icmp::V4_DEST_UNREACHABLE | icmp::V4_TIME_EXCEEDED | icmp::V4_PARAMETER_PROBLEM
                ),
                IpAddr::V6(_) => matches!(
                    self.icmp_type,
                    icmp::V6_DEST_UNREACHABLE
                        | icmp::V6_PACKET_TOO_BIG
                        | icmp::V6_TIME_EXCEEDED
                        | icmp::V6_PARAMETER_PROBLEM
                ),
            }
    }

    fn has_ports(&self) -> bool {
        !self.is_later_fragment() && matches!(self.protocol, proto::TCP | proto::UDP)
    }
}

/// What crossed the NIC: an IP packet, an ARP packet, another ethertype, a
/// VLAN-tagged frame, or something the parser refused (truncated, an IPv6
/// extension chain longer than 8 or with two fragment headers).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Frame {
    Ip(Packet),
    /// ARP, with its sender protocol address.
    Arp {
        sender: Ipv4Addr,
    },
    /// Any ethertype but IPv4, IPv6 and ARP.
    Other {
        ethertype: u16,
    },
    /// One 802.1Q or 802.1ad tag around the frame it carries: QinQ is a
    /// tagged tagged frame. The parser reads at most two tags; a frame with
    /// more is [`Frame::Malformed`] (and so treated here).
    Tagged(Box<Frame>),
    /// Not parsable as what its headers claim (SPEC §3 step 9, §6).
    Malformed,
}

/// Tags walked before a frame counts as malformed (the data plane's parser).
pub const MAX_VLAN_TAGS: usize = 2;

impl Frame {
    /// The frame inside its VLAN tags, and how many tags there were.
    pub fn untagged(&self) -> (&Frame, usize) {
        let mut f = self;
        let mut tags = 0;
        while let Frame::Tagged(inner) = f {
            f = inner;
            tags += 1;
        }
        (f, tags)
    }
}

/// Accept or drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Drop,
}

impl From<Action> for Verdict {
    fn from(a: Action) -> Self {
        match a {
            Action::Accept => Self::Accept,
            Action::Drop => Self::Drop,
        }
    }
}

/// Which anti-spoofing check dropped a frame (SPEC §3 step 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpoofCheck {
    /// The IP source address is not the NIC's.
    SourceAddress,
    /// The ARP sender address is not the NIC's.
    ArpSender,
    /// A neighbour advertisement's target is not the NIC's.
    NdTarget,
    /// Only IPv4, IPv6 and ARP may leave an anti-spoofed NIC.
    Ethertype,
    /// … and only untagged: no 802.1Q or 802.1ad tag, whatever it carries.
    Tagged,
}

/// Traffic that rules cannot block (SPEC §3 step 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlwaysAllowed {
    /// ICMP fragmentation needed / `ICMPv6` packet too big.
    PathMtu,
    /// The peer (ingress: the source; egress: the destination) is a configured
    /// platform address.
    PlatformAddress,
}

/// The SPEC §3 step that decided.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Refused by the parser (SPEC §3 step 9).
    Malformed,
    /// Step 0.
    AntiSpoof(SpoofCheck),
    /// Step 1: not IP.
    NotIp,
    /// Step 1: `ICMPv6` neighbour discovery.
    NeighbourDiscovery,
    /// Step 2.
    AlwaysAllowed(AlwaysAllowed),
    /// Step 3: egress TCP to port 25.
    PlatformPort25,
    /// Step 4: a packet of a live session that the policy still allows.
    Session,
    /// Step 4: an ICMP error whose quoted header belongs to such a session.
    Related,
    /// Step 8: a later fragment whose first fragment was never seen (or is
    /// forgotten); what the stateless evaluator says of every later fragment.
    LaterFragment,
    /// Step 8: a later fragment whose first fragment was seen: accepted only if
    /// the first was, and, decided again now, still is.
    FragmentFollowsFirst,
    /// Step 8: a later fragment whose first fragment was seen longer ago than
    /// the fragment timeout.
    FragmentExpired,
    /// Step 5: this rule matched first.
    Rule(RuleId),
    /// Step 6: ingress from a member of a shared basic group that accepts.
    DefaultIngressIntraGroup(GroupId),
    /// Step 6: ingress, nothing matched.
    DefaultIngressDrop,
    /// Step 6: egress of a NIC with basic groups.
    DefaultEgressBasic,
    /// Step 6: egress of a NIC with enterprise groups.
    DefaultEgressEnterprise,
}

/// A verdict and what decided it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: Reason,
}

impl Decision {
    pub(crate) fn accept(reason: Reason) -> Self {
        Self {
            verdict: Verdict::Accept,
            reason,
        }
    }

    pub(crate) fn drop(reason: Reason) -> Self {
        Self {
            verdict: Verdict::Drop,
            reason,
        }
    }
}

/// Decides one IP packet crossing NIC `nic` in `direction`, as for a packet of
/// no session: [`evaluate_before_sessions`], else [`evaluate_rules`].
pub fn evaluate(
    state: &State,
    nic: &str,
    direction: Direction,
    packet: &Packet,
) -> Result<Decision, PolicyError> {
    match evaluate_before_sessions(state, nic, direction, packet)? {
        Some(d) => Ok(d),
        None => evaluate_rules(state, nic, direction, packet),
    }
}

/// The steps above sessions, in this order: a family mismatch (malformed), step 0
/// anti-spoofing, step 1 neighbour discovery, step 2 always-allowed, a later
/// fragment (step 8), step 3 platform policy. `None` when none of them decides.
pub fn evaluate_before_sessions(
    state: &State,
    nic: &str,
    direction: Direction,
    packet: &Packet,
) -> Result<Option<Decision>, PolicyError> {
    let binding = state.nic(nic)?;
    if packet.src.is_ipv4() != packet.dst.is_ipv4() {
        return Ok(Some(Decision::drop(Reason::Malformed)));
    }
    // Step 0: anti-spoofing (egress only).
    if direction == Direction::Egress
        && binding.anti_spoof_enabled()
        && let Some(check) = spoofed(binding, packet)
    {
        return Ok(Some(Decision::drop(Reason::AntiSpoof(check))));
    }
    // Step 1: neighbour discovery passes both ways.
    if packet.is_neighbour_discovery() {
        return Ok(Some(Decision::accept(Reason::NeighbourDiscovery)));
    }
    // Step 2: always allowed.
    if packet.is_path_mtu() {
        return Ok(Some(Decision::accept(Reason::AlwaysAllowed(
            AlwaysAllowed::PathMtu,
        ))));
    }
    // The exemption is for traffic whose peer is a platform address, never for
    // traffic merely addressed to one from the NIC's side.
    let peer = match direction {
        Direction::Ingress => &packet.src,
        Direction::Egress => &packet.dst,
    };
    if state
        .settings
        .platform_addresses
        .iter()
        .any(|c| c.contains(peer))
    {
        return Ok(Some(Decision::accept(Reason::AlwaysAllowed(
            AlwaysAllowed::PlatformAddress,
        ))));
    }
    // Step 8, stated here: without an upper-layer header the remaining steps
    // cannot run; the datagram's first fragment decides.
    if packet.is_later_fragment() {
        return Ok(Some(Decision::drop(Reason::LaterFragment)));
    }
    // Step 3: platform policy.
    if direction == Direction::Egress
        && state.settings.block_port_25
        && packet.protocol == proto::TCP
        && packet.dst_port == 25
    {
        return Ok(Some(Decision::drop(Reason::PlatformPort25)));
    }
    Ok(None)
}

/// The steps below sessions: step 5 rules, then step 6 defaults. Meaningful only
/// for a packet [`evaluate_before_sessions`] left undecided.
pub fn evaluate_rules(
    state: &State,
    nic: &str,
    direction: Direction,
    packet: &Packet,
) -> Result<Decision, PolicyError> {
    // Step 5: rules.
    let rules = merged_rules(state, nic, direction)?;
    if let Some(rule) = rules.iter().find(|r| rule_matches(r, direction, packet)) {
        return Ok(Decision {
            verdict: rule.action.into(),
            reason: Reason::Rule(rule.id.clone()),
        });
    }
    // Step 6: defaults.
    default_decision(state, nic, direction, packet)
}

/// Decides one frame: non-IP frames get steps 0 and 1, IP packets all of §3.
pub fn evaluate_frame(
    state: &State,
    nic: &str,
    direction: Direction,
    frame: &Frame,
) -> Result<Decision, PolicyError> {
    match frame_before_ip(state, nic, direction, frame)? {
        Ok(d) => Ok(d),
        Err(p) => evaluate(state, nic, direction, p),
    }
}

/// What decides a frame before its IP packet is looked at: too many tags
/// (malformed), step 0 for tags, ARP and other ethertypes, step 1 for what is
/// not IP. `Err` with the packet when it is an IP packet that gets that far.
pub(crate) fn frame_before_ip<'f>(
    state: &State,
    nic: &str,
    direction: Direction,
    frame: &'f Frame,
) -> Result<Result<Decision, &'f Packet>, PolicyError> {
    let binding = state.nic(nic)?;
    let guarded = direction == Direction::Egress && binding.anti_spoof_enabled();
    let (inner, tags) = frame.untagged();
    if tags > MAX_VLAN_TAGS {
        return Ok(Ok(Decision::drop(Reason::Malformed)));
    }
    Ok(match inner {
        Frame::Malformed => Ok(Decision::drop(Reason::Malformed)),
        _ if guarded && tags > 0 => Ok(Decision::drop(Reason::AntiSpoof(SpoofCheck::Tagged))),
        Frame::Ip(p) => Err(p),
        Frame::Arp { sender } if guarded && !binding.owns(&IpAddr::V4(*sender)) => {
            Ok(Decision::drop(Reason::AntiSpoof(SpoofCheck::ArpSender)))
        }
        Frame::Other { .. } if guarded => {
            Ok(Decision::drop(Reason::AntiSpoof(SpoofCheck::Ethertype)))
        }
        Frame::Arp { .. } | Frame::Other { .. } => Ok(Decision::accept(Reason::NotIp)),
        Frame::Tagged(_) => unreachable!("untagged() unwraps every tag"),
    })
}

/// SPEC §3 step 0 for an IP packet leaving the workload.
fn spoofed(nic: &NicBinding, p: &Packet) -> Option<SpoofCheck> {
    let whole = !p.is_later_fragment();
    if whole
        && p.src.is_ipv6()
        && p.protocol == proto::ICMPV6
        && p.icmp_type == icmp::V6_NEIGHBOR_ADVERTISEMENT
    {
        // A neighbour advertisement must announce one of the NIC's own addresses;
        // one without a target field is malformed and equally refused.
        match p.nd_target {
            Some(t) if nic.owns(&IpAddr::V6(t)) => {}
            _ => return Some(SpoofCheck::NdTarget),
        }
    }
    if nic.owns(&p.src) {
        return None;
    }
    if spoof_exempt(p) {
        return None;
    }
    Some(SpoofCheck::SourceAddress)
}

/// SPEC §3 step 0's exemptions from the source check: an IPv6 link-local
/// source doing neighbour discovery or talking to a link-local or multicast
/// destination, and duplicate-address detection (a neighbour solicitation
/// from `::`).
pub fn spoof_exempt(p: &Packet) -> bool {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (p.src, p.dst) else {
        return false;
    };
    let link_local = |a: Ipv6Addr| (a.segments()[0] & 0xffc0) == 0xfe80;
    if link_local(src) && (p.is_neighbour_discovery() || link_local(dst) || dst.is_multicast()) {
        return true;
    }
    src.is_unspecified()
        && !p.is_later_fragment()
        && p.protocol == proto::ICMPV6
        && p.icmp_type == icmp::V6_NEIGHBOR_SOLICITATION
}

/// Whether a resolved rule matches a packet (SPEC §3 step 5).
pub fn rule_matches(rule: &ResolvedRule, direction: Direction, p: &Packet) -> bool {
    let (peer, local) = match direction {
        Direction::Ingress => (p.src, p.dst),
        Direction::Egress => (p.dst, p.src),
    };
    if rule.protocol.is_some_and(|n| n != p.protocol) {
        return false;
    }
    // Port conditions exist only on TCP/UDP rules; a packet without ports (a
    // later fragment never gets here) fails them.
    if p.has_ports() {
        if !rule.dst_ports.contains(p.dst_port) || !rule.src_ports.contains(p.src_port) {
            return false;
        }
    } else if rule.dst_ports != super::merge::PortMatch::Any
        || rule.src_ports != super::merge::PortMatch::Any
    {
        return false;
    }
    rule.peers.iter().any(|c| c.contains(&peer)) && rule.local.is_none_or(|c| c.contains(&local))
}

/// SPEC §3 step 6, through the same [`nic_defaults`] the compiler uses.
fn default_decision(
    state: &State,
    nic: &str,
    direction: Direction,
    p: &Packet,
) -> Result<Decision, PolicyError> {
    let defaults = nic_defaults(state, nic)?;
    Ok(match direction {
        Direction::Ingress => defaults
            .ingress_intra_group
            .into_iter()
            .find(|(_, members)| members.iter().any(|c| c.contains(&p.src)))
            .map_or(Decision::drop(Reason::DefaultIngressDrop), |(g, _)| {
                Decision::accept(Reason::DefaultIngressIntraGroup(g))
            }),
        Direction::Egress => match defaults.egress {
            Action::Accept => Decision::accept(Reason::DefaultEgressBasic),
            Action::Drop => Decision::drop(Reason::DefaultEgressEnterprise),
        },
    })
}

/// SPEC §3 step 7: whether an accepted packet starts a session. Only packets
/// accepted by a rule or a default do; among them UDP, GRE and every other
/// non-TCP, non-ICMP protocol, a TCP SYN without ACK, and an echo request.
pub fn starts_session(packet: &Packet, decision: &Decision) -> bool {
    let by_policy = matches!(
        decision.reason,
        Reason::Rule(_)
            | Reason::DefaultIngressIntraGroup(_)
            | Reason::DefaultEgressBasic
            | Reason::DefaultEgressEnterprise
            | Reason::DefaultIngressDrop
    );
    if decision.verdict != Verdict::Accept || !by_policy || packet.is_later_fragment() {
        return false;
    }
    match packet.protocol {
        proto::TCP => packet.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN,
        proto::ICMP | proto::ICMPV6 => packet.is_echo_request(),
        _ => true,
    }
}

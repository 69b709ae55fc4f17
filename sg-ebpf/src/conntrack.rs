//! Connection tracking: sessions (SPEC §3 step 4, step 7 and §4).
//!
//! One LRU hash, shared by both programs, holds every NIC's sessions under a
//! normalised key (`sg_common::conntrack`), so a packet and its reply find the
//! same entry with one lookup. An entry counts only while it is *live* (idle
//! below its timeout) and *allowed*: after the NIC's policy version changed,
//! the session's first packet is rebuilt and decided again under the policy
//! in force; if that is no longer an accept, the entry goes and the packet is
//! decided by the rules as if it never had one.
//!
//! The revalidation runs the steps a first packet goes through before and
//! after sessions (`crate::early`, `crate::rules`), which is why those live
//! apart from `crate::decide`: this module depends on them, `decide` on it.

use core::ptr::write_volatile;

use sg_common::{
    conntrack::{SIDE_A, SIDE_B, SessionEntry, SessionKey, event, tcp, timeout},
    counter,
    policy::{IfaceConfig, table_id, verdict},
    reason,
};

use crate::{
    clock::now,
    decision::{Decision, accept},
    early,
    maps::{SCRATCH_SESSION_FIRST, SG_SCRATCH, SG_SESSION_EVENTS, SG_SESSIONS, SG_SETTINGS},
    parse::{
        FRAG_NONE, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, L3_V4, L3_V6, Summary,
        TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, echo, echo_request, fresh, icmp4_error, icmp6_error,
        put_words, words,
    },
    rules,
};

/// How a tuple's endpoints are ordered in its key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// The endpoint that sorts first is `a`: a packet and its reply meet.
    Sorted,
    /// The source is `a` (an echo request: its source is the initiator).
    SrcFirst,
    /// The destination is `a` (an echo reply: its destination is the initiator).
    DstFirst,
}

/// The key of a tuple, and which side (`SIDE_A`/`SIDE_B`) its source is.
#[inline(always)]
#[expect(clippy::too_many_arguments, reason = "a tuple, spelled out")]
fn key(
    nic: u32,
    v4: bool,
    proto: u8,
    src: &[u8; 16],
    sport: u16,
    dst: &[u8; 16],
    dport: u16,
    order: Order,
) -> (SessionKey, u8) {
    let s = words(src);
    let d = words(dst);
    let src_first = match order {
        Order::Sorted => (s[0], s[1], sport) <= (d[0], d[1], dport),
        Order::SrcFirst => true,
        Order::DstFirst => false,
    };
    let (a, port_a, b, port_b, side) = if src_first {
        (s, sport, d, dport, SIDE_A)
    } else {
        (d, dport, s, sport, SIDE_B)
    };
    let key = SessionKey {
        a,
        b,
        nic,
        port_a,
        port_b,
        proto,
        family: if v4 { 4 } else { 6 },
        pad16: 0,
        pad32: 0,
    };
    (key, side)
}

/// How an echo message of type `icmp_type` orders its key: echo sessions
/// are directed (SPEC §4: requests from the initiator, replies from the
/// responder), so a request from the responder keys a session of its own.
#[inline(always)]
fn echo_order(v4: bool, icmp_type: u8) -> Order {
    if icmp_type == echo_request(v4) {
        Order::SrcFirst
    } else {
        Order::DstFirst
    }
}

/// The session key of a packet (not a later fragment): ports for TCP and
/// UDP, the identifier for echo (directed), none for other ICMP, no ports
/// otherwise.
#[inline(always)]
fn packet_key(nic: u32, s: &Summary) -> Option<(SessionKey, u8)> {
    let v4 = s.l3 == L3_V4;
    let (sport, dport, order) = match s.proto {
        IPPROTO_TCP | IPPROTO_UDP => (s.sport, s.dport, Order::Sorted),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            if !own_icmp(v4, s.proto) || !echo(v4, s.icmp_type) {
                return None;
            }
            (s.icmp_id, s.icmp_id, echo_order(v4, s.icmp_type))
        }
        _ => (0, 0, Order::Sorted),
    };
    Some(key(nic, v4, s.proto, &s.src, sport, &s.dst, dport, order))
}

/// ICMP of the packet's own family (ICMP in IPv4, ICMPv6 in IPv6).
#[inline(always)]
fn own_icmp(v4: bool, proto: u8) -> bool {
    proto == if v4 { IPPROTO_ICMP } else { IPPROTO_ICMPV6 }
}

#[inline(always)]
fn count(ev: u32) {
    if let Some(c) = SG_SESSION_EVENTS.get_ptr_mut(ev) {
        // SAFETY: this CPU's slot.
        unsafe { *c += 1 };
    }
}

/// Whether the session has been idle for its timeout or longer.
#[inline(always)]
fn expired(e: &SessionEntry, proto: u8, now: u64) -> bool {
    let class = timeout::class(proto, e.tcp) & (timeout::COUNT - 1);
    let limit = SG_SETTINGS.get(0).map_or(0, |st| st.timeouts_ns[class]);
    // Another CPU may have stamped the entry after this one read the clock.
    now.saturating_sub(e.last_seen) >= limit
}

/// Whether the session is allowed under the policy in force: trivially if it
/// was found allowed under this version, else by deciding its first packet
/// again (and remembering the version if it passes).
#[inline(always)]
fn allowed(cfg: &IfaceConfig, k: &SessionKey, e: &mut SessionEntry) -> bool {
    if e.version == cfg.version {
        return true;
    }
    let Some(first) = first_packet(k, e) else {
        return false;
    };
    let dir = u32::from(e.first_dir & 1);
    let table = table_id(cfg.nic, dir, cfg.slot & 1);
    // The steps a first packet went through, but not `crate::decide` itself:
    // that would count, remember and log a decision no packet made, and
    // look at sessions again.
    let d = early::decide(cfg, dir, first).unwrap_or_else(|| rules::decide(table, dir, first));
    if d.verdict != verdict::ACCEPT {
        return false;
    }
    e.version = cfg.version;
    count(event::REVALIDATED);
    true
}

/// Rebuilds the session's first packet in scratch slot 1: the initiator's
/// endpoint as source, a SYN for TCP, an echo request for ICMP.
#[inline(always)]
fn first_packet(k: &SessionKey, e: &SessionEntry) -> Option<&'static Summary> {
    let slot = SG_SCRATCH.get_ptr_mut(SCRATCH_SESSION_FIRST)?;
    let v4 = k.family == 4;
    let (src, sport, dst, dport) = if e.initiator == SIDE_A {
        (k.a, k.port_a, k.b, k.port_b)
    } else {
        (k.b, k.port_b, k.a, k.port_a)
    };
    let icmp_type = if own_icmp(v4, k.proto) {
        echo_request(v4)
    } else {
        0
    };
    let flags = if k.proto == IPPROTO_TCP { TCP_SYN } else { 0 };
    // SAFETY: this CPU's slot; nothing else runs on this CPU meanwhile.
    // Volatile stores, as in `parse::classify`, keep LLVM from a memset call.
    unsafe {
        let f = &mut *slot;
        put_words(&mut f.src, src);
        put_words(&mut f.dst, dst);
        write_volatile(&raw mut f.class, counter::OTHER_L4);
        write_volatile(&raw mut f.bad, 0);
        write_volatile(&raw mut f.markers, 0);
        write_volatile(&raw mut f.frag_id, 0);
        write_volatile(&raw mut f.sport, sport);
        write_volatile(&raw mut f.dport, dport);
        write_volatile(&raw mut f.l3, if v4 { L3_V4 } else { L3_V6 });
        write_volatile(&raw mut f.proto, k.proto);
        write_volatile(&raw mut f.icmp_type, icmp_type);
        write_volatile(&raw mut f.icmp_code, 0);
        write_volatile(&raw mut f.tcp_flags, flags);
        write_volatile(&raw mut f.frag, FRAG_NONE);
        write_volatile(&raw mut f.has_nd_target, false);
        write_volatile(&raw mut f.icmp_id, sport);
        write_volatile(&raw mut f.q_type, 0);
        write_volatile(&raw mut f.has_quote, false);
        write_volatile(&raw mut f.again, false);
        Some(&*core::hint::black_box(slot))
    }
}

/// The TCP progress after a packet with `flags` from `side`.
#[inline(always)]
fn advance(bits: u8, side: u8, initiator: u8, flags: u8) -> u8 {
    let mut next = bits;
    if flags & TCP_RST != 0 {
        next |= tcp::RST;
    }
    if flags & TCP_FIN != 0 {
        next |= if side == SIDE_A {
            tcp::FIN_A
        } else {
            tcp::FIN_B
        };
    }
    let handshake = flags & (TCP_SYN | TCP_ACK);
    if side == initiator {
        if handshake == TCP_ACK && bits & tcp::SYNACK != 0 {
            next |= tcp::ESTABLISHED;
        }
    } else if handshake == TCP_SYN | TCP_ACK {
        next |= tcp::SYNACK;
    }
    next
}

/// Whether `s` is an ICMP error of its own family (the kind that can be
/// related to a session), read afresh (see `parse::fresh`).
#[inline(always)]
fn icmp_error(s: &Summary) -> bool {
    let v4 = fresh(&s.l3) == L3_V4;
    let ty = fresh(&s.icmp_type);
    own_icmp(v4, fresh(&s.proto)) && ((v4 && icmp4_error(ty)) || (!v4 && icmp6_error(ty)))
}

/// Step 4: the decision for a packet of a live, allowed session, or for an
/// ICMP error related to one; `None` to go on to the rules. Entries found
/// expired or no longer allowed are removed on the way, unless the packet is
/// a first fragment decided again for a later one (`Summary::again`): that
/// only looks, and changes no session (neither refreshes, advances nor
/// removes one).
///
/// Both kinds go through one lookup and one revalidation (the costliest
/// step for the verifier, being a whole decision), the kind read afresh
/// where it matters.
#[inline(always)]
pub fn lookup(cfg: &IfaceConfig, s: &Summary) -> Option<Decision> {
    let k = if icmp_error(s) {
        related_key(cfg.nic, s)?
    } else {
        packet_key(cfg.nic, s)?.0
    };
    let ptr = SG_SESSIONS.get_ptr_mut(&k)?;
    // SAFETY: a value of the session map; other CPUs may write the same entry
    // (last writer wins on timestamps and TCP bits, which only cost timing).
    let e = unsafe { &mut *ptr };
    let now = now();
    if expired(e, k.proto, now) {
        return gone(&k, event::EXPIRED, s);
    }
    if !allowed(cfg, &k, e) {
        return gone(&k, event::REVOKED, s);
    }
    // Related: an error neither refreshes nor advances the session.
    if icmp_error(s) {
        return Some(accept(reason::RELATED));
    }
    let bits = e.tcp;
    let tcp_packet = fresh(&s.proto) == IPPROTO_TCP;
    let flags = fresh(&s.tcp_flags);
    if tcp_packet && tcp::closing(bits) && flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        return gone(&k, event::REOPENED, s);
    }
    if !fresh(&s.again) {
        e.last_seen = now;
        if tcp_packet {
            // Which endpoint sent it: TCP keys are sorted, `a` first, and
            // `a` is the source when source and destination are the same.
            let side = if words(&s.src) == k.a && fresh(&s.sport) == k.port_a {
                SIDE_A
            } else {
                SIDE_B
            };
            let next = advance(bits, side, e.initiator, flags);
            if next != bits {
                e.tcp = next;
            }
        }
    }
    Some(accept(reason::SESSION))
}

/// The key of the session an ICMP error relates to: the one its quote
/// belongs to, if the error goes to the quoted packet's sender. A quoted echo
/// keys its session as the echo itself does (directed).
#[inline(always)]
fn related_key(nic: u32, s: &Summary) -> Option<SessionKey> {
    if !s.has_quote || words(&s.dst) != words(&s.q_src) {
        return None;
    }
    let v4 = s.l3 == L3_V4;
    let order = if own_icmp(v4, s.q_proto) {
        echo_order(v4, s.q_type)
    } else {
        Order::Sorted
    };
    let (k, _) = key(
        nic, v4, s.q_proto, &s.q_src, s.q_sport, &s.q_dst, s.q_dport, order,
    );
    Some(k)
}

/// The session `k` is of no use to packet `s`: removed (and the event
/// counted), unless `s` is decided again for a later fragment.
#[inline(always)]
fn gone(k: &SessionKey, ev: u32, s: &Summary) -> Option<Decision> {
    if !fresh(&s.again) {
        // Another CPU may have removed it first: either way it is gone.
        let _ = SG_SESSIONS.remove(k);
        count(ev);
    }
    None
}

/// Step 7: a packet the rules accepted starts a session if it is UDP, GRE or
/// another non-TCP, non-ICMP protocol, a TCP SYN without ACK, or an echo
/// request; a first fragment decided again for a later one never does.
#[inline(always)]
pub fn start(cfg: &IfaceConfig, dir: u32, s: &Summary, d: &Decision) {
    if d.verdict != verdict::ACCEPT || fresh(&s.again) {
        return;
    }
    let v4 = s.l3 == L3_V4;
    let starts = match s.proto {
        IPPROTO_TCP => s.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => own_icmp(v4, s.proto) && s.icmp_type == echo_request(v4),
        _ => true,
    };
    if !starts {
        return;
    }
    let Some((k, side)) = packet_key(cfg.nic, s) else {
        return;
    };
    let now = now();
    let entry = SessionEntry {
        created: now,
        last_seen: now,
        version: cfg.version,
        first_dir: (dir & 1) as u8,
        initiator: if side == SIDE_A { SIDE_A } else { SIDE_B },
        tcp: 0,
        pad: 0,
    };
    // Overwrites an entry found expired, revoked or closed (already removed)
    // or inserted meanwhile by another CPU for the same flow.
    if SG_SESSIONS.insert(&k, &entry, 0).is_ok() {
        count(event::CREATED);
    } else {
        count(event::INSERT_FAILED);
    }
}

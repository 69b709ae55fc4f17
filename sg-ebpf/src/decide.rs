//! Deciding one packet (SPEC §3): anti-spoofing, what is not IP, what is
//! always allowed, platform policy, fragments, sessions (`crate::session`),
//! then the rules and defaults.
//!
//! The rules are never walked: each field is looked up once, giving the ranks
//! of the rules whose condition on that field the packet meets
//! (`sg_common::policy`); the AND of the vectors has the deciding rank as its
//! lowest set bit.

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::maps::lpm_trie::Key;
use sg_common::{
    counter::VLAN,
    droplog::hook,
    policy::{
        AddrKeyV4, AddrKeyV6, BitsKey, DIR_EGRESS, DIR_INGRESS, FIELD_LOCAL, FIELD_PEER,
        INTERVAL_SEARCH_STEPS, IfaceConfig, LastDecision, MAX_INTERVALS, MAX_RANKS, NO_RANK,
        OWN_KEY_PREFIX_BITS, OwnAddrKey, PROTO_OTHER, RuleBits, TableMeta, WORDS, bits_kind,
        iface_flags, own_key_nic, settings_flags, table_tag, verdict,
    },
    reason,
};

use crate::{
    droplog, fragment,
    maps::{
        SG_ADDR4, SG_ADDR6, SG_BITS, SG_BOUNDS, SG_IFACES, SG_LAST, SG_OWN, SG_PLAT4, SG_PLAT6,
        SG_REASONS, SG_RULE_STATS, SG_SETTINGS, SG_TABLES,
    },
    parse::{
        FRAG_FIRST, FRAG_LATER, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, L3_ARP,
        L3_OTHER, L3_V4, Summary, fresh,
    },
    session,
};

/// Which program is asking: XDP, TC egress, or TC ingress (attach mode
/// `tc`). The binding maps each side to a policy direction: the receive side
/// (XDP, TC ingress) to `IfaceConfig::xdp_dir`, the transmit side (TC egress)
/// to `tc_dir`. The numbers are the drop log's (`sg_common::droplog::hook`).
pub const HOOK_XDP: u32 = hook::XDP;
pub const HOOK_TC: u32 = hook::TC_EGRESS;
pub const HOOK_TC_INGRESS: u32 = hook::TC_INGRESS;

#[derive(Clone, Copy)]
pub struct Decision {
    pub verdict: u32,
    pub reason: u32,
    pub rank: u32,
}

#[inline(always)]
pub const fn accept(reason: u32) -> Decision {
    Decision {
        verdict: verdict::ACCEPT,
        reason,
        rank: NO_RANK,
    }
}

#[inline(always)]
pub const fn drop(reason: u32) -> Decision {
    Decision {
        verdict: verdict::DROP,
        reason,
        rank: NO_RANK,
    }
}

/// Decides a parsed frame seen by `hook` on interface `ifindex`, and counts
/// the decision. Returns [`verdict::ACCEPT`] or [`verdict::DROP`].
#[inline(always)]
pub fn decide(hook: u32, ifindex: u32, s: &Summary, frame_len: u64) -> u32 {
    // SAFETY: hash map values are read-only here; the agent replaces, never
    // edits, an entry, so the value cannot change under us.
    let Some(cfg) = (unsafe { SG_IFACES.get(&ifindex) }) else {
        // Not an interface of ours (or not yet bound): not our business.
        return verdict::ACCEPT;
    };
    let cfg = *cfg;
    let dir = if hook == HOOK_TC {
        cfg.tc_dir
    } else {
        cfg.xdp_dir
    };
    let tag = table_tag(cfg.nic, dir, cfg.slot & 1);
    decide_bound(&cfg, dir, tag, s);
    let d = settled();
    // The summary's fields are read again below (remembered, logged) through
    // a pointer the compiler cannot see is the same one, so it does not keep
    // what the steps loaded live across them (see `settle`).
    let s = core::hint::black_box(s);
    // A truncated first fragment opens no datagram: its later fragments then
    // find no first and drop, as the first did.
    if fresh(&s.frag) == FRAG_FIRST && d.reason != reason::MALFORMED {
        fragment::remember_first(cfg.nic, dir, s, d.verdict);
    }
    record(&cfg, dir, tag, &d, frame_len);
    if d.verdict != verdict::ACCEPT {
        droplog::dropped(hook, ifindex, &cfg, dir, &d, s, frame_len);
    }
    d.verdict
}

/// The tag guard (`sg_tc_tag_guard`): where XDP decides a NIC's receive
/// side, the workload's egress in `port` mode, a VLAN tag the kernel keeps
/// beside the frame (`skb->vlan_tci`) is invisible to it. TC ingress, after
/// XDP passed the frame, sees it: a tagged frame leaving an anti-spoofed NIC
/// drops there (counted as [`reason::SPOOF_TAGGED`]); everything else is
/// left to the decision XDP made. Returns [`verdict::ACCEPT`] or
/// [`verdict::DROP`].
#[inline(always)]
pub fn tag_guard(ifindex: u32, tagged_beside: bool) -> u32 {
    if !tagged_beside {
        return verdict::ACCEPT;
    }
    // SAFETY: read-only lookup (see `decide`).
    let Some(cfg) = (unsafe { SG_IFACES.get(&ifindex) }) else {
        return verdict::ACCEPT;
    };
    if cfg.xdp_dir != DIR_EGRESS || cfg.flags & iface_flags::ANTI_SPOOF == 0 {
        return verdict::ACCEPT;
    }
    let idx = (cfg.nic * 2 + DIR_EGRESS) * reason::SLOTS + reason::SPOOF_TAGGED;
    if let Some(c) = SG_REASONS.get_ptr_mut(idx) {
        // SAFETY: this CPU's slot.
        unsafe { *c += 1 };
    }
    verdict::DROP
}

/// Leaves decision `d` in this CPU's last-decision entry, where the steps
/// after it read it back ([`settled`]). Every step settles its decision as
/// soon as it is made, with volatile stores, rather than returning it: a
/// value returned from deep inside the steps is one the compiler merges
/// from every exit, setting its constants early on shared paths and keeping
/// them live across the steps that follow; the verifier then sees paths that
/// differ only in those constants and checks everything after them once per
/// combination (which exceeded its budget). Read back from map memory, a
/// decision is one unknown value for every path.
#[inline(always)]
fn settle(d: Decision) {
    if let Some(last) = SG_LAST.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; stores to fields of a valid entry.
        unsafe {
            write_volatile(&raw mut (*last).verdict, d.verdict);
            write_volatile(&raw mut (*last).reason, d.reason);
            write_volatile(&raw mut (*last).rank, d.rank);
        }
    }
}

/// The decision [`settle`] left; a drop if there is none (never expected).
#[inline(always)]
fn settled() -> Decision {
    let Some(last) = SG_LAST.get_ptr_mut(0) else {
        return drop(reason::NONE);
    };
    // SAFETY: this CPU's slot; loads of fields of a valid entry.
    unsafe {
        Decision {
            verdict: read_volatile(&raw const (*last).verdict),
            reason: read_volatile(&raw const (*last).reason),
            rank: read_volatile(&raw const (*last).rank),
        }
    }
}

/// SPEC §3 for a bound NIC, settled ([`settle`]). A later fragment goes
/// through steps 0 to 2 on its own header; then its datagram's first
/// fragment, as remembered, is decided again under the policy in force
/// (step 8) by the same code as any whole packet, marked `again` so the
/// decision changes no session.
#[inline(always)]
fn decide_bound(cfg: &IfaceConfig, dir: u32, tag: u32, s: &Summary) {
    let mut pkt = s;
    if fresh(&s.frag) == FRAG_LATER {
        let d = before_sessions(cfg, dir, s).unwrap_or(drop(reason::FRAGMENT_NO_FIRST));
        if d.reason != reason::FRAGMENT_NO_FIRST {
            return settle(d);
        }
        pkt = match fragment::first(cfg.nic, dir, s) {
            Ok(first) => first,
            Err(d) => return settle(d),
        };
    }
    decide_whole(cfg, dir, tag, pkt);
    if fresh(&pkt.again) {
        settle(fragment::follows(&settled()));
    }
}

/// Steps 0 to 7 for a packet with its upper-layer header (a whole datagram,
/// a first fragment, or one rebuilt to be decided again), settled.
#[inline(always)]
fn decide_whole(cfg: &IfaceConfig, dir: u32, tag: u32, s: &Summary) {
    if let Some(d) = before_sessions(cfg, dir, s) {
        return settle(d);
    }
    // Step 4.
    if let Some(d) = session::lookup(cfg, s) {
        return settle(d);
    }
    let d = rules(tag, dir, s);
    settle(d);
    // Step 7.
    session::start(cfg, dir, s, &d);
}

/// Steps 0 to 3: everything that decides before sessions are looked at.
/// `None` if the packet gets that far undecided. A later fragment that steps
/// 0 to 2 leave undecided has no upper-layer header for the rest: it gets
/// the decision of a later fragment whose first was never seen
/// ([`reason::FRAGMENT_NO_FIRST`]), which `decide_bound` replaces by its
/// first fragment's decided again. It is never `None`: a later fragment
/// must not reach the session and rule steps, whose cost the verifier would
/// otherwise pay once more for it (the summary is read from map memory, so
/// the verifier cannot know that `decide_bound` only passes whole packets).
#[inline(always)]
pub fn before_sessions(cfg: &IfaceConfig, dir: u32, s: &Summary) -> Option<Decision> {
    if s.class == sg_common::counter::MALFORMED {
        return Some(drop(reason::MALFORMED));
    }
    let guarded = dir == DIR_EGRESS && cfg.flags & iface_flags::ANTI_SPOOF != 0;
    // Step 0: only untagged IPv4, IPv6 and ARP leave an anti-spoofed NIC.
    if guarded && s.markers & (1 << VLAN) != 0 {
        return Some(drop(reason::SPOOF_TAGGED));
    }
    if s.l3 == L3_ARP {
        if guarded && !owns(cfg, 4, &s.src) {
            return Some(drop(reason::SPOOF_ARP));
        }
        return Some(accept(reason::NOT_IP));
    }
    if s.l3 == L3_OTHER {
        return Some(if guarded {
            drop(reason::SPOOF_ETHERTYPE)
        } else {
            accept(reason::NOT_IP)
        });
    }
    let v4 = s.l3 == L3_V4;
    let family = if v4 { 4 } else { 6 };
    let whole = s.frag != FRAG_LATER;
    let icmp6 = !v4 && s.proto == IPPROTO_ICMPV6 && whole;
    let nd = icmp6 && s.icmp_type >= 133 && s.icmp_type <= 137;
    // Step 0: anti-spoofing.
    if guarded {
        if icmp6 && s.icmp_type == 136 && !(s.has_nd_target && owns(cfg, 6, &s.nd_target)) {
            return Some(drop(reason::SPOOF_ND_TARGET));
        }
        if !owns(cfg, family, &s.src) && !spoof_exempt(s, nd) {
            return Some(drop(reason::SPOOF_SOURCE));
        }
    }
    // Step 1: neighbour discovery.
    if nd {
        return Some(accept(reason::NEIGHBOUR_DISCOVERY));
    }
    // Step 2: path MTU discovery, platform addresses.
    let path_mtu = whole
        && ((v4 && s.proto == IPPROTO_ICMP && s.icmp_type == 3 && s.icmp_code == 4)
            || (icmp6 && s.icmp_type == 2));
    if path_mtu {
        return Some(accept(reason::PATH_MTU));
    }
    let settings = SG_SETTINGS.get(0).map_or(0, |st| st.flags);
    // The exemption is for traffic whose peer is a platform address: an
    // ingress packet's source, an egress packet's destination. Never the
    // NIC's own side, or anyone could reach a NIC past its rules by
    // addressing it through a platform address.
    let peer = if dir == DIR_INGRESS { &s.src } else { &s.dst };
    if settings & settings_flags::PLATFORM_ADDRESSES != 0 && platform(v4, peer) {
        return Some(accept(reason::PLATFORM_ADDRESS));
    }
    if !whole {
        return Some(drop(reason::FRAGMENT_NO_FIRST));
    }
    // Step 3: platform policy.
    if dir == DIR_EGRESS
        && s.proto == IPPROTO_TCP
        && s.dport == 25
        && settings & settings_flags::BLOCK_PORT_25 != 0
    {
        return Some(drop(reason::PORT_25));
    }
    None
}

/// Steps 5 and 6: the rules of table `tag` (direction `dir`), then the defaults.
#[inline(always)]
pub fn rules(tag: u32, dir: u32, s: &Summary) -> Decision {
    let Some(meta) = SG_TABLES.get(tag) else {
        return drop(reason::NO_TABLE);
    };
    let rank = classify(tag, meta, dir, s.l3 == L3_V4, s);
    if rank == NO_RANK {
        return Decision {
            verdict: meta.default_verdict,
            reason: meta.default_reason,
            rank,
        };
    }
    if rank >= meta.n_rules {
        return Decision {
            verdict: verdict::ACCEPT,
            reason: reason::DEFAULT_INTRA_GROUP,
            rank,
        };
    }
    let w = (rank / 64) as usize & (WORDS - 1);
    let accepted = meta.accept.words[w] >> (rank % 64) & 1 != 0;
    Decision {
        verdict: if accepted {
            verdict::ACCEPT
        } else {
            verdict::DROP
        },
        reason: reason::RULE,
        rank,
    }
}

/// SPEC §3 step 0's exemptions for IPv6: link-local sources doing neighbour
/// discovery or talking to link-local or multicast destinations, and
/// duplicate-address detection from `::`.
#[inline(always)]
fn spoof_exempt(s: &Summary, nd: bool) -> bool {
    if s.l3 == L3_V4 {
        return false;
    }
    let link_local = |a: &[u8; 16]| a[0] == 0xfe && a[1] & 0xc0 == 0x80;
    if link_local(&s.src) && (nd || link_local(&s.dst) || s.dst[0] == 0xff) {
        return true;
    }
    nd && s.icmp_type == 135 && s.src == [0; 16]
}

/// Whether `addr`, an address of `family` (4 or 6: the packet's, never
/// guessed from the bytes), is one of the NIC's own addresses or extra
/// allowed prefixes in the slot in force (own addresses switch with the
/// tables). IPv4 is stored mapped (`::ffff:a.b.c.d`) with family 4, so an
/// IPv6 packet from `::ffff:a.b.c.d` never owns the NIC's IPv4 `a.b.c.d`.
/// The one place the own-address key is formed.
#[inline(always)]
fn owns(cfg: &IfaceConfig, family: u32, addr: &[u8; 16]) -> bool {
    let key = OwnAddrKey {
        nic: own_key_nic(cfg.nic, cfg.slot & 1),
        family,
        addr: *addr,
    };
    SG_OWN
        .get(&Key::new(OWN_KEY_PREFIX_BITS + 128, key))
        .is_some()
}

#[inline(always)]
fn platform(v4: bool, addr: &[u8; 16]) -> bool {
    if v4 {
        SG_PLAT4
            .get(&Key::new(32, [addr[12], addr[13], addr[14], addr[15]]))
            .is_some()
    } else {
        SG_PLAT6.get(&Key::new(128, *addr)).is_some()
    }
}

/// The rule bits of an address field, or `None` if no rule's condition on
/// that field holds.
#[inline(always)]
fn addr_bits(tag: u32, field: u32, v4: bool, addr: &[u8; 16]) -> Option<&'static RuleBits> {
    let key_tag = (tag * 2 + field).to_be_bytes();
    if v4 {
        let data = AddrKeyV4 {
            key_tag,
            addr: [addr[12], addr[13], addr[14], addr[15]],
        };
        SG_ADDR4.get(&Key::new(64, data))
    } else {
        SG_ADDR6.get(&Key::new(
            160,
            AddrKeyV6 {
                key_tag,
                addr: *addr,
            },
        ))
    }
}

#[inline(always)]
fn bits(tag: u32, kind: u16, index: u16) -> Option<&'static RuleBits> {
    // SAFETY: read-only lookup; the agent replaces values only in inactive slots.
    unsafe { SG_BITS.get(&BitsKey { tag, kind, index }) }
}

/// Index of the elementary interval holding `port` (largest `i` with
/// `bounds[i] <= port`), by binary search.
#[inline(always)]
fn interval(tag: u32, field: u32, port: u16) -> Option<u16> {
    // SAFETY: read-only lookup.
    let b = unsafe { SG_BOUNDS.get(&(tag * 2 + field)) }?;
    let mut lo: u32 = 0;
    let mut hi: u32 = b.n;
    for _ in 0..INTERVAL_SEARCH_STEPS {
        if hi <= lo + 1 {
            break;
        }
        let mid = u32::midpoint(lo, hi);
        // The mask keeps the index provably in bounds for the verifier.
        if b.bounds[(mid & (MAX_INTERVALS - 1)) as usize] <= port {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    u16::try_from(lo).ok()
}

#[inline(always)]
fn port_bits(tag: u32, has_ports: bool, field: u32, port: u16) -> Option<&'static RuleBits> {
    if has_ports {
        let kind = if field == 0 {
            bits_kind::DPORT
        } else {
            bits_kind::SPORT
        };
        bits(tag, kind, interval(tag, field, port)?)
    } else {
        let kind = if field == 0 {
            bits_kind::DPORT_NONE
        } else {
            bits_kind::SPORT_NONE
        };
        bits(tag, kind, 0)
    }
}

/// The deciding rank, or [`NO_RANK`] when no rule (or pseudo-rule) matches.
#[inline(always)]
fn classify(tag: u32, meta: &TableMeta, dir: u32, v4: bool, s: &Summary) -> u32 {
    let (peer, local) = if dir == DIR_INGRESS {
        (&s.src, &s.dst)
    } else {
        (&s.dst, &s.src)
    };
    let Some(peer) = addr_bits(tag, FIELD_PEER, v4, peer) else {
        return NO_RANK;
    };
    let Some(local) = addr_bits(tag, FIELD_LOCAL, v4, local) else {
        return NO_RANK;
    };
    let Some(proto) = bits(tag, bits_kind::PROTO, u16::from(s.proto))
        .or_else(|| bits(tag, bits_kind::PROTO, PROTO_OTHER))
    else {
        return NO_RANK;
    };
    let has_ports = s.proto == IPPROTO_TCP || s.proto == IPPROTO_UDP;
    let Some(dport) = port_bits(tag, has_ports, 0, s.dport) else {
        return NO_RANK;
    };
    let Some(sport) = port_bits(tag, has_ports, 1, s.sport) else {
        return NO_RANK;
    };
    for w in 0..MAX_RANKS / 64 {
        if w >= meta.words {
            break;
        }
        let i = w as usize;
        let x = peer.words[i] & local.words[i] & proto.words[i] & dport.words[i] & sport.words[i];
        if x != 0 {
            return w * 64 + lowest_bit(x);
        }
    }
    NO_RANK
}

/// Index of the lowest set bit of a non-zero `x`. (LLVM lowers this without
/// a ctz instruction, which BPF lacks.)
#[inline(always)]
fn lowest_bit(x: u64) -> u32 {
    x.trailing_zeros()
}

#[inline(always)]
fn record(cfg: &IfaceConfig, dir: u32, tag: u32, d: &Decision, frame_len: u64) {
    let idx = (cfg.nic * 2 + dir) * reason::SLOTS + (d.reason & (reason::SLOTS - 1));
    if let Some(c) = SG_REASONS.get_ptr_mut(idx) {
        // SAFETY: this CPU's slot.
        unsafe { *c += 1 };
    }
    if d.rank != NO_RANK
        && let Some(st) = SG_RULE_STATS.get_ptr_mut(tag * MAX_RANKS + (d.rank & (MAX_RANKS - 1)))
    {
        // SAFETY: this CPU's slot.
        unsafe {
            (*st).packets += 1;
            (*st).bytes += frame_len;
        }
    }
    if let Some(last) = SG_LAST.get_ptr_mut(0) {
        // SAFETY: this CPU's slot.
        unsafe {
            *last = LastDecision {
                verdict: d.verdict,
                reason: d.reason,
                rank: d.rank,
                nic: cfg.nic,
                dir,
                version: cfg.version,
            };
        }
    }
}

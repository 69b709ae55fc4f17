//! The steps that decide before sessions are looked at (SPEC §3 steps 0 to
//! 3): anti-spoofing, what is not IP, what is always allowed (path MTU
//! discovery, platform addresses) and platform policy. Run for every packet
//! and again for a session's first packet when it is revalidated
//! (`crate::conntrack`).

use aya_ebpf::maps::lpm_trie::Key;
use sg_common::{
    counter::VLAN,
    policy::{
        DIR_EGRESS, DIR_INGRESS, IfaceConfig, OWN_KEY_PREFIX_BITS, OwnAddrKey, iface_flags,
        own_key_nic, settings_flags,
    },
    reason,
};

use crate::{
    decision::{Decision, accept, drop},
    maps::{SG_OWN, SG_PLAT4, SG_PLAT6, SG_SETTINGS},
    parse::{
        FRAG_LATER, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, L3_ARP, L3_OTHER, L3_V4, Summary,
    },
};

/// Steps 0 to 3: everything that decides before sessions are looked at.
/// `None` if the packet gets that far undecided. A later fragment that steps
/// 0 to 2 leave undecided has no upper-layer header for the rest: it gets
/// the decision of a later fragment whose first was never seen
/// ([`reason::FRAGMENT_NO_FIRST`]), which `decide::decide_bound` replaces by its
/// first fragment's decided again. It is never `None`: a later fragment
/// must not reach the session and rule steps, whose cost the verifier would
/// otherwise pay once more for it (the summary is read from map memory, so
/// the verifier cannot know that `decide_bound` only passes whole packets).
#[inline(always)]
pub fn decide(cfg: &IfaceConfig, dir: u32, s: &Summary) -> Option<Decision> {
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

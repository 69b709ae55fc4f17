//! Where a packet is parsed: Ethernet (with up to two 802.1Q/802.1ad tags), ARP,
//! IPv4 (with options and fragments), IPv6 (with extension header chains), and
//! the upper-layer headers the rules will look at (TCP, UDP, ICMP, ICMPv6, GRE).
//!
//! Every read goes through [`Packet::read`]; nothing here can read out of bounds.
//! A packet the parser cannot make sense of is classed `MALFORMED` with the
//! `BAD_*` counter saying where it went wrong.

use network_types::{eth::EthHdr, ip::Ipv4Hdr, ip::Ipv6Hdr};
use sg_common::counter::{
    ARP, BAD_ARP, BAD_IPV4, BAD_IPV6, BAD_IPV6_EXT, BAD_L2, BAD_L4, FRAGMENT, GRE, ICMP, ICMPV6,
    IPV4, IPV4_OPTIONS, IPV6, IPV6_EXT, MALFORMED, MAX_IPV6_EXT, NON_IP, OTHER_L4, TCP, UDP, VLAN,
};

use crate::packet::Packet;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// Tags walked before a frame counts as malformed: one (802.1Q) or two (QinQ).
const MAX_VLAN_TAGS: usize = 2;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_GRE: u8 = 47;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;

/// Fixed ARP header for Ethernet/IPv4 is 28 bytes; the 8-byte generic part
/// (hardware type .. opcode) is what must be there to call it ARP at all.
const ARP_FIXED_LEN: usize = 8;

/// What the parser found: one class counter, an optional `BAD_*` reason, and
/// marker counters as a bit set (bit n = counter n).
pub struct Summary {
    pub class: u32,
    pub bad: u32,
    pub markers: u32,
}

impl Summary {
    #[inline(always)]
    fn mark(&mut self, counter: u32) {
        self.markers |= 1 << counter;
    }

    #[inline(always)]
    fn malformed(mut self, why: u32) -> Self {
        self.class = MALFORMED;
        self.bad = why;
        self
    }

    #[inline(always)]
    fn class(mut self, class: u32) -> Self {
        self.class = class;
        self
    }
}

/// Classifies one frame. Never fails: a frame it cannot parse is `MALFORMED`.
#[inline(always)]
pub fn classify(pkt: &Packet) -> Summary {
    let mut s = Summary {
        class: MALFORMED,
        bad: 0,
        markers: 0,
    };
    let Some(eth) = pkt.read::<EthHdr>(0) else {
        return s.malformed(BAD_L2);
    };
    let mut ethertype = u16::from_be(eth.ether_type);
    let mut off = EthHdr::LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        // A tag is TCI (2 bytes) then the inner ethertype (2 bytes).
        let Some(inner) = pkt.be16(off + 2) else {
            return s.malformed(BAD_L2);
        };
        s.mark(VLAN);
        ethertype = inner;
        off += 4;
    }
    match ethertype {
        ETH_P_IP => ipv4(pkt, off, s),
        ETH_P_IPV6 => ipv6(pkt, off, s),
        ETH_P_ARP => {
            if pkt.read::<[u8; ARP_FIXED_LEN]>(off).is_some() {
                s.class(ARP)
            } else {
                s.malformed(BAD_ARP)
            }
        }
        // A third tag: deeper stacks are not something a host NIC should see.
        ETH_P_8021Q | ETH_P_8021AD => s.malformed(BAD_L2),
        _ => s.class(NON_IP),
    }
}

#[inline(always)]
fn ipv4(pkt: &Packet, off: usize, mut s: Summary) -> Summary {
    let Some(ip) = pkt.read::<Ipv4Hdr>(off) else {
        return s.malformed(BAD_IPV4);
    };
    let ihl = usize::from(ip.vihl & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes(ip.tot_len));
    if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN || total < ihl || off + total > pkt.len() {
        return s.malformed(BAD_IPV4);
    }
    s.mark(IPV4);
    if ihl > Ipv4Hdr::LEN {
        s.mark(IPV4_OPTIONS);
    }
    let frag_offset = u16::from_be_bytes(ip.frags) & 0x1fff;
    if frag_offset != 0 {
        return s.class(FRAGMENT);
    }
    // The datagram ends at its total length; anything after is link padding.
    upper_layer(pkt, ip.proto, off + ihl, off + total, s)
}

#[inline(always)]
fn is_ipv6_ext(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_DSTOPTS | IPPROTO_AH
    )
}

#[inline(always)]
fn ipv6(pkt: &Packet, off: usize, mut s: Summary) -> Summary {
    let Some(ip) = pkt.read::<Ipv6Hdr>(off) else {
        return s.malformed(BAD_IPV6);
    };
    let end = off + Ipv6Hdr::LEN + usize::from(u16::from_be_bytes(ip.payload_len));
    if ip.vcf[0] >> 4 != 6 || end > pkt.len() {
        return s.malformed(BAD_IPV6);
    }
    s.mark(IPV6);
    let mut next = ip.next_hdr;
    let mut off = off + Ipv6Hdr::LEN;
    // Walk at most MAX_IPV6_EXT extension headers (SPEC §3 item 9).
    for _ in 0..MAX_IPV6_EXT {
        if !is_ipv6_ext(next) {
            return upper_layer(pkt, next, off, end, s);
        }
        s.mark(IPV6_EXT);
        // Every extension header starts with next-header and a length byte.
        let Some([following, len]) = pkt.read::<[u8; 2]>(off) else {
            return s.malformed(BAD_IPV6_EXT);
        };
        let hdr_len = match next {
            IPPROTO_FRAGMENT => 8,
            // AH counts its length in 4-byte units, minus 2.
            IPPROTO_AH => (usize::from(len) + 2) * 4,
            _ => (usize::from(len) + 1) * 8,
        };
        if off + hdr_len > end {
            return s.malformed(BAD_IPV6_EXT);
        }
        if next == IPPROTO_FRAGMENT {
            let Some(frag) = pkt.be16(off + 2) else {
                return s.malformed(BAD_IPV6_EXT);
            };
            if frag >> 3 != 0 {
                return s.class(FRAGMENT);
            }
        }
        next = following;
        off += hdr_len;
    }
    if is_ipv6_ext(next) {
        return s.malformed(BAD_IPV6_EXT);
    }
    upper_layer(pkt, next, off, end, s)
}

/// Checks the upper-layer header at `off` (the datagram ends at `end`) and
/// classes the packet by protocol.
#[inline(always)]
fn upper_layer(pkt: &Packet, proto: u8, off: usize, end: usize, s: Summary) -> Summary {
    // The bytes a rule decision needs: ports and flags for TCP, ports for UDP,
    // type, code and echo identifier for ICMP, the base header for GRE.
    let (class, need) = match proto {
        IPPROTO_TCP => (TCP, 20),
        IPPROTO_UDP => (UDP, 8),
        IPPROTO_ICMP => (ICMP, 8),
        IPPROTO_ICMPV6 => (ICMPV6, 8),
        IPPROTO_GRE => (GRE, 4),
        _ => return s.class(OTHER_L4),
    };
    if off + need > end {
        return s.malformed(BAD_L4);
    }
    if proto == IPPROTO_TCP {
        // Data offset below 5 words cannot hold the header it claims to end.
        match pkt.read::<u8>(off + 12) {
            Some(doff) if doff >> 4 >= 5 => {}
            _ => return s.malformed(BAD_L4),
        }
    } else if pkt.read::<[u8; 4]>(off).is_none() {
        return s.malformed(BAD_L4);
    }
    s.class(class)
}

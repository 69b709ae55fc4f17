//! Where a packet is parsed: Ethernet (with up to two 802.1Q/802.1ad tags), ARP,
//! IPv4 (with options and fragments), IPv6 (with extension header chains), and
//! the upper-layer headers the rules will look at (TCP, UDP, ICMP, ICMPv6, GRE).
//!
//! Every read goes through [`Packet::read`]; nothing here can read out of bounds.
//! A packet the parser cannot make sense of is classed `MALFORMED` with the
//! `BAD_*` counter saying where it went wrong.

use core::ptr::write_volatile;

use network_types::{eth::EthHdr, ip::Ipv4Hdr, ip::Ipv6Hdr};
use sg_common::counter::{
    ARP, BAD_ARP, BAD_IPV4, BAD_IPV6, BAD_IPV6_EXT, BAD_IPV6_FRAG, BAD_L2, BAD_L4, FRAGMENT, GRE,
    ICMP, ICMPV6, IPV4, IPV4_OPTIONS, IPV6, IPV6_EXT, MALFORMED, MAX_IPV6_EXT, NON_IP, OTHER_L4,
    TCP, UDP, VLAN,
};

use crate::packet::Packet;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// Tags walked before a frame counts as malformed: one (802.1Q) or two (QinQ).
const MAX_VLAN_TAGS: usize = 2;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_DSTOPTS: u8 = 60;

/// TCP header flag bits.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// An Ethernet/IPv4 ARP packet is 28 bytes; shorter is malformed.
const ARP_LEN: usize = 28;

/// What the parser found: one class counter, an optional `BAD_*` reason, and
/// marker counters as a bit set (bit n = counter n).
// Addresses come first and the struct is 8-byte aligned, so each address
// sits at a multiple of 16 and can be written with word stores: a plain
// array copy here compiles to a call into a byte-by-byte memmove.
#[repr(C, align(8))]
pub struct Summary {
    /// Addresses; IPv4 as `::ffff:a.b.c.d`. For ARP, `src` is the sender.
    /// Only meaningful for what `l3` says the frame carried.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Only meaningful when `has_nd_target`.
    pub nd_target: [u8; 16],
    /// The addresses of the header an ICMP error quotes; only meaningful
    /// when `has_quote`.
    pub q_src: [u8; 16],
    pub q_dst: [u8; 16],
    pub class: u32,
    pub bad: u32,
    pub markers: u32,
    /// IP identification (IPv4) or fragment header identification (IPv6).
    pub frag_id: u32,
    /// Ports in host order (TCP, UDP).
    pub sport: u16,
    pub dport: u16,
    /// What the frame carried: [`L3_OTHER`], [`L3_ARP`], [`L3_V4`], [`L3_V6`].
    pub l3: u8,
    /// Upper-layer protocol (IP).
    pub proto: u8,
    /// ICMP/ICMPv6 type and code; TCP flags.
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub tcp_flags: u8,
    /// [`FRAG_NONE`], [`FRAG_FIRST`] or [`FRAG_LATER`].
    pub frag: u8,
    /// An ICMPv6 neighbour advertisement's target was read into `nd_target`.
    pub has_nd_target: bool,
    /// The identifier of an ICMP/ICMPv6 echo request or reply.
    pub icmp_id: u16,
    /// The quoted header's protocol and ports (the echo identifier, twice,
    /// for a quoted echo; 0 for protocols without ports).
    pub q_sport: u16,
    pub q_dport: u16,
    pub q_proto: u8,
    /// The quoted header's ICMP type (for a quoted echo: request or reply).
    pub q_type: u8,
    /// An ICMP error's quoted header was read into the `q_*` fields: IP of
    /// the packet's family, first fragment, and (for TCP, UDP and echo) the
    /// port bytes present. ICMP errors quoting anything else relate to nothing.
    pub has_quote: bool,
    /// Not a packet that crossed: a later fragment's first fragment, rebuilt
    /// to be decided again (`crate::fragment`). Its decision only looks: it
    /// starts, refreshes, advances and removes no session. Read from map
    /// memory, the verifier cannot tell the two kinds apart, and checks the
    /// steps they share once.
    pub again: bool,
}

pub const L3_OTHER: u8 = 0;
pub const L3_ARP: u8 = 1;
pub const L3_V4: u8 = 4;
pub const L3_V6: u8 = 6;
pub const FRAG_NONE: u8 = 0;
pub const FRAG_FIRST: u8 = 1;
pub const FRAG_LATER: u8 = 2;

const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// ICMP (IPv4) destination unreachable, time exceeded, parameter problem.
#[inline(always)]
pub fn icmp4_error(icmp_type: u8) -> bool {
    matches!(icmp_type, 3 | 11 | 12)
}

/// ICMPv6 destination unreachable, packet too big, time exceeded, parameter problem.
#[inline(always)]
pub fn icmp6_error(icmp_type: u8) -> bool {
    matches!(icmp_type, 1..=4)
}

/// An echo request or reply of the family (`v4`): the messages keyed by identifier.
#[inline(always)]
pub fn echo(v4: bool, icmp_type: u8) -> bool {
    if v4 {
        icmp_type == ICMP_ECHO_REQUEST || icmp_type == ICMP_ECHO_REPLY
    } else {
        icmp_type == ICMPV6_ECHO_REQUEST || icmp_type == ICMPV6_ECHO_REPLY
    }
}

/// The echo request type of the family.
#[inline(always)]
pub const fn echo_request(v4: bool) -> u8 {
    if v4 {
        ICMP_ECHO_REQUEST
    } else {
        ICMPV6_ECHO_REQUEST
    }
}

/// Writes `::ffff:a.b.c.d` into an address slot of the summary.
#[inline(always)]
fn put_mapped(dst: &mut [u8; 16], v4: [u8; 4]) {
    put_words(
        dst,
        [
            0,
            u64::from_ne_bytes([0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3]]),
        ],
    );
}

/// Marks `s` as VLAN-tagged when the hook knows of a tag beside the frame's
/// bytes (TC: `skb->vlan_tci`, e.g. after the receive path untagged the
/// frame, or from a VLAN device over a NIC with transmit offload): a tag all
/// the same, though the data alone looks untagged. Done after [`classify`],
/// not inside it: a flag live through the parser would have the verifier
/// check every parser path twice.
#[inline(always)]
pub fn mark_tagged_beside(s: &mut Summary) {
    // SAFETY: plain loads and stores of a field of a valid `&mut Summary`.
    unsafe {
        let m = core::ptr::read_volatile(&raw const s.markers);
        write_volatile(&raw mut s.markers, m | 1 << VLAN);
    }
}

/// Reads `field` of a summary (which lives in map memory) afresh, with a
/// volatile load: the verifier then sees an unknown value rather than one an
/// earlier branch on the same field pinned, so paths that branched on it
/// join again instead of being checked twice over all that follows. For
/// fields read on both sides of a long inlined step (see `decide` and
/// `session`).
#[inline(always)]
pub fn fresh<T: Copy>(field: &T) -> T {
    // SAFETY: a reference to a valid, initialised field.
    unsafe { core::ptr::read_volatile(field) }
}

/// An address field (16 bytes, IPv4 as `::ffff:a.b.c.d`) as two
/// native-order words, read as words: how session keys hold an address,
/// and how one is copied and compared. [`put_words`] is the inverse.
///
/// Only for 8-aligned fields: the addresses of [`Summary`] and of the map
/// values and records laid out like them (`FragFirst`, `DropRecord`, whose
/// size assertions in `sg_common` check the offsets).
#[inline(always)]
#[expect(
    clippy::cast_ptr_alignment,
    reason = "only called on 8-aligned address fields (see the doc)"
)]
pub fn words(a: &[u8; 16]) -> [u64; 2] {
    let p = a.as_ptr().cast::<u64>();
    // SAFETY: an 8-aligned field of 16 bytes (see the doc).
    unsafe { [p.read(), p.add(1).read()] }
}

/// Writes an address given as two native-order words ([`words`]) into an
/// 8-aligned address field (as for [`words`]), as two word stores: a plain
/// array copy compiles to a call into a byte-by-byte memmove.
#[inline(always)]
#[expect(
    clippy::cast_ptr_alignment,
    reason = "only called on 8-aligned address fields (see the doc)"
)]
pub fn put_words(dst: &mut [u8; 16], w: [u64; 2]) {
    let p = dst.as_mut_ptr().cast::<u64>();
    // SAFETY: an 8-aligned field of 16 bytes (see the doc).
    unsafe {
        p.write(w[0]);
        p.add(1).write(w[1]);
    }
}

impl Summary {
    #[inline(always)]
    fn mark(&mut self, counter: u32) {
        self.markers |= 1 << counter;
    }

    #[inline(always)]
    fn malformed(&mut self, why: u32) {
        self.class = MALFORMED;
        self.bad = why;
    }

    #[inline(always)]
    fn class(&mut self, class: u32) {
        self.class = class;
    }
}

/// Classifies one frame into `s` (written in place: the summary lives in map
/// memory, never copied on the small BPF stack). Never fails: a frame it
/// cannot parse is `MALFORMED`.
#[inline(always)]
pub fn classify(pkt: &Packet, s: &mut Summary) {
    // Only the scalars are reset: addresses are written before they mean
    // anything (see the field docs). Volatile stores, because LLVM merges
    // plain zero stores into a call to a byte-by-byte memset.
    // SAFETY: plain stores to fields of a valid `&mut Summary`.
    unsafe {
        write_volatile(&raw mut s.class, MALFORMED);
        write_volatile(&raw mut s.bad, 0);
        write_volatile(&raw mut s.markers, 0);
        write_volatile(&raw mut s.frag_id, 0);
        write_volatile(&raw mut s.sport, 0);
        write_volatile(&raw mut s.dport, 0);
        write_volatile(&raw mut s.l3, L3_OTHER);
        write_volatile(&raw mut s.proto, 0);
        write_volatile(&raw mut s.icmp_type, 0);
        write_volatile(&raw mut s.icmp_code, 0);
        write_volatile(&raw mut s.tcp_flags, 0);
        write_volatile(&raw mut s.frag, FRAG_NONE);
        write_volatile(&raw mut s.has_nd_target, false);
        write_volatile(&raw mut s.icmp_id, 0);
        write_volatile(&raw mut s.q_sport, 0);
        write_volatile(&raw mut s.q_dport, 0);
        write_volatile(&raw mut s.q_proto, 0);
        write_volatile(&raw mut s.q_type, 0);
        write_volatile(&raw mut s.has_quote, false);
        write_volatile(&raw mut s.again, false);
    }
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
            let Some(arp) = pkt.read::<[u8; ARP_LEN]>(off) else {
                return s.malformed(BAD_ARP);
            };
            s.l3 = L3_ARP;
            // The sender protocol address, where Ethernet/IPv4 ARP has it
            // (hardware type 1, protocol 0x0800, lengths 6 and 4). Any other
            // shape has no IPv4 sender: it stays 0.0.0.0, never an owned address.
            if arp[0..6] == [0, 1, 8, 0, 6, 4] {
                put_mapped(&mut s.src, [arp[14], arp[15], arp[16], arp[17]]);
            } else {
                put_words(&mut s.src, [0, 0]);
            }
            s.class(ARP);
        }
        // A third tag: deeper stacks are not something a host NIC should see.
        ETH_P_8021Q | ETH_P_8021AD => s.malformed(BAD_L2),
        _ => s.class(NON_IP),
    }
}

#[inline(always)]
fn ipv4(pkt: &Packet, off: usize, s: &mut Summary) {
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
    s.l3 = L3_V4;
    s.proto = ip.proto;
    put_mapped(&mut s.src, ip.src_addr);
    put_mapped(&mut s.dst, ip.dst_addr);
    s.frag_id = u32::from(u16::from_be_bytes(ip.id));
    let frags = u16::from_be_bytes(ip.frags);
    if frags & 0x1fff != 0 {
        s.frag = FRAG_LATER;
        return s.class(FRAGMENT);
    }
    if frags & 0x2000 != 0 {
        s.frag = FRAG_FIRST;
    }
    // The datagram ends at its total length; anything after is link padding.
    upper_layer(pkt, ip.proto, off + ihl, off + total, s);
}

/// The source and destination of the IPv6 header at `off` as words
/// ([`put_words`]), read from the packet with the same bounds as the header
/// itself (`Ipv6Hdr`'s copy on the stack is not aligned for word loads).
#[inline(always)]
fn ipv6_addrs(pkt: &Packet, off: usize) -> Option<([u64; 2], [u64; 2])> {
    let [_, src_hi, src_lo, dst_hi, dst_lo] = pkt.read::<[u64; Ipv6Hdr::LEN / 8]>(off)?;
    Some(([src_hi, src_lo], [dst_hi, dst_lo]))
}

#[inline(always)]
fn is_ipv6_ext(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_DSTOPTS | IPPROTO_AH
    )
}

#[inline(always)]
fn ipv6(pkt: &Packet, off: usize, s: &mut Summary) {
    let Some(ip) = pkt.read::<Ipv6Hdr>(off) else {
        return s.malformed(BAD_IPV6);
    };
    let end = off + Ipv6Hdr::LEN + usize::from(u16::from_be_bytes(ip.payload_len));
    if ip.vcf[0] >> 4 != 6 || end > pkt.len() {
        return s.malformed(BAD_IPV6);
    }
    s.mark(IPV6);
    s.l3 = L3_V6;
    let Some((src, dst)) = ipv6_addrs(pkt, off) else {
        return s.malformed(BAD_IPV6);
    };
    put_words(&mut s.src, src);
    put_words(&mut s.dst, dst);
    let mut next = ip.next_hdr;
    let mut off = off + Ipv6Hdr::LEN;
    let mut fragment_seen = false;
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
            // One datagram has one fragment header. A second one would make
            // a first fragment look like a later fragment of another
            // datagram and ride that datagram's verdict undecided.
            if fragment_seen {
                return s.malformed(BAD_IPV6_FRAG);
            }
            fragment_seen = true;
            let Some(frag) = pkt.read::<[u8; 8]>(off) else {
                return s.malformed(BAD_IPV6_EXT);
            };
            s.frag_id = u32::from_be_bytes([frag[4], frag[5], frag[6], frag[7]]);
            let word = u16::from_be_bytes([frag[2], frag[3]]);
            if word >> 3 != 0 {
                s.proto = following;
                s.frag = FRAG_LATER;
                return s.class(FRAGMENT);
            }
            // Offset 0 with more fragments: the first. Offset 0 without is an
            // atomic fragment: a whole datagram.
            if word & 1 != 0 {
                s.frag = FRAG_FIRST;
            }
        }
        next = following;
        off += hdr_len;
    }
    if is_ipv6_ext(next) {
        return s.malformed(BAD_IPV6_EXT);
    }
    upper_layer(pkt, next, off, end, s);
}

/// Checks the upper-layer header at `off` (the datagram ends at `end`) and
/// classes the packet by protocol.
#[inline(always)]
fn upper_layer(pkt: &Packet, proto: u8, off: usize, end: usize, s: &mut Summary) {
    s.proto = proto;
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
    let Some(head) = pkt.read::<[u8; 4]>(off) else {
        return s.malformed(BAD_L4);
    };
    match proto {
        IPPROTO_TCP => {
            // Data offset below 5 words cannot hold the header it claims to end.
            match pkt.read::<[u8; 2]>(off + 12) {
                Some([doff, flags]) if doff >> 4 >= 5 => s.tcp_flags = flags,
                _ => return s.malformed(BAD_L4),
            }
            s.sport = u16::from_be_bytes([head[0], head[1]]);
            s.dport = u16::from_be_bytes([head[2], head[3]]);
        }
        IPPROTO_UDP => {
            s.sport = u16::from_be_bytes([head[0], head[1]]);
            s.dport = u16::from_be_bytes([head[2], head[3]]);
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            s.icmp_type = head[0];
            s.icmp_code = head[1];
            let v4 = s.l3 == L3_V4;
            // Only ICMP of the packet's own family has echo and error semantics.
            if v4 == (proto == IPPROTO_ICMP) {
                if echo(v4, head[0]) {
                    if let Some(id) = pkt.be16(off + 4) {
                        s.icmp_id = id;
                    }
                } else if (v4 && icmp4_error(head[0])) || (!v4 && icmp6_error(head[0])) {
                    quote(pkt, v4, off + 8, end, s);
                }
            }
            // A neighbour advertisement's target follows the 8-byte header.
            if proto == IPPROTO_ICMPV6
                && head[0] == ICMPV6_NEIGHBOR_ADVERT
                && off + 24 <= end
                && let (Some(hi), Some(lo)) = (pkt.read::<u64>(off + 8), pkt.read::<u64>(off + 16))
            {
                put_words(&mut s.nd_target, [hi, lo]);
                s.has_nd_target = true;
            }
        }
        _ => {}
    }
    s.class(class);
}

/// Reads the header an ICMP error quotes, starting at `off`, into the `q_*`
/// fields. Leaves `has_quote` false if it is not a whole enough header of
/// the family `v4` (see [`Summary::has_quote`]).
#[inline(always)]
fn quote(pkt: &Packet, v4: bool, off: usize, end: usize, s: &mut Summary) {
    let (proto, l4) = if v4 {
        let Some(ip) = pkt.read::<Ipv4Hdr>(off) else {
            return;
        };
        let ihl = usize::from(ip.vihl & 0x0f) * 4;
        if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN || u16::from_be_bytes(ip.frags) & 0x1fff != 0 {
            return;
        }
        put_mapped(&mut s.q_src, ip.src_addr);
        put_mapped(&mut s.q_dst, ip.dst_addr);
        (ip.proto, off + ihl)
    } else {
        let Some(ip) = pkt.read::<Ipv6Hdr>(off) else {
            return;
        };
        // A quoted extension chain is not walked: such an error relates to nothing.
        if ip.vcf[0] >> 4 != 6 || is_ipv6_ext(ip.next_hdr) {
            return;
        }
        let Some((src, dst)) = ipv6_addrs(pkt, off) else {
            return;
        };
        put_words(&mut s.q_src, src);
        put_words(&mut s.q_dst, dst);
        (ip.next_hdr, off + Ipv6Hdr::LEN)
    };
    let icmp = if v4 { IPPROTO_ICMP } else { IPPROTO_ICMPV6 };
    // A quote is cut wherever the error's sender chose: what is read must
    // lie inside the error's own datagram.
    if proto == IPPROTO_TCP || proto == IPPROTO_UDP {
        let Some(ports) = pkt.read::<[u8; 4]>(l4) else {
            return;
        };
        if l4 + 4 > end {
            return;
        }
        s.q_sport = u16::from_be_bytes([ports[0], ports[1]]);
        s.q_dport = u16::from_be_bytes([ports[2], ports[3]]);
    } else if proto == icmp {
        let Some(h) = pkt.read::<[u8; 6]>(l4) else {
            return;
        };
        if l4 + 6 > end || !echo(v4, h[0]) {
            return;
        }
        let id = u16::from_be_bytes([h[4], h[5]]);
        s.q_sport = id;
        s.q_dport = id;
        s.q_type = h[0];
    } else if l4 > end {
        return;
    }
    s.q_proto = proto;
    s.has_quote = true;
}

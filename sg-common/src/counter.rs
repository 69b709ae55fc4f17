//! Packet counters: stable numbers, never renumbered. A retired number stays
//! reserved; new counters take the next free number below [`SLOTS`].
//!
//! Each packet of a bound interface increments [`PACKETS`] and exactly one
//! *class* counter ([`CLASSES`]); markers ([`VLAN`], [`IPV4`], …) add
//! detail, and a malformed packet also increments the one `BAD_*` counter
//! that names what was wrong. A packet on an interface the programs are
//! attached to but no binding names is passed unparsed and counted only in
//! [`NOT_BOUND`].

/// The side of the interface a packet was counted on: its receive side
/// (XDP or TC ingress) or its transmit side (TC egress). Not a policy
/// direction (`policy::DIR_*`): in `port` mode the receive side is the
/// workload's egress.
pub const DIR_INGRESS: u32 = 0;
pub const DIR_EGRESS: u32 = 1;
pub const HOOK_DIRECTIONS: u32 = 2;

/// Every packet of a bound interface the program saw.
pub const PACKETS: u32 = 0;
// ---- classes: each packet lands in exactly one ------------------------------------
/// A well-formed frame whose ethertype is neither IPv4, IPv6 nor ARP.
pub const NON_IP: u32 = 1;
/// ARP.
pub const ARP: u32 = 2;
/// IP packet carrying TCP (first or only fragment).
pub const TCP: u32 = 3;
/// … UDP.
pub const UDP: u32 = 4;
/// … ICMP (IPv4).
pub const ICMP: u32 = 5;
/// … ICMPv6.
pub const ICMPV6: u32 = 6;
/// … GRE.
pub const GRE: u32 = 7;
/// … any other upper-layer protocol.
pub const OTHER_L4: u32 = 8;
/// A non-first fragment: no upper-layer header to look at.
pub const FRAGMENT: u32 = 9;
/// Unparseable: truncated or invalid somewhere; one `BAD_*` says where.
pub const MALFORMED: u32 = 10;
// ---- markers ----------------------------------------------------------------------
/// Frame carried one or two 802.1Q/802.1ad tags.
pub const VLAN: u32 = 11;
/// Valid IPv4 header.
pub const IPV4: u32 = 12;
/// Valid IPv6 fixed header.
pub const IPV6: u32 = 13;
/// IPv4 header with options (IHL > 5).
pub const IPV4_OPTIONS: u32 = 14;
/// IPv6 packet with at least one extension header.
pub const IPV6_EXT: u32 = 15;
// ---- why a packet was malformed ------------------------------------------------------
/// Ethernet header or a VLAN tag truncated, or more than two tags.
pub const BAD_L2: u32 = 16;
/// IPv4: truncated, version ≠ 4, IHL < 5, or total length outside header..frame.
pub const BAD_IPV4: u32 = 17;
/// IPv6: fixed header truncated, version ≠ 6, or payload length beyond the frame.
pub const BAD_IPV6: u32 = 18;
/// IPv6 extension header chain longer than [`MAX_IPV6_EXT`] or truncated.
pub const BAD_IPV6_EXT: u32 = 19;
/// Upper-layer header (TCP, UDP, ICMP, ICMPv6, GRE) truncated or invalid.
pub const BAD_L4: u32 = 20;
/// ARP packet shorter than its fixed header.
pub const BAD_ARP: u32 = 21;
/// IPv6 extension chain with a second fragment header (SPEC §3 item 8).
pub const BAD_IPV6_FRAG: u32 = 22;
/// A packet on an interface no binding names: passed before it is parsed,
/// counted here alone (not in [`PACKETS`] nor a class).
pub const NOT_BOUND: u32 = 23;

/// Slots reserved per hook direction; counters are numbered below this.
pub const SLOTS: u32 = 32;

/// The class counters: every packet increments exactly one of them.
pub const CLASSES: [u32; 10] = [
    NON_IP, ARP, TCP, UDP, ICMP, ICMPV6, GRE, OTHER_L4, FRAGMENT, MALFORMED,
];

/// The most IPv6 extension headers walked before the packet counts as malformed
/// (SPEC §3 item 9).
pub const MAX_IPV6_EXT: u32 = 8;

/// Index of `counter` for hook direction `dir` in the counters map.
#[expect(clippy::inline_always, reason = "called on the eBPF hot path")]
#[inline(always)]
pub const fn index(dir: u32, counter: u32) -> u32 {
    dir * SLOTS + counter
}

/// Human-readable names, for the agent's tables (index = counter number).
pub const NAMES: [(u32, &str); 24] = [
    (PACKETS, "packets"),
    (NON_IP, "non_ip"),
    (ARP, "arp"),
    (TCP, "tcp"),
    (UDP, "udp"),
    (ICMP, "icmp"),
    (ICMPV6, "icmpv6"),
    (GRE, "gre"),
    (OTHER_L4, "other_l4"),
    (FRAGMENT, "fragment"),
    (MALFORMED, "malformed"),
    (VLAN, "vlan"),
    (IPV4, "ipv4"),
    (IPV6, "ipv6"),
    (IPV4_OPTIONS, "ipv4_options"),
    (IPV6_EXT, "ipv6_ext"),
    (BAD_L2, "bad_l2"),
    (BAD_IPV4, "bad_ipv4"),
    (BAD_IPV6, "bad_ipv6"),
    (BAD_IPV6_EXT, "bad_ipv6_ext"),
    (BAD_L4, "bad_l4"),
    (BAD_ARP, "bad_arp"),
    (BAD_IPV6_FRAG, "bad_ipv6_frag"),
    (NOT_BOUND, "not_bound"),
];

/// The counter numbers of [`NAMES`], in its order.
const NUMBERS: [u32; NAMES.len()] = {
    let mut numbers = [0; NAMES.len()];
    let mut i = 0;
    while i < NAMES.len() {
        numbers[i] = NAMES[i].0;
        i += 1;
    }
    numbers
};

/// The names of [`NAMES`], in its order.
const LABELS: [&str; NAMES.len()] = {
    let mut labels = [""; NAMES.len()];
    let mut i = 0;
    while i < NAMES.len() {
        labels[i] = NAMES[i].1;
        i += 1;
    }
    labels
};

// Every counter is named at the index of its number (0, 1, 2, …: no gap,
// none twice, the last being `NOT_BOUND`); each has a slot in its hook
// direction and, as a marker, a bit in `markers` (a `u32`); the classes are
// every counter from `NON_IP` to `MALFORMED`, once each; no name is empty
// or given twice.
const _: () = assert!(crate::checks::dense(&NUMBERS, PACKETS));
const _: () = assert!(NUMBERS[NUMBERS.len() - 1] == NOT_BOUND);
const _: () = assert!(crate::checks::below(&NUMBERS, SLOTS));
const _: () = assert!(SLOTS <= u32::BITS);
const _: () = assert!(crate::checks::dense(&CLASSES, NON_IP));
const _: () = assert!(CLASSES[CLASSES.len() - 1] == MALFORMED);
const _: () = assert!(crate::checks::names_distinct(&LABELS));

//! Why a packet got its verdict: SPEC §3's steps as stable numbers, never
//! renumbered. Counted per NIC, direction and reason.

/// No decision recorded.
pub const NONE: u32 = 0;
/// Step 5: a rule (the rank says which).
pub const RULE: u32 = 1;
/// Step 6: ingress from a member of a shared basic group that accepts (the
/// rank says which pseudo-rule, i.e. which group).
pub const DEFAULT_INTRA_GROUP: u32 = 2;
/// Step 6: ingress, nothing matched.
pub const DEFAULT_INGRESS_DROP: u32 = 3;
/// Step 6: egress of a NIC whose groups are basic.
pub const DEFAULT_EGRESS_BASIC: u32 = 4;
/// Step 6: egress of a NIC whose groups are enterprise.
pub const DEFAULT_EGRESS_ENTERPRISE: u32 = 5;
/// Unparseable (SPEC §3 item 9, §6): dropped.
pub const MALFORMED: u32 = 6;
/// Step 0: IP source address not the NIC's.
pub const SPOOF_SOURCE: u32 = 7;
/// Step 0: ARP sender address not the NIC's.
pub const SPOOF_ARP: u32 = 8;
/// Step 0: neighbour advertisement target not the NIC's.
pub const SPOOF_ND_TARGET: u32 = 9;
/// Step 0: ethertype other than IPv4, IPv6, ARP leaving an anti-spoofed NIC.
pub const SPOOF_ETHERTYPE: u32 = 10;
/// Step 1: not IP.
pub const NOT_IP: u32 = 11;
/// Step 1: IPv6 neighbour discovery.
pub const NEIGHBOUR_DISCOVERY: u32 = 12;
/// Step 2: ICMP fragmentation needed / ICMPv6 packet too big.
pub const PATH_MTU: u32 = 13;
/// Step 2: the peer (ingress: source; egress: destination) is a platform address.
pub const PLATFORM_ADDRESS: u32 = 14;
/// Step 3: egress TCP to port 25.
pub const PORT_25: u32 = 15;
/// Step 8: a later fragment, given its first fragment's verdict, the first
/// decided again under the policy in force.
pub const FRAGMENT_FOLLOWS_FIRST: u32 = 16;
/// Step 8: a later fragment whose first was never seen: dropped.
pub const FRAGMENT_NO_FIRST: u32 = 17;
/// The interface is not bound to a NIC: passed untouched.
pub const UNBOUND: u32 = 18;
/// The NIC is bound but its table is missing (never expected): dropped.
pub const NO_TABLE: u32 = 19;

/// Step 4: a packet of a live session.
pub const SESSION: u32 = 20;
/// Step 4: an ICMP error quoting a live session, towards its sender.
pub const RELATED: u32 = 21;
/// Step 0: a VLAN-tagged frame (802.1Q or 802.1ad, in the frame or offloaded
/// beside it) leaving an anti-spoofed NIC.
pub const SPOOF_TAGGED: u32 = 22;
/// Step 8: a later fragment whose first fragment was seen longer ago than
/// the fragment timeout: dropped.
pub const FRAGMENT_EXPIRED: u32 = 23;

/// Slots per (NIC, direction) in the reason counters.
pub const SLOTS: u32 = 32;

/// Names, for the agent's tables (index = reason).
pub const NAMES: [&str; 24] = [
    "none",
    "rule",
    "default_intra_group",
    "default_ingress_drop",
    "default_egress_basic",
    "default_egress_enterprise",
    "malformed",
    "spoof_source",
    "spoof_arp",
    "spoof_nd_target",
    "spoof_ethertype",
    "not_ip",
    "neighbour_discovery",
    "path_mtu",
    "platform_address",
    "port_25",
    "fragment_follows_first",
    "fragment_no_first",
    "unbound",
    "no_table",
    "session",
    "related",
    "spoof_tagged",
    "fragment_expired",
];

/// Every reason, in number order: what the checks below go by. A new reason
/// joins it, [`NAMES`] and the constants above together.
const ALL: [u32; 24] = [
    NONE,
    RULE,
    DEFAULT_INTRA_GROUP,
    DEFAULT_INGRESS_DROP,
    DEFAULT_EGRESS_BASIC,
    DEFAULT_EGRESS_ENTERPRISE,
    MALFORMED,
    SPOOF_SOURCE,
    SPOOF_ARP,
    SPOOF_ND_TARGET,
    SPOOF_ETHERTYPE,
    NOT_IP,
    NEIGHBOUR_DISCOVERY,
    PATH_MTU,
    PLATFORM_ADDRESS,
    PORT_25,
    FRAGMENT_FOLLOWS_FIRST,
    FRAGMENT_NO_FIRST,
    UNBOUND,
    NO_TABLE,
    SESSION,
    RELATED,
    SPOOF_TAGGED,
    FRAGMENT_EXPIRED,
];

// The numbers are 0, 1, 2, … (no gap, none twice), each has a counter slot
// (the kernel masks a reason with `SLOTS - 1`: a power of two), and each
// has exactly one name, none empty or twice.
const _: () = assert!(crate::checks::dense(&ALL, NONE));
const _: () = assert!(crate::checks::below(&ALL, SLOTS));
const _: () = assert!(SLOTS.is_power_of_two());
const _: () = assert!(NAMES.len() == ALL.len());
const _: () = assert!(crate::checks::names_distinct(&NAMES));

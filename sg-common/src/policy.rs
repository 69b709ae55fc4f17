//! Layouts of the compiled policy as the kernel reads it.
//!
//! Per NIC and direction the agent compiles the merged, sorted rules into one
//! *table*; each table exists in two *slots*, the active one and the one being
//! written. Rules are numbered by rank (0 = strongest). Each packet field is
//! looked up once and yields a [`RuleBits`] of the ranks whose condition on that
//! field it meets; the AND of the fields' vectors has the deciding rule as its
//! lowest set bit. No lookup depends on the number of rules.
//!
//! Ranks at and above [`TableMeta::n_rules`] are the ingress default's
//! intra-group pseudo-rules (SPEC §3 step 6), one per shared basic group that
//! accepts its members, in the NIC's group order.

/// Words in a rule bit vector.
pub const WORDS: usize = 16;
/// Ranks a table can hold: 1,000 rules (SPEC §2) plus 10 intra-group
/// pseudo-rules fit.
pub const MAX_RANKS: u32 = 16 * 64;
/// NICs one data plane instance can serve at most. How many it does serve is
/// set when it loads (the per-rule counters are sized for that many, since they
/// cost per CPU).
pub const MAX_NICS: u32 = 128;
/// … unless told otherwise.
pub const DEFAULT_NICS: u32 = 64;
/// Tables: NIC × direction × slot.
pub const MAX_TABLES: u32 = MAX_NICS * 4;
/// Elementary port intervals per table and port field: 1,000 ranges have at
/// most 2,001; a power of two keeps the binary search's index maskable.
pub const MAX_INTERVALS: u32 = 4096;
/// Binary search steps over [`MAX_INTERVALS`].
pub const INTERVAL_SEARCH_STEPS: u32 = 12;

pub const DIR_INGRESS: u32 = 0;
pub const DIR_EGRESS: u32 = 1;

/// The id of the table of NIC `nic`, direction `dir`, slot `slot`: its
/// header's index in the tables map, and the first part of its entries' keys.
#[inline(always)]
#[expect(clippy::inline_always, reason = "called on the eBPF hot path")]
pub const fn table_id(nic: u32, dir: u32, slot: u32) -> u32 {
    nic * 4 + dir * 2 + slot
}

/// A set of ranks: bit `r % 64` of word `r / 64`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleBits {
    pub words: [u64; WORDS],
}

impl RuleBits {
    pub const EMPTY: Self = Self { words: [0; WORDS] };
}

/// Binding flags ([`IfaceConfig::flags`]).
pub mod iface_flags {
    /// Anti-spoofing on (SPEC §3 step 0).
    pub const ANTI_SPOOF: u32 = 1;
}

/// Per interface (key: ifindex): which NIC it is, which direction each hook
/// sees, and which slot is in force. Replaced whole in one map update: that
/// update is the switch to a new policy.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfaceConfig {
    pub nic: u32,
    /// Policy direction of the interface's receive side, which XDP or TC
    /// ingress decides ([`DIR_INGRESS`] in `local` mode).
    pub rx_dir: u32,
    /// Policy direction of the interface's transmit side, which TC egress
    /// decides.
    pub tx_dir: u32,
    pub flags: u32,
    /// The slot in force.
    pub slot: u32,
    /// Policy version, bumped on every switch.
    pub version: u32,
}

/// One table's header (key: [`table_id`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableMeta {
    /// Words of the bit vectors in use.
    pub words: u32,
    /// Real rules; ranks from here up are intra-group pseudo-rules.
    pub n_rules: u32,
    /// Verdict when no rank matches ([`verdict`]).
    pub default_verdict: u32,
    /// Reason when no rank matches ([`crate::reason`]).
    pub default_reason: u32,
    /// Ranks whose action is Accept.
    pub accept: RuleBits,
}

/// Verdicts as stored in maps.
pub mod verdict {
    pub const DROP: u32 = 0;
    pub const ACCEPT: u32 = 1;
}

/// Kinds of [`BitsKey`].
pub mod bits_kind {
    /// Index: protocol number, or [`super::PROTO_OTHER`] for any protocol no
    /// rule names.
    pub const PROTO: u16 = 0;
    /// Index: elementary interval of the destination port.
    pub const DPORT: u16 = 1;
    /// Index: elementary interval of the source port.
    pub const SPORT: u16 = 2;
    /// Index 0: ranks with no destination-port condition (for packets without ports).
    pub const DPORT_NONE: u16 = 3;
    /// Index 0: ranks with no source-port condition.
    pub const SPORT_NONE: u16 = 4;
}

/// The protocol index standing for every protocol without an entry of its own.
pub const PROTO_OTHER: u16 = 256;

/// Key of the rule-bits hash map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BitsKey {
    /// [`table_id`].
    pub table: u32,
    pub kind: u16,
    pub index: u16,
}

/// Lower bounds of a table's elementary port intervals, ascending; interval
/// `i` is `bounds[i] ..= bounds[i + 1] - 1`. `bounds[0]` is 0. Key: `table * 2 +
/// field` (0 = destination, 1 = source).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortBounds {
    pub n: u32,
    pub bounds: [u16; MAX_INTERVALS as usize],
    /// Explicit padding: always zero.
    pub pad: u32,
}

/// Address fields, as in the LPM tries' keys (`table * 2 + field`).
pub const FIELD_PEER: u32 = 0;
pub const FIELD_LOCAL: u32 = 1;

/// Bits of [`OwnAddrKey`] before the address.
pub const OWN_KEY_PREFIX_BITS: u32 = 64;

/// LPM key for IPv4 address tables: `table * 2 + field` ([`table_id`],
/// `FIELD_*`), then the address. The prefix length counts those 32 bits too.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrKeyV4 {
    pub table_field: [u8; 4],
    pub addr: [u8; 4],
}

/// LPM key for IPv6 address tables.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrKeyV6 {
    pub table_field: [u8; 4],
    pub addr: [u8; 16],
}

/// The `nic` field of an [`OwnAddrKey`]: own addresses are per NIC and slot,
/// so they switch with the rest of the policy.
#[inline(always)]
#[expect(clippy::inline_always, reason = "called on the eBPF hot path")]
pub const fn own_key_nic(nic: u32, slot: u32) -> u32 {
    nic * 2 + slot
}

/// LPM key of a NIC's own addresses and extra allowed prefixes
/// (anti-spoofing): IPv4 as `::ffff:a.b.c.d`. The prefix length counts the 64
/// NIC and family bits (always matched whole) and, for IPv4, the 96 mapping
/// bits. The family keeps an IPv6 prefix such as `::/0` from covering IPv4.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OwnAddrKey {
    /// [`own_key_nic`] of the NIC and slot.
    pub nic: u32,
    /// 4 or 6.
    pub family: u32,
    pub addr: [u8; 16],
}

/// Global settings (array index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    pub flags: u32,
    /// Explicit padding: always zero.
    pub pad: u32,
    /// Session idle timeouts in nanoseconds, by `conntrack::timeout` class.
    /// Zero (never written) expires every session at once: stateless, never open.
    pub timeouts_ns: [u64; crate::conntrack::timeout::COUNT],
    /// How long a first fragment is remembered for its later fragments, in
    /// nanoseconds, counted from when it was seen (SPEC §3 item 8). Zero
    /// (never written) forgets it at once: every later fragment drops.
    pub fragment_timeout_ns: u64,
}

pub mod settings_flags {
    /// Drop egress TCP to port 25 (SPEC §3 step 3).
    pub const BLOCK_PORT_25: u32 = 1;
    /// The platform address tries hold something (else their lookups are skipped).
    pub const PLATFORM_ADDRESSES: u32 = 2;
}

/// Key of the fragment table: a datagram seen on a NIC in a direction.
/// Addresses as in the parser's summary (IPv4 as `::ffff:a.b.c.d`): the
/// family keeps an IPv6 datagram between IPv4-mapped addresses apart from
/// the IPv4 datagram with the same bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub nic: u32,
    pub dir: u32,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// IP identification (IPv4, 16 bits) or fragment header identification
    /// (IPv6, 32 bits).
    pub id: u32,
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    /// Explicit padding: always zero (hash keys compare every byte).
    pub pad: u16,
}

/// Flags of [`FragFirst::flags`].
pub mod frag_flags {
    /// The first fragment carried a VLAN tag.
    pub const TAGGED: u8 = 1;
    /// `nd_target` holds a neighbour advertisement's target.
    pub const ND_TARGET: u8 = 2;
    /// The `q_*` fields hold an ICMP error's quoted header.
    pub const QUOTE: u8 = 4;
}

/// What is remembered of a datagram's first fragment: its verdict, when it
/// was seen, and every field of its parsed header that a decision reads
/// beyond the key (ports, flags, ICMP fields, a neighbour advertisement's
/// target, an ICMP error's quote), so a later fragment can have the first
/// decided again under the policy in force (SPEC §3 item 8).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragFirst {
    /// `bpf_ktime_get_coarse_ns` when the first fragment was decided.
    pub seen_ns: u64,
    /// 8-aligned, so the program copies each as two words.
    pub nd_target: [u8; 16],
    pub q_src: [u8; 16],
    pub q_dst: [u8; 16],
    /// The first fragment's verdict ([`verdict`]).
    pub verdict: u32,
    /// Host order.
    pub sport: u16,
    pub dport: u16,
    pub icmp_id: u16,
    pub q_sport: u16,
    pub q_dport: u16,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub tcp_flags: u8,
    pub q_proto: u8,
    pub q_type: u8,
    /// [`frag_flags`].
    pub flags: u8,
    /// Explicit padding: always zero.
    pub pad: [u8; 4],
}

/// Per-rule counters (per CPU), index `table * MAX_RANKS + rank`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RuleStats {
    pub packets: u64,
    pub bytes: u64,
}

/// The last decision a CPU made (per-CPU array, index 0): what tests and
/// tracing read to learn which rule decided.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LastDecision {
    pub verdict: u32,
    pub reason: u32,
    /// The deciding rank (rule or pseudo-rule), or [`NO_RANK`].
    pub rank: u32,
    pub nic: u32,
    pub dir: u32,
    pub version: u32,
}

pub const NO_RANK: u32 = u32::MAX;

const _: () = assert!(size_of::<RuleBits>() == 128);
const _: () = assert!(size_of::<IfaceConfig>() == 24);
const _: () = assert!(size_of::<TableMeta>() == 16 + 128);
const _: () = assert!(size_of::<BitsKey>() == 8);
const _: () = assert!(size_of::<PortBounds>() == 8 + 2 * MAX_INTERVALS as usize);
const _: () = assert!(size_of::<AddrKeyV4>() == 8);
const _: () = assert!(size_of::<AddrKeyV6>() == 20);
const _: () = assert!(size_of::<OwnAddrKey>() == 24);
const _: () = assert!(size_of::<FragKey>() == 48);
const _: () = assert!(size_of::<FragFirst>() == 80);
const _: () = assert!(core::mem::offset_of!(FragFirst, nd_target).is_multiple_of(8));
const _: () = assert!(core::mem::offset_of!(FragFirst, q_src).is_multiple_of(8));
const _: () = assert!(core::mem::offset_of!(FragFirst, q_dst).is_multiple_of(8));
const _: () = assert!(size_of::<LastDecision>() == 24);
const _: () = assert!(size_of::<Settings>() == 48);
const _: () = assert!(MAX_INTERVALS == 1 << INTERVAL_SEARCH_STEPS);
const _: () = assert!(MAX_RANKS >= 1000 + 10);
const _: () = assert!(MAX_RANKS as usize == WORDS * 64);

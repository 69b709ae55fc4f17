//! The drop log: one record per dropped packet, rate-limited in the kernel,
//! sent through a ring buffer to the agent, which writes it as a log line.
//!
//! Off by default: with [`DropLogConfig::enabled`] zero a drop costs one array
//! lookup more. On, each CPU has its own token bucket ([`DropLogBucket`]), so
//! the records per second of a host are at most `CPUs × per_sec` (a burst at
//! most `CPUs × burst`); what the bucket refuses is only counted
//! ([`stat::SUPPRESSED`]).

/// Records the ring buffer holds (bytes; a power-of-two number of pages):
/// 256 KiB is about 3,600 records, more than a second of the highest rate
/// allowed, so a reader that wakes up once a second loses none.
pub const RING_BYTES: u32 = 256 * 1024;

/// The highest `per_sec` and `burst` the agent accepts: keeps the log
/// readable and the bucket's arithmetic (see [`DropLogBucket`]) far from
/// overflow.
pub const MAX_RATE: u32 = 10_000;

/// Credit units per token: the bucket counts in token-nanoseconds, so a
/// refill is one multiplication (`elapsed_ns × per_sec`) and never a division.
pub const CREDIT_PER_TOKEN: u64 = 1_000_000_000;

/// Longest idle time a refill counts, in nanoseconds: 10,000 s, the time the
/// slowest allowed rate takes to fill the largest allowed burst. Bounds
/// `elapsed_ns × per_sec` below 10^17.
pub const MAX_REFILL_NS: u64 = 10_000 * 1_000_000_000;

/// The configuration (array, index 0), written by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DropLogConfig {
    /// Non-zero: log drops. Zero (the default): the drop path reads this and
    /// does nothing else.
    pub enabled: u32,
    /// Tokens added per second, per CPU.
    pub per_sec: u32,
    /// Most tokens a CPU's bucket holds: the largest burst it logs at once.
    pub burst: u32,
    /// Explicit padding: always zero.
    pub pad: u32,
}

/// A CPU's token bucket (per-CPU array, index 0). All zero means full: the
/// first drop counts the whole time since boot as idle, capped at
/// [`MAX_REFILL_NS`], which fills it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DropLogBucket {
    /// Credit, in units of [`CREDIT_PER_TOKEN`] per token, at most
    /// `burst × CREDIT_PER_TOKEN`.
    pub credit: u64,
    /// `bpf_ktime_get_coarse_ns` of the last refill.
    pub last_ns: u64,
}

/// Counters of the drop log (per-CPU array, index = one of these).
pub mod stat {
    /// A record was written to the ring buffer.
    pub const LOGGED: u32 = 0;
    /// The bucket was empty: the drop was not logged.
    pub const SUPPRESSED: u32 = 1;
    /// The bucket had a token but the ring buffer was full (nobody reading).
    pub const RINGBUF_FULL: u32 = 2;
    pub const COUNT: u32 = 3;
    /// Names, for the agent (index = counter).
    pub const NAMES: [&str; 3] = ["logged", "suppressed", "ringbuf_full"];
}

/// Which program dropped the packet ([`DropRecord::hook`]).
pub mod hook {
    /// `sg_xdp`: the receive side.
    pub const XDP: u32 = 0;
    /// `sg_tc_egress`: the transmit side.
    pub const TC_EGRESS: u32 = 1;
    /// `sg_tc_ingress`: the receive side in attach mode `tc`.
    pub const TC_INGRESS: u32 = 2;
    /// Names (index = hook).
    pub const NAMES: [&str; 3] = ["xdp", "tc_egress", "tc_ingress"];
}

/// What [`DropRecord::family`] says the frame carried; the values are the
/// parser's.
pub mod family {
    /// Not IP and not ARP, or malformed before the network header was
    /// understood: no addresses, no protocol.
    pub const OTHER: u8 = 0;
    /// ARP: `src` is the sender's IPv4 address (mapped), `dst` is zero.
    pub const ARP: u8 = 1;
    /// IPv4: addresses as `::ffff:a.b.c.d`.
    pub const V4: u8 = 4;
    pub const V6: u8 = 6;
}

/// One dropped packet, as the ring buffer carries it. Made of integers and
/// byte arrays with no implicit padding: every byte is written by the
/// program (a ring buffer reservation is not zeroed for us).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DropRecord {
    /// `bpf_ktime_get_coarse_ns` at the drop (`CLOCK_MONOTONIC_COARSE`).
    pub ktime_ns: u64,
    /// Source and destination address (see [`family`]); 8-aligned, so the
    /// program copies each as two words.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// The NIC id of the interface's binding.
    pub nic: u32,
    pub ifindex: u32,
    /// Rank of the deciding rule ([`crate::reason::RULE`]), else
    /// [`crate::policy::NO_RANK`].
    pub rank: u32,
    /// The frame's length in bytes.
    pub frame_len: u32,
    /// Why ([`crate::reason`]).
    pub reason: u32,
    /// Host order; 0 for protocols without ports.
    pub sport: u16,
    pub dport: u16,
    /// Which program ([`hook`]).
    pub hook: u8,
    /// Policy direction of the workload ([`crate::policy::DIR_INGRESS`] or
    /// [`crate::policy::DIR_EGRESS`]).
    pub dir: u8,
    /// [`family`].
    pub family: u8,
    /// IP protocol (0 unless IPv4 or IPv6).
    pub proto: u8,
    /// ICMP/ICMPv6 type and code; 0 for other protocols.
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// TCP flags; 0 for other protocols.
    pub tcp_flags: u8,
    /// Explicit padding: always zero.
    pub pad: u8,
}

const _: () = assert!(size_of::<DropLogConfig>() == 16);
const _: () = assert!(size_of::<DropLogBucket>() == 16);
const _: () = assert!(size_of::<DropRecord>() == 72);
const _: () = assert!(size_of::<DropRecord>().is_multiple_of(8));
const _: () = assert!(core::mem::offset_of!(DropRecord, src).is_multiple_of(8));
const _: () = assert!(core::mem::offset_of!(DropRecord, dst).is_multiple_of(8));
const _: () = assert!(stat::NAMES.len() == stat::COUNT as usize);
// The bucket's largest product stays below u64::MAX.
const _: () = assert!((MAX_REFILL_NS as u128) * (MAX_RATE as u128) < u64::MAX as u128);
const _: () = assert!(
    (MAX_RATE as u128) * (CREDIT_PER_TOKEN as u128) + (MAX_REFILL_NS as u128) * (MAX_RATE as u128)
        < u64::MAX as u128
);

// SAFETY: each is #[repr(C)], Copy, made of integers and integer arrays, with
// explicit padding fields: every bit pattern is valid and none is uninitialised.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DropLogConfig {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for DropLogBucket {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for DropRecord {}

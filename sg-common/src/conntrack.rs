//! The kernel's connection tracking: the session table (SPEC §4), one LRU
//! hash shared by both programs.
//!
//! A session is keyed by its NIC and its *normalised* 5-tuple: the two
//! endpoints (address, port) are stored in a fixed order, so a packet and its
//! reply find the same entry with one lookup. ICMP echo uses its identifier
//! as both ports, and its key is *directed* (SPEC §4: an echo session admits
//! requests from its initiator and replies from its responder, nothing
//! else): endpoint `a` is always the initiator, so an echo request and the
//! reply to it find the entry, while a request from the responder with the
//! same identifier keys a session of its own. The value says which endpoint
//! sent the first packet and in which policy direction, which is all it
//! takes to rebuild that first packet and decide it again after a policy
//! change.

/// Key: NIC and normalised tuple. Addresses are the 16 bytes of the packet
/// summary (IPv4 as `::ffff:a.b.c.d`) as two native-order words, endpoint `a`
/// being the one that sorts first by ([`SessionKey::a`], `port_a`) — except
/// for ICMP echo, where `a` is the initiator (the echo request's source).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub a: [u64; 2],
    pub b: [u64; 2],
    pub nic: u32,
    /// Host order; the echo identifier for ICMP echo, 0 for protocols without ports.
    pub port_a: u16,
    pub port_b: u16,
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    /// Explicit padding: always zero (hash keys compare every byte).
    pub pad16: u16,
    pub pad32: u32,
}

/// Value of a session.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SessionEntry {
    /// `bpf_ktime_get_coarse_ns` (`CLOCK_MONOTONIC_COARSE`) when the first
    /// packet passed.
    pub created: u64,
    /// … and when the latest packet of the session passed.
    pub last_seen: u64,
    /// The NIC's policy version the session was last found allowed under.
    pub version: u32,
    /// Policy direction of the first packet (`DIR_INGRESS`, `DIR_EGRESS`).
    pub first_dir: u8,
    /// Which endpoint sent the first packet: [`SIDE_A`] or [`SIDE_B`].
    pub initiator: u8,
    /// TCP progress ([`tcp`]); 0 for other protocols.
    pub tcp: u8,
    pub pad: u8,
}

pub const SIDE_A: u8 = 0;
pub const SIDE_B: u8 = 1;

/// TCP progress bits of a session.
pub mod tcp {
    /// The responder sent SYN+ACK.
    pub const SYNACK: u8 = 1;
    /// The initiator acknowledged after the SYN+ACK: the handshake completed.
    pub const ESTABLISHED: u8 = 2;
    /// Endpoint `a` sent FIN.
    pub const FIN_A: u8 = 4;
    /// Endpoint `b` sent FIN.
    pub const FIN_B: u8 = 8;
    /// Either side sent RST.
    pub const RST: u8 = 16;

    /// RST seen, or FIN from both sides: the short timeout applies, and a new
    /// SYN starts over rather than riding on this entry.
    #[inline(always)]
    #[expect(clippy::inline_always, reason = "called on the eBPF hot path")]
    pub const fn closing(bits: u8) -> bool {
        bits & RST != 0 || bits & (FIN_A | FIN_B) == FIN_A | FIN_B
    }
}

/// Which idle timeout applies ([`crate::policy::Settings::timeouts_ns`] index).
pub mod timeout {
    pub const TCP_HANDSHAKE: usize = 0;
    pub const TCP_ESTABLISHED: usize = 1;
    pub const TCP_CLOSING: usize = 2;
    pub const OTHER: usize = 3;
    pub const COUNT: usize = 4;

    /// The timeout class of a session of protocol `proto` with TCP bits `bits`.
    #[inline(always)]
    #[expect(clippy::inline_always, reason = "called on the eBPF hot path")]
    pub const fn class(proto: u8, bits: u8) -> usize {
        if proto != 6 {
            OTHER
        } else if super::tcp::closing(bits) {
            TCP_CLOSING
        } else if bits & super::tcp::ESTABLISHED != 0 {
            TCP_ESTABLISHED
        } else {
            TCP_HANDSHAKE
        }
    }
}

/// Session events, per-CPU counters (index = event).
pub mod event {
    /// A packet the rules accepted started a session.
    pub const CREATED: u32 = 0;
    /// A packet found its session idle past its timeout.
    pub const EXPIRED: u32 = 1;
    /// A packet found its session no longer allowed after a policy change.
    pub const REVOKED: u32 = 2;
    /// A SYN found its session closed and started over.
    pub const REOPENED: u32 = 3;
    /// A session entry could not be written (the packet still passed the rules).
    pub const INSERT_FAILED: u32 = 4;
    /// A policy change was checked and the session still allowed.
    pub const REVALIDATED: u32 = 5;
    pub const COUNT: u32 = 8;
    pub const NAMES: [&str; 6] = [
        "created",
        "expired",
        "revoked",
        "reopened",
        "insert_failed",
        "revalidated",
    ];
}

const _: () = assert!(size_of::<SessionKey>() == 48);
const _: () = assert!(size_of::<SessionEntry>() == 24);

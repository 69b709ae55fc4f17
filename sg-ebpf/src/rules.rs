//! The rules and the defaults (SPEC §3 steps 5 and 6). The rules are never
//! walked: each field is looked up once, giving the ranks of the rules whose
//! condition on that field the packet meets (`sg_common::policy`); the AND of
//! the vectors has the deciding rank as its lowest set bit.

use aya_ebpf::maps::lpm_trie::Key;
use sg_common::{
    policy::{
        AddrKeyV4, AddrKeyV6, BitsKey, DIR_INGRESS, FIELD_LOCAL, FIELD_PEER, INTERVAL_SEARCH_STEPS,
        MAX_INTERVALS, MAX_RANKS, NO_RANK, PROTO_OTHER, RuleBits, TableMeta, WORDS, bits_kind,
        verdict,
    },
    reason,
};

use crate::{
    decision::{Decision, drop},
    maps::{SG_ADDR4, SG_ADDR6, SG_BITS, SG_BOUNDS, SG_TABLES},
    parse::{IPPROTO_TCP, IPPROTO_UDP, L3_V4, Summary},
};

/// Steps 5 and 6: the rules of table `table` (`table_id`; direction `dir`),
/// then the defaults.
#[inline(always)]
pub fn decide(table: u32, dir: u32, s: &Summary) -> Decision {
    let Some(meta) = SG_TABLES.get(table) else {
        return drop(reason::NO_TABLE);
    };
    let rank = classify(table, meta, dir, s.l3 == L3_V4, s);
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

/// The rule bits of an address field, or `None` if no rule's condition on
/// that field holds.
#[inline(always)]
fn addr_bits(table: u32, field: u32, v4: bool, addr: &[u8; 16]) -> Option<&'static RuleBits> {
    let table_field = (table * 2 + field).to_be_bytes();
    if v4 {
        let data = AddrKeyV4 {
            table_field,
            addr: [addr[12], addr[13], addr[14], addr[15]],
        };
        SG_ADDR4.get(&Key::new(64, data))
    } else {
        SG_ADDR6.get(&Key::new(
            160,
            AddrKeyV6 {
                table_field,
                addr: *addr,
            },
        ))
    }
}

#[inline(always)]
fn bits(table: u32, kind: u16, index: u16) -> Option<&'static RuleBits> {
    // SAFETY: read-only lookup; the agent replaces values only in inactive slots.
    unsafe { SG_BITS.get(&BitsKey { table, kind, index }) }
}

/// Index of the elementary interval holding `port` (largest `i` with
/// `bounds[i] <= port`), by binary search.
#[inline(always)]
fn interval(table: u32, field: u32, port: u16) -> Option<u16> {
    // SAFETY: read-only lookup.
    let b = unsafe { SG_BOUNDS.get(&(table * 2 + field)) }?;
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
fn port_bits(table: u32, has_ports: bool, field: u32, port: u16) -> Option<&'static RuleBits> {
    if has_ports {
        let kind = if field == 0 {
            bits_kind::DPORT
        } else {
            bits_kind::SPORT
        };
        bits(table, kind, interval(table, field, port)?)
    } else {
        let kind = if field == 0 {
            bits_kind::DPORT_NONE
        } else {
            bits_kind::SPORT_NONE
        };
        bits(table, kind, 0)
    }
}

/// The deciding rank, or [`NO_RANK`] when no rule (or pseudo-rule) matches.
#[inline(always)]
fn classify(table: u32, meta: &TableMeta, dir: u32, v4: bool, s: &Summary) -> u32 {
    let (peer, local) = if dir == DIR_INGRESS {
        (&s.src, &s.dst)
    } else {
        (&s.dst, &s.src)
    };
    let Some(peer) = addr_bits(table, FIELD_PEER, v4, peer) else {
        return NO_RANK;
    };
    let Some(local) = addr_bits(table, FIELD_LOCAL, v4, local) else {
        return NO_RANK;
    };
    let Some(proto) = bits(table, bits_kind::PROTO, u16::from(s.proto))
        .or_else(|| bits(table, bits_kind::PROTO, PROTO_OTHER))
    else {
        return NO_RANK;
    };
    let has_ports = s.proto == IPPROTO_TCP || s.proto == IPPROTO_UDP;
    let Some(dport) = port_bits(table, has_ports, 0, s.dport) else {
        return NO_RANK;
    };
    let Some(sport) = port_bits(table, has_ports, 1, s.sport) else {
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

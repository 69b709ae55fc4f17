//! Fragments (SPEC §3 item 8): a first fragment is decided like any packet
//! and remembered; a later fragment of its datagram passes only if the first
//! was accepted, is remembered for less than the fragment timeout, and,
//! rebuilt from what was remembered, is accepted again by the policy now in
//! force (`decide::decide_bound` runs that second decision).
//!
//! The first is decided again for every later fragment, not only after a
//! policy change: that is exact (what decides it, sessions included, is
//! what holds when the later fragment arrives) and needs no knowledge of
//! when the policy moved. Later fragments are few; each costs one decision
//! more.

use core::ptr::write_volatile;

use sg_common::{
    counter::{OTHER_L4, VLAN},
    policy::{FragFirst, FragKey, frag_flags, verdict},
    reason,
};

use crate::{
    clock::now,
    decision::{Decision, accept, drop},
    maps::{SCRATCH_FRAGMENT_FIRST, SG_FRAGS, SG_SCRATCH, SG_SETTINGS},
    parse::{FRAG_FIRST, L3_V4, Summary, put_words, words},
};

/// The fragment table's key of a packet's datagram.
#[inline(always)]
fn key(nic: u32, dir: u32, s: &Summary) -> FragKey {
    FragKey {
        nic,
        dir,
        src: s.src,
        dst: s.dst,
        id: s.frag_id,
        proto: s.proto,
        family: if s.l3 == L3_V4 { 4 } else { 6 },
        pad: 0,
    }
}

/// Remembers first fragment `s` and its verdict `v` (replacing what an
/// earlier datagram with the same key left).
#[inline(always)]
pub fn remember_first(nic: u32, dir: u32, s: &Summary, v: u32) {
    let mut flags = 0;
    if s.markers & (1 << VLAN) != 0 {
        flags |= frag_flags::TAGGED;
    }
    if s.has_nd_target {
        flags |= frag_flags::ND_TARGET;
    }
    if s.has_quote {
        flags |= frag_flags::QUOTE;
    }
    let value = FragFirst {
        seen_ns: now(),
        nd_target: s.nd_target,
        q_src: s.q_src,
        q_dst: s.q_dst,
        verdict: v,
        sport: s.sport,
        dport: s.dport,
        icmp_id: s.icmp_id,
        q_sport: s.q_sport,
        q_dport: s.q_dport,
        icmp_type: s.icmp_type,
        icmp_code: s.icmp_code,
        tcp_flags: s.tcp_flags,
        q_proto: s.q_proto,
        q_type: s.q_type,
        flags,
        pad: [0; 4],
    };
    // Best effort: if this fails, the later fragments are dropped (safe).
    let _ = SG_FRAGS.insert(&key(nic, dir, s), &value, 0);
}

/// The first fragment of later fragment `s`'s datagram, rebuilt to be
/// decided again; or the decision when there is nothing to decide again:
/// no first seen, remembered too long (the entry goes), or first dropped.
#[inline(always)]
pub fn first(nic: u32, dir: u32, s: &Summary) -> Result<&'static Summary, Decision> {
    let k = key(nic, dir, s);
    // SAFETY: read-only lookup; another CPU replacing the entry meanwhile
    // gives a mix of two first fragments of the same key, each a datagram
    // this NIC saw: at worst a later fragment follows the wrong one of two.
    let Some(f) = (unsafe { SG_FRAGS.get(&k) }) else {
        return Err(drop(reason::FRAGMENT_NO_FIRST));
    };
    let timeout = SG_SETTINGS.get(0).map_or(0, |st| st.fragment_timeout_ns);
    // Another CPU may have stamped the entry after this one read the clock.
    if now().saturating_sub(f.seen_ns) >= timeout {
        let _ = SG_FRAGS.remove(&k);
        return Err(drop(reason::FRAGMENT_EXPIRED));
    }
    if f.verdict != verdict::ACCEPT {
        return Err(drop(reason::FRAGMENT_FOLLOWS_FIRST));
    }
    rebuild(s, f).ok_or(drop(reason::FRAGMENT_FOLLOWS_FIRST))
}

/// Writes the first fragment into its scratch slot: the later fragment's
/// addresses, protocol and id (the key), the rest as remembered.
#[inline(always)]
fn rebuild(s: &Summary, f: &FragFirst) -> Option<&'static Summary> {
    let slot = SG_SCRATCH.get_ptr_mut(SCRATCH_FRAGMENT_FIRST)?;
    let src = words(&s.src);
    let dst = words(&s.dst);
    let nd_target = words(&f.nd_target);
    let q_src = words(&f.q_src);
    let q_dst = words(&f.q_dst);
    let markers = if f.flags & frag_flags::TAGGED != 0 {
        1 << VLAN
    } else {
        0
    };
    // SAFETY: this CPU's slot; nothing else runs on this CPU meanwhile.
    // Volatile stores, as in `parse::classify`, keep LLVM from a memset call.
    unsafe {
        let r = &mut *slot;
        put_words(&mut r.src, src);
        put_words(&mut r.dst, dst);
        put_words(&mut r.nd_target, nd_target);
        put_words(&mut r.q_src, q_src);
        put_words(&mut r.q_dst, q_dst);
        // Any class but malformed: a first fragment that was malformed
        // opened no datagram.
        write_volatile(&raw mut r.class, OTHER_L4);
        write_volatile(&raw mut r.bad, 0);
        write_volatile(&raw mut r.markers, markers);
        write_volatile(&raw mut r.frag_id, s.frag_id);
        write_volatile(&raw mut r.sport, f.sport);
        write_volatile(&raw mut r.dport, f.dport);
        write_volatile(&raw mut r.l3, s.l3);
        write_volatile(&raw mut r.proto, s.proto);
        write_volatile(&raw mut r.icmp_type, f.icmp_type);
        write_volatile(&raw mut r.icmp_code, f.icmp_code);
        write_volatile(&raw mut r.tcp_flags, f.tcp_flags);
        write_volatile(&raw mut r.frag, FRAG_FIRST);
        write_volatile(
            &raw mut r.has_nd_target,
            f.flags & frag_flags::ND_TARGET != 0,
        );
        write_volatile(&raw mut r.icmp_id, f.icmp_id);
        write_volatile(&raw mut r.q_sport, f.q_sport);
        write_volatile(&raw mut r.q_dport, f.q_dport);
        write_volatile(&raw mut r.q_proto, f.q_proto);
        write_volatile(&raw mut r.q_type, f.q_type);
        write_volatile(&raw mut r.has_quote, f.flags & frag_flags::QUOTE != 0);
        write_volatile(&raw mut r.again, true);
        Some(&*core::hint::black_box(slot))
    }
}

/// A later fragment's decision, given its first fragment's decided again.
#[inline(always)]
pub fn follows(first: &Decision) -> Decision {
    if first.verdict == verdict::ACCEPT {
        accept(reason::FRAGMENT_FOLLOWS_FIRST)
    } else {
        drop(reason::FRAGMENT_FOLLOWS_FIRST)
    }
}

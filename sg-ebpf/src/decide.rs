//! Deciding one packet (SPEC §3), step by step in order: the steps before
//! sessions (`crate::early`), fragments (`crate::fragment`), sessions
//! (`crate::conntrack`), then the rules and defaults (`crate::rules`); the
//! decision counted, remembered and, for a drop, logged.

use core::ptr::{read_volatile, write_volatile};

use sg_common::{
    droplog::hook,
    maps::test_flags,
    policy::{
        DIR_EGRESS, IfaceConfig, LastDecision, MAX_RANKS, NO_RANK, iface_flags, table_id, verdict,
    },
    reason,
};

use crate::{
    conntrack,
    decision::{Decision, drop},
    droplog, early, fragment,
    maps::{self, SG_IFACES, SG_LAST, SG_REASONS, SG_RULE_STATS},
    parse::{FRAG_FIRST, FRAG_LATER, Summary, fresh},
    rules,
};

/// Which program is asking: XDP, TC egress, or TC ingress (attach mode
/// `tc`). The binding maps each side to a policy direction: the receive side
/// (XDP, TC ingress) to `IfaceConfig::rx_dir`, the transmit side (TC egress)
/// to `tx_dir`. The numbers are the drop log's (`sg_common::droplog::hook`).
pub const HOOK_XDP: u32 = hook::XDP;
pub const HOOK_TC_EGRESS: u32 = hook::TC_EGRESS;
pub const HOOK_TC_INGRESS: u32 = hook::TC_INGRESS;

/// The binding of interface `ifindex`, looked up before anything else: a
/// packet of an interface no binding names (not ours, or not yet bound) is
/// passed without being parsed (counted as `counter::NOT_BOUND`).
#[inline(always)]
pub fn binding(ifindex: u32) -> Option<&'static IfaceConfig> {
    // SAFETY: hash map values are read-only here; the agent replaces, never
    // edits, an entry, so the value cannot change under us.
    unsafe { SG_IFACES.get(&ifindex) }
}

/// Decides a parsed frame seen by `hook` on interface `ifindex`, bound as
/// `cfg` ([`binding`]), and counts the decision. Returns
/// [`verdict::ACCEPT`] or [`verdict::DROP`].
#[inline(always)]
pub fn decide(hook: u32, ifindex: u32, cfg: &IfaceConfig, s: &Summary, frame_len: u64) -> u32 {
    let cfg = *cfg;
    let dir = if hook == HOOK_TC_EGRESS {
        cfg.tx_dir
    } else {
        cfg.rx_dir
    };
    let table = table_id(cfg.nic, dir, cfg.slot & 1);
    decide_bound(&cfg, dir, table, s);
    let d = settled();
    // The summary's fields are read again below (remembered, logged) through
    // a pointer the compiler cannot see is the same one, so it does not keep
    // what the steps loaded live across them (see `settle`).
    let s = core::hint::black_box(s);
    // A truncated first fragment opens no datagram: its later fragments then
    // find no first and drop, as the first did.
    if fresh(&s.frag) == FRAG_FIRST && d.reason != reason::MALFORMED {
        fragment::remember_first(cfg.nic, dir, s, d.verdict);
    }
    record(&cfg, dir, table, &d, frame_len);
    if d.verdict != verdict::ACCEPT {
        droplog::dropped(hook, ifindex, &cfg, dir, &d, s, frame_len);
    }
    d.verdict
}

/// The tag guard (`sg_tc_tag_guard`): where XDP decides a NIC's receive
/// side, the workload's egress in `port` mode, a VLAN tag the kernel keeps
/// beside the frame (`skb->vlan_tci`) is invisible to it. TC ingress, after
/// XDP passed the frame, sees it: a tagged frame leaving an anti-spoofed NIC
/// drops there (counted as [`reason::SPOOF_TAGGED`]); everything else is
/// left to the decision XDP made. Returns [`verdict::ACCEPT`] or
/// [`verdict::DROP`].
#[inline(always)]
pub fn tag_guard(ifindex: u32, tagged_beside: bool) -> u32 {
    if !tagged_beside {
        return verdict::ACCEPT;
    }
    // SAFETY: read-only lookup (see `decide`).
    let Some(cfg) = (unsafe { SG_IFACES.get(&ifindex) }) else {
        return verdict::ACCEPT;
    };
    if cfg.rx_dir != DIR_EGRESS || cfg.flags & iface_flags::ANTI_SPOOF == 0 {
        return verdict::ACCEPT;
    }
    let idx = (cfg.nic * 2 + DIR_EGRESS) * reason::SLOTS + reason::SPOOF_TAGGED;
    if let Some(c) = SG_REASONS.get_ptr_mut(idx) {
        // SAFETY: this CPU's slot.
        unsafe { *c += 1 };
    }
    verdict::DROP
}

/// Leaves decision `d` in this CPU's last-decision entry, where the steps
/// after it read it back ([`settled`]). Every step settles its decision as
/// soon as it is made, with volatile stores, rather than returning it: a
/// value returned from deep inside the steps is one the compiler merges
/// from every exit, setting its constants early on shared paths and keeping
/// them live across the steps that follow; the verifier then sees paths that
/// differ only in those constants and checks everything after them once per
/// combination (which exceeded its budget). Read back from map memory, a
/// decision is one unknown value for every path.
#[inline(always)]
fn settle(d: Decision) {
    if let Some(last) = SG_LAST.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; stores to fields of a valid entry.
        unsafe {
            write_volatile(&raw mut (*last).verdict, d.verdict);
            write_volatile(&raw mut (*last).reason, d.reason);
            write_volatile(&raw mut (*last).rank, d.rank);
        }
    }
}

/// The decision [`settle`] left; a drop if there is none (never expected).
#[inline(always)]
fn settled() -> Decision {
    let Some(last) = SG_LAST.get_ptr_mut(0) else {
        return drop(reason::NONE);
    };
    // SAFETY: this CPU's slot; loads of fields of a valid entry.
    unsafe {
        Decision {
            verdict: read_volatile(&raw const (*last).verdict),
            reason: read_volatile(&raw const (*last).reason),
            rank: read_volatile(&raw const (*last).rank),
        }
    }
}

/// SPEC §3 for a bound NIC, settled ([`settle`]). A later fragment goes
/// through steps 0 to 2 on its own header; then its datagram's first
/// fragment, as remembered, is decided again under the policy in force
/// (step 8) by the same code as any whole packet, marked `again` so the
/// decision changes no session.
#[inline(always)]
fn decide_bound(cfg: &IfaceConfig, dir: u32, table: u32, s: &Summary) {
    let mut pkt = s;
    if fresh(&s.frag) == FRAG_LATER {
        let d = early::decide(cfg, dir, s).unwrap_or(drop(reason::FRAGMENT_NO_FIRST));
        if d.reason != reason::FRAGMENT_NO_FIRST {
            return settle(d);
        }
        pkt = match fragment::first(cfg.nic, dir, s) {
            Ok(first) => first,
            Err(d) => return settle(d),
        };
    }
    decide_whole(cfg, dir, table, pkt);
    if fresh(&pkt.again) {
        settle(fragment::follows(&settled()));
    }
}

/// Steps 0 to 7 for a packet with its upper-layer header (a whole datagram,
/// a first fragment, or one rebuilt to be decided again), settled.
#[inline(always)]
fn decide_whole(cfg: &IfaceConfig, dir: u32, table: u32, s: &Summary) {
    if let Some(d) = early::decide(cfg, dir, s) {
        return settle(d);
    }
    // Step 4.
    if let Some(d) = conntrack::lookup(cfg, s) {
        return settle(d);
    }
    let d = rules::decide(table, dir, s);
    settle(d);
    // Step 7.
    conntrack::start(cfg, dir, s, &d);
}

#[inline(always)]
fn record(cfg: &IfaceConfig, dir: u32, table: u32, d: &Decision, frame_len: u64) {
    let idx = (cfg.nic * 2 + dir) * reason::SLOTS + (d.reason & (reason::SLOTS - 1));
    if let Some(c) = SG_REASONS.get_ptr_mut(idx) {
        // SAFETY: this CPU's slot.
        unsafe { *c += 1 };
    }
    if d.rank != NO_RANK
        && let Some(st) = SG_RULE_STATS.get_ptr_mut(table * MAX_RANKS + (d.rank & (MAX_RANKS - 1)))
    {
        // SAFETY: this CPU's slot.
        unsafe {
            (*st).packets += 1;
            (*st).bytes += frame_len;
        }
    }
    // Only tests read the whole decision back.
    if maps::test_flag(test_flags::RECORD_LAST)
        && let Some(last) = SG_LAST.get_ptr_mut(0)
    {
        // SAFETY: this CPU's slot.
        unsafe {
            *last = LastDecision {
                verdict: d.verdict,
                reason: d.reason,
                rank: d.rank,
                nic: cfg.nic,
                dir,
                version: cfg.version,
            };
        }
    }
}

//! The drop log (`sg_common::droplog`): one ring-buffer record per dropped
//! packet, while this CPU's token bucket has a token. Called on the drop path
//! only; with the log off (the default) it costs one array lookup.

use core::ptr::write_volatile;

use sg_common::{
    droplog::{CREDIT_PER_TOKEN, DropRecord, MAX_REFILL_NS, family, stat},
    policy::IfaceConfig,
};

use crate::{
    clock,
    decision::Decision,
    maps::{SG_DROPLOG, SG_DROPLOG_BUCKET, SG_DROPLOG_CFG, SG_DROPLOG_STATS},
    parse::{L3_ARP, L3_V4, L3_V6, Summary, put_words, words},
};

#[inline(always)]
fn count(which: u32) {
    if let Some(c) = SG_DROPLOG_STATS.get_ptr_mut(which) {
        // SAFETY: this CPU's slot.
        unsafe { *c += 1 };
    }
}

/// Takes a token from this CPU's bucket after refilling it for the time since
/// the last refill. Integer only: credit is counted in token-nanoseconds.
#[inline(always)]
fn take_token(now: u64, per_sec: u32, burst: u32) -> bool {
    let Some(b) = SG_DROPLOG_BUCKET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot; nothing else runs on this CPU meanwhile.
    let b = unsafe { &mut *b };
    // The coarse clock is per-CPU monotonic; a zeroed bucket reads as idle
    // since boot, capped, which fills it.
    let elapsed = now.saturating_sub(b.last_ns).min(MAX_REFILL_NS);
    let cap = u64::from(burst) * CREDIT_PER_TOKEN;
    let credit = (b.credit + elapsed * u64::from(per_sec)).min(cap);
    b.last_ns = now;
    if credit >= CREDIT_PER_TOKEN {
        b.credit = credit - CREDIT_PER_TOKEN;
        true
    } else {
        b.credit = credit;
        false
    }
}

/// Logs a packet dropped by decision `d` on interface `ifindex` (binding
/// `cfg`, policy direction `dir`), seen by program `hook`
/// (`sg_common::droplog::hook`), if the log is on and a token is left.
#[inline(always)]
pub fn dropped(
    hook: u32,
    ifindex: u32,
    cfg: &IfaceConfig,
    dir: u32,
    d: &Decision,
    s: &Summary,
    frame_len: u64,
) {
    let Some(conf) = SG_DROPLOG_CFG.get(0) else {
        return;
    };
    if conf.enabled == 0 {
        return;
    }
    let now = clock::now();
    if !take_token(now, conf.per_sec, conf.burst) {
        return count(stat::SUPPRESSED);
    }
    let Some(mut entry) = SG_DROPLOG.reserve::<DropRecord>(0) else {
        return count(stat::RINGBUF_FULL);
    };
    // Addresses only where the parser wrote them this time: the summary's
    // address fields keep the previous packet's bytes otherwise.
    let (src, dst, fam) = match s.l3 {
        L3_V4 | L3_V6 => (words(&s.src), words(&s.dst), s.l3),
        L3_ARP => (words(&s.src), [0, 0], family::ARP),
        _ => ([0, 0], [0, 0], family::OTHER),
    };
    let r = entry.as_mut_ptr();
    // SAFETY: `r` is the reservation, 8-byte aligned and sized for a record;
    // every field is written (volatile stores, field by field: LLVM would
    // otherwise merge them into a memset or memcpy call, which BPF lacks),
    // the addresses as two word stores each (`put_words`: any bytes are a
    // valid `[u8; 16]`, and it only writes them).
    #[expect(
        clippy::cast_possible_truncation,
        reason = "hook and direction are 0..=2; a frame is far below 4 GiB"
    )]
    unsafe {
        write_volatile(&raw mut (*r).ktime_ns, now);
        put_words(&mut (*r).src, src);
        put_words(&mut (*r).dst, dst);
        write_volatile(&raw mut (*r).nic, cfg.nic);
        write_volatile(&raw mut (*r).ifindex, ifindex);
        write_volatile(&raw mut (*r).rank, d.rank);
        write_volatile(&raw mut (*r).frame_len, frame_len as u32);
        write_volatile(&raw mut (*r).reason, d.reason);
        write_volatile(&raw mut (*r).sport, s.sport);
        write_volatile(&raw mut (*r).dport, s.dport);
        write_volatile(&raw mut (*r).hook, hook as u8);
        write_volatile(&raw mut (*r).dir, dir as u8);
        write_volatile(&raw mut (*r).family, fam);
        write_volatile(&raw mut (*r).proto, s.proto);
        write_volatile(&raw mut (*r).icmp_type, s.icmp_type);
        write_volatile(&raw mut (*r).icmp_code, s.icmp_code);
        write_volatile(&raw mut (*r).tcp_flags, s.tcp_flags);
        write_volatile(&raw mut (*r).pad, 0);
    }
    entry.submit(0);
    count(stat::LOGGED);
}

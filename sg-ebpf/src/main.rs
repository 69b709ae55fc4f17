//! sg data plane. Entry points are thin: each builds a [`Packet`] view for its
//! hook and hands it to the same parser and counters.
//!
//! A frame of an interface no binding names is passed first, unparsed and
//! counted as not bound. The parser classifies every other frame (counted
//! per hook and protocol), then `decide` applies the NIC's compiled policy
//! (SPEC §3).
#![no_std]
#![no_main]
// Helpers that touch packet pointers must be inlined into the program: the
// verifier tracks packet bounds within one function, and BPF-to-BPF calls cost.
#![expect(
    clippy::inline_always,
    reason = "packet helpers must inline into the program"
)]

mod clock;
mod conntrack;
mod counters;
mod decide;
mod decision;
mod droplog;
mod early;
mod fragment;
mod maps;
mod packet;
mod parse;
mod rules;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::warn;
use sg_common::{
    counter::{DIR_EGRESS, DIR_INGRESS},
    maps::test_flags,
    policy::verdict,
};

use crate::packet::Packet;

/// How much of an skb's data the TC program wants in the linear area: room for
/// Ethernet, two VLAN tags, an IPv6 header, a long extension chain and the
/// upper-layer header. Headers beyond it count as truncated (`BAD_*`).
const TC_PULL_LEN: u32 = 256;

/// XDP: the interface's receive side.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's entry macros pass the context by value"
)]
fn sg_xdp(ctx: XdpContext) -> u32 {
    #[expect(clippy::cast_possible_truncation, reason = "ifindex is 32 bits")]
    let ifindex = ctx.ingress_ifindex() as u32;
    let cfg = decide::binding(ifindex);
    if cfg.is_none() && !maps::test_flag(test_flags::PARSE_UNBOUND) {
        counters::not_bound(DIR_INGRESS);
        return xdp_action::XDP_PASS;
    }
    let len = ctx.data_end() - ctx.data();
    let pkt = Packet::new(ctx.data(), ctx.data_end(), len);
    // XDP sees only the frame's bytes: a tag a driver keeps out of band is
    // invisible here (see docs/dataplane.md, anti-spoofing and VLAN tags).
    let Some(summary) = parse_into_scratch(&pkt, false) else {
        return xdp_action::XDP_DROP;
    };
    counters::record(DIR_INGRESS, summary);
    let Some(cfg) = cfg else {
        return xdp_action::XDP_PASS;
    };
    match decide::decide(decide::HOOK_XDP, ifindex, cfg, summary, len as u64) {
        verdict::ACCEPT => xdp_action::XDP_PASS,
        _ => xdp_action::XDP_DROP,
    }
}

/// TC egress: the interface's transmit side.
#[classifier]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's entry macros pass the context by value"
)]
fn sg_tc_egress(ctx: TcContext) -> i32 {
    tc(&ctx, DIR_EGRESS, decide::HOOK_TC_EGRESS)
}

/// TC ingress: the interface's receive side, where XDP is not used (attach
/// mode `tc`). Decides as XDP would (`decide::HOOK_TC_INGRESS`).
#[classifier]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's entry macros pass the context by value"
)]
fn sg_tc_ingress(ctx: TcContext) -> i32 {
    tc(&ctx, DIR_INGRESS, decide::HOOK_TC_INGRESS)
}

/// An XDP program that passes everything and does nothing else: the floor
/// `cargo xtask bench` measures against. Never attached by the agent.
#[xdp]
fn sg_bench_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// TC ingress beside XDP: drops a frame leaving an anti-spoofed NIC with a
/// VLAN tag beside its bytes, which XDP cannot see (`decide::tag_guard`).
/// Only for receive sides that XDP decides; where TC ingress decides
/// (`sg_tc_ingress`), that program sees the tag itself.
#[classifier]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's entry macros pass the context by value"
)]
fn sg_tc_tag_guard(ctx: TcContext) -> i32 {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: the context of a classifier is its __sk_buff.
    let (tagged_beside, ifindex) = unsafe { ((*skb).vlan_present != 0, (*skb).ifindex) };
    match decide::tag_guard(ifindex, tagged_beside) {
        verdict::ACCEPT => TC_ACT_UNSPEC,
        _ => TC_ACT_SHOT,
    }
}

/// A TC program that gives every packet a VLAN tag (id 100) beside its
/// bytes, as a VLAN device over a NIC with transmit offload does
/// (`bpf_skb_vlan_push`): lets tests send such frames on kernels without
/// VLAN devices. Never attached by the agent.
#[classifier]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's entry macros pass the context by value"
)]
fn sg_test_vlan_push(ctx: TcContext) -> i32 {
    // SAFETY: the context of a classifier is its __sk_buff; the helper
    // takes it, a TPID in network order and a TCI.
    let err = unsafe {
        aya_ebpf::helpers::generated::bpf_skb_vlan_push(
            ctx.as_ptr().cast(),
            0x8100_u16.to_be(),
            100,
        )
    };
    if err != 0 {
        return TC_ACT_SHOT;
    }
    TC_ACT_UNSPEC
}

/// A TC program's body: counted under `dir`, decided (and drops logged) as `hook`.
#[inline(always)]
fn tc(ctx: &TcContext, dir: u32, hook: u32) -> i32 {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: the context of a classifier is its __sk_buff.
    let ifindex = unsafe { (*skb).ifindex };
    let cfg = decide::binding(ifindex);
    if cfg.is_none() && !maps::test_flag(test_flags::PARSE_UNBOUND) {
        counters::not_bound(dir);
        return TC_ACT_UNSPEC;
    }
    let frame_len = ctx.len();
    // On TC the linear area can hold as little as the Ethernet header (seen with
    // packets from trafgen): pull the headers in before parsing, or every such
    // packet would look truncated. Only when needed: a pull can copy.
    let want = if frame_len < TC_PULL_LEN {
        frame_len
    } else {
        TC_PULL_LEN
    };
    if ctx.data_end() - ctx.data() < want as usize
        && let Err(err) = ctx.pull_data(want)
    {
        // Cold path (memory pressure): the parser then sees what is linear.
        warn!(ctx, "sg: bpf_skb_pull_data({}) failed: {}", want, err);
    }
    let pkt = Packet::new(ctx.data(), ctx.data_end(), frame_len as usize);
    // The receive path moves the outer tag out of the frame before TC
    // ingress runs (`skb_vlan_untag`), and a VLAN device over a NIC with
    // transmit offload hands TC egress an untagged frame with the tag beside
    // it: either way the frame is tagged.
    // SAFETY: the context of a classifier is its __sk_buff.
    let tagged_beside = unsafe { (*skb).vlan_present } != 0;
    let Some(summary) = parse_into_scratch(&pkt, tagged_beside) else {
        return TC_ACT_SHOT;
    };
    counters::record(dir, summary);
    let Some(cfg) = cfg else {
        return TC_ACT_UNSPEC;
    };
    match decide::decide(hook, ifindex, cfg, summary, u64::from(frame_len)) {
        verdict::ACCEPT => TC_ACT_UNSPEC,
        _ => TC_ACT_SHOT,
    }
}

/// Parses `pkt` into this CPU's scratch slot and hands back a reference the
/// compiler cannot see through (see `maps::SG_SCRATCH`). `None` only if the
/// per-CPU slot is missing, which the caller treats as a drop.
#[inline(always)]
fn parse_into_scratch(pkt: &Packet, tagged_beside: bool) -> Option<&'static parse::Summary> {
    let slot = maps::SG_SCRATCH.get_ptr_mut(maps::SCRATCH_PACKET)?;
    // SAFETY: this CPU's slot; nothing else runs on this CPU meanwhile.
    unsafe {
        parse::classify(pkt, &mut *slot);
        if tagged_beside {
            parse::mark_tagged_beside(&mut *slot);
        }
        Some(&*core::hint::black_box(slot))
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

//! sg data plane. Entry points are thin: each builds a [`Packet`] view for its
//! hook and hands it to the same parser and counters.
//!
//! For now every packet passes; the parser classifies it and the counters record
//! what was seen, per hook direction and per upper-layer protocol.
#![no_std]
#![no_main]
// Helpers that touch packet pointers must be inlined into the program: the
// verifier tracks packet bounds within one function, and BPF-to-BPF calls cost.
#![expect(
    clippy::inline_always,
    reason = "packet helpers must inline into the program"
)]

mod counters;
mod maps;
mod packet;
mod parse;

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::warn;
use sg_common::counter::{DIR_EGRESS, DIR_INGRESS};

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
    let pkt = Packet::new(ctx.data(), ctx.data_end(), ctx.data_end() - ctx.data());
    counters::record(DIR_INGRESS, &parse::classify(&pkt));
    xdp_action::XDP_PASS
}

/// TC egress: the interface's transmit side.
#[classifier]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's entry macros pass the context by value"
)]
fn sg_tc_egress(ctx: TcContext) -> i32 {
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
        warn!(&ctx, "sg: bpf_skb_pull_data({}) failed: {}", want, err);
    }
    let pkt = Packet::new(ctx.data(), ctx.data_end(), frame_len as usize);
    counters::record(DIR_EGRESS, &parse::classify(&pkt));
    TC_ACT_UNSPEC
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

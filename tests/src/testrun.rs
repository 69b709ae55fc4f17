//! Running a loaded program on one frame through `BPF_PROG_TEST_RUN`.

use aya::programs::{TestRun as _, TestRunOptions};
use sg_agent::dataplane::Dataplane;

/// What one run returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// The program's return value (an XDP action, or a TC action as `i32`).
    pub verdict: i32,
    /// Kernel-reported time per repetition.
    pub nanos: u64,
}

/// Which program to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    TcEgress,
    /// The receive side in attach mode `tc`.
    TcIngress,
}

impl Hook {
    /// Every program that decides packets.
    pub const ALL: [Self; 3] = [Self::Xdp, Self::TcEgress, Self::TcIngress];

    /// Whether the hook is an interface's receive side (XDP or TC ingress).
    pub fn receives(self) -> bool {
        self != Self::TcEgress
    }
}

/// `XDP_PASS`.
pub const XDP_PASS: i32 = 2;
/// `XDP_DROP`.
pub const XDP_DROP: i32 = 1;
/// `TC_ACT_UNSPEC`: "no verdict of ours; carry on" (tcx: next program).
pub const TC_ACT_UNSPEC: i32 = -1;
/// `TC_ACT_SHOT`.
pub const TC_ACT_SHOT: i32 = 2;

/// The kernel refuses test runs on frames shorter than an Ethernet header.
pub const MIN_FRAME: usize = 14;

/// Runs `hook`'s program on `frame`, `repeat` times.
pub fn run(dp: &mut Dataplane, hook: Hook, frame: &[u8], repeat: u32) -> anyhow::Result<Run> {
    run_on(dp, hook, frame, None, repeat)
}

/// Runs `hook`'s program on `frame`, `repeat` times, as if the frame arrived
/// on (XDP) or left through (TC) interface `ifindex` when one is given; it
/// must exist in the calling thread's network namespace.
pub fn run_on(
    dp: &mut Dataplane,
    hook: Hook,
    frame: &[u8],
    ifindex: Option<u32>,
    repeat: u32,
) -> anyhow::Result<Run> {
    let mut out = vec![0u8; frame.len() + 512];
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex }; struct __sk_buff has ifindex at byte 40.
    let ctx = ifindex.map(|idx| -> anyhow::Result<Vec<u8>> {
        Ok(match hook {
            Hook::Xdp => {
                let mut ctx = vec![0u8; 24];
                ctx[4..8].copy_from_slice(&u32::try_from(frame.len())?.to_ne_bytes());
                ctx[12..16].copy_from_slice(&idx.to_ne_bytes());
                ctx
            }
            Hook::TcEgress | Hook::TcIngress => {
                let mut ctx = vec![0u8; 44];
                ctx[40..44].copy_from_slice(&idx.to_ne_bytes());
                ctx
            }
        })
    });
    let ctx = ctx.transpose()?;
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: ctx.as_deref(),
        repeat,
        ..TestRunOptions::default()
    };
    let result = match hook {
        Hook::Xdp => dp.xdp()?.test_run(opts)?,
        Hook::TcEgress => dp.tc_egress()?.test_run(opts)?,
        Hook::TcIngress => dp.tc_ingress()?.test_run(opts)?,
    };
    #[expect(
        clippy::cast_possible_wrap,
        reason = "TC verdicts are i32; -1 arrives as u32"
    )]
    let verdict = result.return_value as i32;
    Ok(Run {
        verdict,
        nanos: u64::try_from(result.duration.as_nanos()).unwrap_or(u64::MAX),
    })
}

/// Runs once and returns the verdict.
pub fn verdict(dp: &mut Dataplane, hook: Hook, frame: &[u8]) -> anyhow::Result<i32> {
    Ok(run(dp, hook, frame, 1)?.verdict)
}

/// Runs `frame` once through `hook` and returns the verdict and the counter
/// increments it caused (indexed by counter, for the hook's direction).
pub fn counted(dp: &mut Dataplane, hook: Hook, frame: &[u8]) -> anyhow::Result<(i32, Vec<u64>)> {
    use sg_agent::dataplane::Counters;
    use sg_common::counter::{DIR_EGRESS, DIR_INGRESS, SLOTS};
    let dir = if hook.receives() {
        DIR_INGRESS
    } else {
        DIR_EGRESS
    };
    let before = Counters::read(dp.maps())?;
    let verdict = verdict(dp, hook, frame)?;
    let delta = Counters::read(dp.maps())?.since(&before);
    Ok((verdict, (0..SLOTS).map(|c| delta.get(dir, c)).collect()))
}

/// The verdict each hook gives a packet it lets through.
pub fn pass_verdict(hook: Hook) -> i32 {
    match hook {
        Hook::Xdp => XDP_PASS,
        Hook::TcEgress | Hook::TcIngress => TC_ACT_UNSPEC,
    }
}

/// Whether the kernel will run `hook`'s program on `frame` at all.
///
/// `BPF_PROG_TEST_RUN` refuses (EINVAL) frames under an Ethernet header, and
/// for skb programs also frames whose outer ethertype is IPv4 or IPv6 but
/// which are shorter than Ethernet plus the fixed IP header (measured on 6.18;
/// a VLAN-tagged frame is not checked). Such frames are tested on XDP only.
pub fn kernel_runs(hook: Hook, frame: &[u8]) -> bool {
    if frame.len() < MIN_FRAME {
        return false;
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    match (hook, ethertype) {
        (Hook::TcEgress | Hook::TcIngress, 0x0800) => frame.len() >= MIN_FRAME + 20,
        (Hook::TcEgress | Hook::TcIngress, 0x86DD) => frame.len() >= MIN_FRAME + 40,
        _ => true,
    }
}

/// Runs `hook`'s program once on `frame` on interface `ifindex` (see
/// [`run_on`]) and returns the verdict.
pub fn verdict_on(
    dp: &mut Dataplane,
    hook: Hook,
    frame: &[u8],
    ifindex: u32,
) -> anyhow::Result<i32> {
    Ok(run_on(dp, hook, frame, Some(ifindex), 1)?.verdict)
}

/// Whether a verdict returned by `hook` lets the packet through.
pub fn passes(hook: Hook, verdict: i32) -> bool {
    verdict == pass_verdict(hook)
}

/// Pins the calling thread to CPU 0, so per-CPU "last decision" reads are
/// about this thread's runs.
pub fn pin_to_cpu0() -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

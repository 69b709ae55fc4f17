//! `cargo xtask bench`: kernel-reported cost per packet through
//! `BPF_PROG_TEST_RUN`, for policies of 1 to 1,000 rules with the deciding
//! rule last in order (medians of 5 rounds of 1,000,000 repetitions, with min
//! and max), for a packet of an established session, and the time until a
//! new policy is in force. The tables are printed and written to
//! `target/bench.md`.
//!
//! The rule cases send a TCP ACK, which belongs to no session and starts
//! none, so every repetition is decided by the rules (a SYN would start a
//! session on its first run and ride on it after).

use std::{fmt::Write as _, net::IpAddr};

use anyhow::Context as _;
use sg_agent::{
    dataplane::Dataplane,
    enforce::{Enforcer, ifindex},
    policy::{BindingMode, GroupSpec, NicBinding, RuleSpec, State},
};
use sg_tests::{
    packet::{self, L3, L4, Spec},
    testrun::{self, Hook},
    topology::Netns,
};

const ROUNDS: usize = 5;
const REPEAT: u32 = 1_000_000;
const NIC: &str = "bench0";

/// A policy of `n` ingress rules on `NIC`; only the last in order (priority
/// 100) matches TCP to port 80 from `10.0.0.0/8` or `fd00::/8`; `deny` makes it a Drop.
fn policy(n: usize, deny: bool) -> anyhow::Result<State> {
    let mut s = State::with_seed(1);
    let g = s.create_group(GroupSpec::basic("bench"))?;
    let mut rules = Vec::new();
    for i in 0..n.saturating_sub(2) {
        let port = format!("{}/{}", 1000 + i, 1000 + i);
        let peer = if i % 2 == 0 {
            "192.0.2.0/24"
        } else {
            "2001:db8::/32"
        };
        rules.push(RuleSpec::from_text(
            "ingress", "Allow", "1", "TCP", &port, peer,
        )?);
    }
    let action = if deny { "Deny" } else { "Allow" };
    rules.push(RuleSpec::from_text(
        "ingress",
        action,
        "100",
        "TCP",
        "80/80",
        "10.0.0.0/8",
    )?);
    if n >= 2 {
        rules.push(RuleSpec::from_text(
            "ingress", action, "100", "TCP", "80/80", "fd00::/8",
        )?);
    }
    s.authorize_all(&g, rules)?;
    s.bind_nic(NicBinding::new(
        NIC,
        BindingMode::Local,
        vec!["10.1.0.1".parse::<IpAddr>()?, "fd00::1".parse()?],
        vec![g],
    ))?;
    Ok(s)
}

/// Kernel-reported ns per run of the XDP program on `frame` arriving on `ifindex`.
fn xdp_ns(dp: &mut Dataplane, frame: &[u8], ifindex: u32) -> anyhow::Result<f64> {
    let run = testrun::run_on(dp, Hook::Xdp, frame, Some(ifindex), REPEAT)?;
    #[expect(clippy::cast_precision_loss, reason = "nanoseconds, for display")]
    Ok(run.nanos as f64)
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

pub fn run() -> anyhow::Result<()> {
    let ns = Netns::new("bench")?;
    ns.ip(&[
        "link", "add", NIC, "type", "veth", "peer", "name", "bench0p",
    ])?;
    ns.ip(&["link", "set", NIC, "up"])?;
    let table = ns.exec(|| -> anyhow::Result<String> {
        let mut enforcer = Enforcer::new(Dataplane::load()?, None);
        let idx = ifindex(NIC).context("bench interface")?;
        let tcp = |flags| L4::Tcp {
            sport: 40000,
            dport: 80,
            flags,
        };
        let v4_to = |flags| packet::build(&Spec::new(L3::v4([10, 2, 3, 4], [10, 1, 0, 1]), tcp(flags))).bytes;
        let v4 = v4_to(0x10);
        let v6 = packet::build(&Spec::new(L3::v6("fd00::99", "fd00::1"), tcp(0x10))).bytes;
        let mut out = String::from(
            "| case | rules | ns/packet (median) | min | max |\n| --- | --- | --- | --- | --- |\n",
        );
        let cases: [(&str, usize, bool, &[u8]); 7] = [
            ("XDP ingress, IPv4, no session, allowed", 1, false, &v4),
            ("XDP ingress, IPv4, no session, allowed", 10, false, &v4),
            ("XDP ingress, IPv4, no session, allowed", 100, false, &v4),
            ("XDP ingress, IPv4, no session, allowed", 1000, false, &v4),
            ("XDP ingress, IPv6, no session, allowed", 1000, false, &v6),
            ("XDP ingress, IPv4, no session, denied", 1000, true, &v4),
            ("XDP ingress, IPv6, no session, denied", 1000, true, &v6),
        ];
        // The floor: an interface that is not bound (parser and counters only).
        let peer = ifindex("bench0p").context("bench peer")?;
        let floor = (0..ROUNDS)
            .map(|_| xdp_ns(enforcer.dataplane(), &v4, peer))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (med, min, max) = stats(floor);
        let _ = writeln!(
            out,
            "| XDP, interface not bound (parse and count only) | - | {med:.1} | {min:.1} | {max:.1} |"
        );
        for (what, n, deny, frame) in cases {
            enforcer.apply(&policy(n, deny)?)?;
            let runs = (0..ROUNDS)
                .map(|_| xdp_ns(enforcer.dataplane(), frame, idx))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (med, min, max) = stats(runs);
            let _ = writeln!(out, "| {what} | {n} | {med:.1} | {min:.1} | {max:.1} |");
        }
        // A packet of a live session: its SYN opened it, the rest ride on it.
        enforcer.apply(&policy(1000, false)?)?;
        xdp_ns(enforcer.dataplane(), &v4_to(0x02), idx)?;
        let runs = (0..ROUNDS)
            .map(|_| xdp_ns(enforcer.dataplane(), &v4, idx))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (med, min, max) = stats(runs);
        let _ = writeln!(
            out,
            "| XDP ingress, IPv4, packet of a live session | 1000 | {med:.1} | {min:.1} | {max:.1} |"
        );
        // Time from the call until the new policy is in force: compile,
        // write the inactive slot, switch. Alternating two policies so every
        // call really switches.
        let _ = writeln!(
            out,
            "\n| policy update (compile, write, switch) | rules | ms (median) | min | max |\n| --- | --- | --- | --- | --- |"
        );
        for n in [1, 1000] {
            let (a, b) = (policy(n, false)?, policy(n, true)?);
            let mut took = Vec::new();
            for round in 0..ROUNDS * 2 {
                let next = if round % 2 == 0 { &a } else { &b };
                let start = std::time::Instant::now();
                enforcer.apply(next)?;
                took.push(start.elapsed().as_secs_f64() * 1000.0);
            }
            let (med, min, max) = stats(took);
            let _ = writeln!(out, "| until in force | {n} | {med:.1} | {min:.1} | {max:.1} |");
        }
        Ok(out)
    })??;
    print!("{table}");
    let file = crate::target_dir().join("bench.md");
    std::fs::write(&file, &table)?;
    println!("written to {}", file.display());
    Ok(())
}

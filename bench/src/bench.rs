//! `sg-bench` (`cargo xtask bench`): what a packet costs the kernel, how
//! long a policy takes to be in force, and how much kernel memory the maps
//! take.
//!
//! - **Per packet**, kernel-reported through `BPF_PROG_TEST_RUN` (medians of
//!   5 rounds of 1,000,000 repetitions, with min and max): an empty XDP
//!   program (the floor), an interface not bound (looked up and passed), and on both
//!   the XDP ingress and the TC egress program: a packet of a live session, a
//!   packet without one decided by 1, 10, 100 and 1,000 rules (deciding rule
//!   last in order), and a denied one at 1,000; IPv4 and IPv6. The rule rows
//!   send a TCP ACK, which belongs to no session and starts none, so every
//!   repetition is decided by the rules.
//! - **New flows**, with the session insert: 5,000 distinct SYNs, one run
//!   each, median of the kernel-reported times (single runs carry the test
//!   runner's timer overhead: the empty program is measured the same way).
//! - **Updates**: time from `Reconciler::apply` until the new policy is in
//!   force (compile, write the inactive slot, switch), 1 and 1,000 rules;
//!   and through the daemon's API: an `apply` of the whole state from the
//!   call to its answer, which comes once the change is in force and
//!   committed to the store.
//! - **Memory**: kernel memory of every map for 1, 10 and 100 NICs with
//!   1,000 rules each, as the kernel accounts it.
//!
//! - **Fleet** (unless `--per-packet-only` or `--no-fleet`): `crate::fleet`.
//! - **Throughput** (unless `--per-packet-only` or `--fleet-only`):
//!   `crate::throughput`.
//!
//! Runs in a release build (it re-runs itself so). Tables are printed and
//! written to `target/bench.md`; every target is printed with its measured
//! ratio, met or missed.

use std::{fmt::Write as _, net::IpAddr};

use anyhow::Context as _;

use crate::report::stats;
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use sg_agent::{
    dataplane::{Dataplane, Limits, session_table::Filter},
    iface::index as ifindex,
    reconcile::Reconciler,
};
use sg_common::maps::PROG_BENCH_FLOOR;
use sg_policy::{BindingMode, GroupSpec, NicBinding, RuleSpec, State};
use sg_tests::{
    packet::{self, L3, L4, Spec},
    testrun::{self, Hook},
    topology::Netns,
    workspace::{cargo, target_dir},
};

const ROUNDS: usize = 5;
const REPEAT: u32 = 1_000_000;
const NEW_FLOWS: u16 = 5_000;
const NIC: &str = "bench0";
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// A policy of `n` rules in direction `dir` on every NIC in `nics`; only the
/// last in order (priority 100) matches TCP to port 80 with peer
/// `10.0.0.0/8` or `fd00::/8`; `deny` makes it a Drop.
fn policy(n: usize, deny: bool, dir: &str, nics: &[String]) -> anyhow::Result<State> {
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
        rules.push(RuleSpec::from_text(dir, "Allow", "1", "TCP", &port, peer)?);
    }
    let action = if deny { "Deny" } else { "Allow" };
    rules.push(RuleSpec::from_text(
        dir,
        action,
        "100",
        "TCP",
        "80/80",
        "10.0.0.0/8",
    )?);
    if n >= 2 {
        rules.push(RuleSpec::from_text(
            dir, action, "100", "TCP", "80/80", "fd00::/8",
        )?);
    }
    s.authorize_all(&g, rules)?;
    for (i, nic) in nics.iter().enumerate() {
        let i = u8::try_from(i % 250)?;
        s.bind_nic(NicBinding::new(
            nic,
            BindingMode::Local,
            vec![
                format!("10.1.{i}.1").parse::<IpAddr>()?,
                format!("fd00::{i}:1").parse()?,
            ],
            vec![g.clone()],
        ))?;
    }
    Ok(s)
}

/// The bench NIC's frames: TCP between the NIC (`10.1.0.1`, `fd00::1`) and a
/// peer (`10.2.3.4`, `fd00::99`) towards port 80, in through the receive
/// side (XDP, TC ingress) or out through TC egress, with `flags` and source
/// port `sport`.
fn frame(hook: Hook, v6: bool, flags: u8, sport: u16) -> Vec<u8> {
    let l4 = L4::Tcp {
        sport,
        dport: 80,
        flags,
    };
    let l3 = match (hook.receives(), v6) {
        (true, false) => L3::v4([10, 2, 3, 4], [10, 1, 0, 1]),
        (true, true) => L3::v6("fd00::99", "fd00::1"),
        (false, false) => L3::v4([10, 1, 0, 1], [10, 2, 3, 4]),
        (false, true) => L3::v6("fd00::1", "fd00::99"),
    };
    packet::build(&Spec::new(l3, l4)).bytes
}

/// Kernel-reported ns per run of `hook`'s program on `frame` from `ifindex`.
fn ns_per_run(
    dp: &mut Dataplane,
    hook: Hook,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
) -> anyhow::Result<f64> {
    let run = testrun::run_on(dp, hook, frame, Some(ifindex), repeat)?;
    #[expect(clippy::cast_precision_loss, reason = "nanoseconds, for display")]
    Ok(run.nanos as f64)
}

/// Kernel-reported ns per run of the empty XDP program.
fn floor_ns(dp: &mut Dataplane, frame: &[u8], repeat: u32) -> anyhow::Result<f64> {
    let prog: &mut Xdp = dp
        .ebpf_mut()
        .program_mut(PROG_BENCH_FLOOR)
        .context("the floor program")?
        .try_into()?;
    if prog.fd().is_err() {
        prog.load()?;
    }
    let mut out = vec![0u8; frame.len() + 512];
    let run = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat,
        ..TestRunOptions::default()
    })?;
    #[expect(clippy::cast_precision_loss, reason = "nanoseconds, for display")]
    Ok(run.duration.as_nanos() as f64)
}

/// `f` run `ROUNDS` times: (median, min, max).
fn rounds(mut f: impl FnMut() -> anyhow::Result<f64>) -> anyhow::Result<(f64, f64, f64)> {
    Ok(stats(
        (0..ROUNDS).map(|_| f()).collect::<anyhow::Result<_>>()?,
    ))
}

/// Which parts of the benchmark run.
#[derive(Clone, Copy)]
pub struct Parts {
    /// Per packet, new flows, updates, memory.
    pub per_packet: bool,
    /// The fleet: `crate::fleet`.
    pub fleet: bool,
    /// `crate::throughput`.
    pub throughput: bool,
}

/// Runs `parts` in a release build (re-running itself so), prints their
/// tables and writes them to `target/bench.md` (`target/fleet.md` for the
/// fleet alone).
pub fn run(parts: Parts) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        // Compile and map-writing times mean nothing in a debug build.
        let mut args = vec![
            "run",
            "--release",
            "--quiet",
            "--locked",
            "--package",
            "sg-bench",
            "--",
        ];
        match (parts.per_packet, parts.fleet, parts.throughput) {
            (true, false, false) => args.push("--per-packet-only"),
            (false, true, false) => args.push("--fleet-only"),
            (true, false, true) => args.push("--no-fleet"),
            _ => {}
        }
        return cargo(&args, &[]);
    }
    let mut out = String::new();
    if parts.per_packet {
        let ns = Netns::new("bench")?;
        ns.ip(&[
            "link", "add", NIC, "type", "veth", "peer", "name", "bench0p",
        ])?;
        ns.ip(&["link", "set", NIC, "up"])?;
        out.push_str(&ns.exec(per_packet)??);
        out.push_str(&through_api(&ns)?);
        out.push_str(&memory(&ns)?);
        // On the veths `memory` made.
        out.push_str(&crate::host_scale::run(&ns)?);
        out.push_str(&crate::host_scale::large(&ns)?);
        drop(ns);
        print!("{out}");
    }
    if parts.fleet {
        let fleet = crate::fleet::tables(&agent_binary()?)?;
        print!("{fleet}");
        out.push_str(&fleet);
    }
    if parts.throughput {
        let through = crate::throughput::tables()?;
        print!("\n{through}");
        out.push('\n');
        out.push_str(&through);
    }
    let name = if parts.per_packet {
        "bench.md"
    } else {
        "fleet.md"
    };
    let file = target_dir().join(name);
    std::fs::write(&file, &out)?;
    println!("written to {}", file.display());
    Ok(())
}

/// The agent's binary, built in release.
fn agent_binary() -> anyhow::Result<std::path::PathBuf> {
    cargo(
        &[
            "build",
            "--release",
            "--quiet",
            "--locked",
            "--package",
            "sg-agent",
            "--bin",
            "sg-agent",
        ],
        &[],
    )?;
    Ok(target_dir().join("release/sg-agent"))
}

/// What the targets are checked against, gathered as the tables are made.
#[derive(Default)]
struct Figures {
    floor: f64,
    /// A frame of an interface no binding names.
    not_bound: f64,
    /// A packet of a live session at 1,000 rules, by program and family.
    sessions: Vec<(String, f64)>,
    /// XDP, IPv4, no session, allowed: by rule count.
    rules: std::collections::HashMap<usize, f64>,
    /// New flows with session insert: by rule count.
    new_flow: std::collections::HashMap<usize, f64>,
    in_force_1000: f64,
}

/// Per-packet costs, new flows, update latency and the targets: one table each.
fn per_packet() -> anyhow::Result<String> {
    let mut reconciler = Reconciler::new(Dataplane::load()?, None);
    let mut fig = Figures::default();
    let mut out = programs(&mut reconciler, &mut fig)?;
    out.push_str(&new_flows(&mut reconciler, &mut fig)?);
    out.push_str(&updates(&mut reconciler, &mut fig)?);
    let (r10, r1000) = (fig.rules[&10], fig.rules[&1000]);
    let (n10, n1000) = (fig.new_flow[&10], fig.new_flow[&1000]);
    let (floor, not_bound) = (fig.floor, fig.not_bound);
    let _ = writeln!(
        out,
        "\n| target | measured | result |\n| --- | --- | --- |\n\
         | no-session cost at 1,000 rules ≤ 1.5 × at 10 rules | {:.2} × ({r1000:.0} / {r10:.0} ns) | {} |\n\
         | new-flow cost (with session insert) at 1,000 rules ≤ 1.5 × at 10 rules | {:.2} × ({n1000:.0} / {n10:.0} ns) | {} |",
        r1000 / r10,
        crate::report::verdict(r1000 <= 1.5 * r10),
        n1000 / n10,
        crate::report::verdict(n1000 <= 1.5 * n10),
    );
    for (what, session) in &fig.sessions {
        let _ = writeln!(
            out,
            "| live session, {what}, 1,000 rules ≤ empty-program floor + 40 ns | floor + {:.0} ns ({session:.0} / {floor:.0} ns) | {} |",
            session - floor,
            crate::report::verdict(*session <= floor + 40.0),
        );
    }
    let _ = writeln!(
        out,
        "| interface not bound ≤ empty-program floor + 10 ns | floor + {:.0} ns ({not_bound:.0} / {floor:.0} ns) | {} |\n\
         | new flow with the session insert ≤ 500 ns, at 10 and at 1,000 rules | {n10:.0} and {n1000:.0} ns | {} |\n\
         | packet decided by the rules, no session, 1,000 rules ≤ 250 ns | {r1000:.0} ns | {} |\n\
         | 1,000-rule policy in force within 50 ms of the call | {:.1} ms | {} |",
        not_bound - floor,
        crate::report::verdict(not_bound <= floor + 10.0),
        crate::report::verdict(n10 <= 500.0 && n1000 <= 500.0),
        crate::report::verdict(r1000 <= 250.0),
        fig.in_force_1000,
        crate::report::verdict(fig.in_force_1000 <= 50.0),
    );
    Ok(out)
}

/// The per-program table: floor, an interface not bound, then each case on both programs.
fn programs(reconciler: &mut Reconciler, fig: &mut Figures) -> anyhow::Result<String> {
    let idx = ifindex(NIC).context("bench interface")?;
    let peer = ifindex("bench0p").context("bench peer")?;
    let nics = [NIC.to_owned()];
    let mut out = String::from(
        "| program | case | rules | ns/packet (median) | min | max |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    let v4_in = frame(Hook::Xdp, false, TCP_ACK, 40000);
    let (floor, fmin, fmax) = rounds(|| floor_ns(reconciler.dataplane(), &v4_in, REPEAT))?;
    fig.floor = floor;
    let _ = writeln!(
        out,
        "| XDP | empty program (the floor) | - | {floor:.1} | {fmin:.1} | {fmax:.1} |"
    );
    let (med, min, max) =
        rounds(|| ns_per_run(reconciler.dataplane(), Hook::Xdp, &v4_in, peer, REPEAT))?;
    fig.not_bound = med;
    let _ = writeln!(
        out,
        "| XDP | interface not bound (looked up, passed, counted) | - | {med:.1} | {min:.1} | {max:.1} |"
    );
    for (hook, prog, dir) in [
        (Hook::Xdp, "XDP ingress", "ingress"),
        (Hook::TcEgress, "TC egress", "egress"),
    ] {
        let cases: [(&str, usize, bool, bool); 9] = [
            ("IPv4, packet of a live session", 1000, false, false),
            ("IPv6, packet of a live session", 1000, false, true),
            ("IPv4, no session, allowed", 1, false, false),
            ("IPv4, no session, allowed", 10, false, false),
            ("IPv4, no session, allowed", 100, false, false),
            ("IPv4, no session, allowed", 1000, false, false),
            ("IPv6, no session, allowed", 1000, false, true),
            ("IPv4, no session, denied", 1000, true, false),
            ("IPv6, no session, denied", 1000, true, true),
        ];
        for (what, n, deny, v6) in cases {
            reconciler.reconcile(&policy(n, deny, dir, &nics)?)?;
            let dp = reconciler.dataplane();
            dp.maps_mut().flush_sessions(&Filter::default());
            let live = what.contains("live session");
            if live {
                // Its SYN opens the session; the ACKs measured ride on it.
                ns_per_run(dp, hook, &frame(hook, v6, TCP_SYN, 40000), idx, 1)?;
            }
            let f = frame(hook, v6, TCP_ACK, 40000);
            let (med, min, max) = rounds(|| ns_per_run(dp, hook, &f, idx, REPEAT))?;
            let _ = writeln!(
                out,
                "| {prog} | {what} | {n} | {med:.1} | {min:.1} | {max:.1} |"
            );
            if live {
                let family = if v6 { "IPv6" } else { "IPv4" };
                fig.sessions.push((format!("{prog}, {family}"), med));
            } else if hook == Hook::Xdp && !v6 && !deny {
                fig.rules.insert(n, med);
            }
        }
    }
    Ok(out)
}

/// New flows, session insert included: distinct SYNs, one run each.
fn new_flows(reconciler: &mut Reconciler, fig: &mut Figures) -> anyhow::Result<String> {
    let idx = ifindex(NIC).context("bench interface")?;
    let nics = [NIC.to_owned()];
    let mut out = format!(
        "\n| new flows (distinct SYNs, one run each, XDP ingress, IPv4) | rules | ns/packet (median of {NEW_FLOWS}) |\n| --- | --- | --- |\n"
    );
    let v4_in = frame(Hook::Xdp, false, TCP_ACK, 40000);
    let single_floor = {
        let runs = (0..NEW_FLOWS)
            .map(|_| floor_ns(reconciler.dataplane(), &v4_in, 1))
            .collect::<anyhow::Result<Vec<_>>>()?;
        stats(runs).0
    };
    let _ = writeln!(
        out,
        "| empty program, single runs | - | {single_floor:.1} |"
    );
    for n in [10, 1000] {
        reconciler.reconcile(&policy(n, false, "ingress", &nics)?)?;
        let dp = reconciler.dataplane();
        dp.maps_mut().flush_sessions(&Filter::default());
        let runs = (0..NEW_FLOWS)
            .map(|i| {
                let syn = frame(Hook::Xdp, false, TCP_SYN, 10_000 + i);
                ns_per_run(dp, Hook::Xdp, &syn, idx, 1)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let med = stats(runs).0;
        fig.new_flow.insert(n, med);
        let _ = writeln!(out, "| new flow, session inserted | {n} | {med:.1} |");
    }
    Ok(out)
}

/// Time from the call until the new policy is in force. Alternating two
/// policies so every call really switches.
fn updates(reconciler: &mut Reconciler, fig: &mut Figures) -> anyhow::Result<String> {
    let nics = [NIC.to_owned()];
    let mut out = String::from(
        "\n| policy update (compile, write, switch) | rules | ms (median) | min | max |\n| --- | --- | --- | --- | --- |\n",
    );
    for n in [1, 1000] {
        let (a, b) = (
            policy(n, false, "ingress", &nics)?,
            policy(n, true, "ingress", &nics)?,
        );
        let mut took = Vec::new();
        for round in 0..ROUNDS * 2 {
            let next = if round % 2 == 0 { &a } else { &b };
            let start = std::time::Instant::now();
            reconciler.reconcile(next)?;
            took.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        let (med, min, max) = stats(took);
        fig.in_force_1000 = med;
        let _ = writeln!(
            out,
            "| until in force | {n} | {med:.1} | {min:.1} | {max:.1} |"
        );
    }
    Ok(out)
}

/// Time from an API call to its answer for a whole-state `apply` (parse,
/// diff, compile, write, switch, commit to SQLite with fsync): what an
/// operator waits for. Alternating two policies so every call changes both
/// the data plane and the store.
fn through_api(ns: &Netns) -> anyhow::Result<String> {
    let bin = agent_binary()?;
    let daemon = sg_tests::daemon::Daemon::start(&bin, ns.name(), &[])?;
    let mut client = sg_agent::api::Client::connect(&daemon.socket)?;
    let nics = [NIC.to_owned()];
    let mut out = String::from(
        "\n| through the API: `apply` until answered (in force and durable) | rules | ms (median) | min | max |\n| --- | --- | --- | --- | --- |\n",
    );
    for n in [1, 1000] {
        let docs = [false, true].map(|deny| {
            policy(n, deny, "ingress", &nics).map(|s| {
                serde_json::to_string(&sg_policy::apply::document_of(&s))
                    .expect("a document serialises")
            })
        });
        let [a, b] = docs;
        let (a, b) = (a?, b?);
        let mut took = Vec::new();
        for round in 0..ROUNDS * 2 {
            let document = if round % 2 == 0 { &a } else { &b }.clone();
            let start = std::time::Instant::now();
            client.call(&sg_agent::api::Request::State(
                sg_agent::api::StateRequest::Apply {
                    document,
                    dry_run: false,
                    allow_delete_all: false,
                },
            ))?;
            took.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        let (med, min, max) = stats(took);
        let _ = writeln!(
            out,
            "| `sg-agent apply` | {n} | {med:.1} | {min:.1} | {max:.1} |"
        );
    }
    Ok(out)
}

/// Kernel memory of every map with 1, 10 and 100 NICs of 1,000 rules each.
/// The most NICs a data plane binds (`MAX_NICS`).
const MOST: usize = 128;

/// Veth pairs `m0`…`m{MOST - 1}` (and their peers) in `ns`, up.
pub(crate) fn links(ns: &Netns) -> anyhow::Result<()> {
    let mut batch = String::new();
    for i in 0..MOST {
        let _ = writeln!(batch, "link add m{i} type veth peer name m{i}p");
        let _ = writeln!(batch, "link set m{i} up");
    }
    let file = target_dir().join("bench-links.batch");
    std::fs::write(&file, batch)?;
    ns.ip(&["-batch", file.to_str().context("path")?])?;
    Ok(())
}

fn memory(ns: &Netns) -> anyhow::Result<String> {
    /// The large host the per-CPU maps are computed for.
    const LARGE: u64 = 64;
    links(ns)?;
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let cpus = u64::try_from(cpus)?;
    let mut out = format!(
        "\n| kernel memory of all maps | NICs × rules | MiB ({cpus} CPUs, measured) | MiB at {LARGE} CPUs (computed) | largest maps ({cpus} CPUs) |\n| --- | --- | --- | --- | --- |\n"
    );
    let mib = |b: u64| {
        #[expect(clippy::cast_precision_loss, reason = "for display")]
        let m = b as f64 / 1_048_576.0;
        m
    };
    let mut largest_host = 0.0;
    for n in [1, 10, 100, MOST] {
        let nics: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        let (row, at_large) = ns.exec(|| -> anyhow::Result<(String, f64)> {
            // Sized for exactly these NICs: the per-rule counters cost per CPU.
            let limits = Limits {
                nics: u32::try_from(n)?,
                ..Limits::default()
            };
            let mut reconciler = Reconciler::new(Dataplane::load_with(limits)?, None);
            reconciler.reconcile(&policy(1000, false, "ingress", &nics)?)?;
            let mut maps = reconciler.dataplane().map_memory()?;
            maps.sort_by_key(|m| std::cmp::Reverse(m.bytes));
            let total: u64 = maps.iter().map(|m| m.bytes).sum();
            // A per-CPU map's copies are nearly all of it: scaled by CPUs.
            let large: u64 = maps
                .iter()
                .map(|m| {
                    if m.per_cpu {
                        m.bytes / cpus * LARGE
                    } else {
                        m.bytes
                    }
                })
                .sum();
            let largest = maps
                .iter()
                .take(4)
                .map(|m| format!("{} {:.1}", m.name, mib(m.bytes)))
                .collect::<Vec<_>>()
                .join(", ");
            Ok((
                format!(
                    "| all maps | {n} × 1,000 | {:.1} | {:.1} | {largest} |",
                    mib(total),
                    mib(large)
                ),
                mib(large),
            ))
        })??;
        let _ = writeln!(out, "{row}");
        largest_host = at_large;
    }
    let _ = writeln!(
        out,
        "\n| target | measured | result |\n| --- | --- | --- |\n\
         | map memory, {MOST} NICs × 1,000 rules, at {LARGE} CPUs ≤ 256 MiB | {largest_host:.1} MiB (computed from the {cpus}-CPU figures) | {} |",
        crate::report::verdict(largest_host <= 256.0),
    );
    Ok(out)
}

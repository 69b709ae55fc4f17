//! `sg-agent attach`: load the data plane, attach it, enforce a policy (or
//! pass everything), wait for a signal, detach, report.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use sg_agent::{
    dataplane::{AttachMode, Counters, Dataplane, Limits},
    netns,
    reconcile::Reconciler,
};
use sg_common::reason;
use sg_policy::State;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

#[derive(clap::Args)]
pub struct Args {
    /// Interface to attach to, passing every packet (without --policy; its
    /// frames are then counted as `not_bound`, unparsed).
    #[arg(long, required_unless_present = "policy")]
    iface: Option<String>,
    /// Policy to enforce: a JSON document of the whole state (groups, rules,
    /// lists, NIC bindings). Every bound NIC whose interface exists here is
    /// attached. SIGHUP reloads the file and switches without a gap.
    #[arg(long, conflicts_with = "iface")]
    policy: Option<PathBuf>,
    /// Network namespace of the interfaces: a name made by `ip netns add`, or
    /// a path such as /proc/PID/ns/net. Default: the agent's own.
    #[arg(long)]
    netns: Option<String>,
    /// How the receive side is attached: XDP (auto, native, generic), or `tc`
    /// for a TC ingress program instead of XDP.
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    xdp_mode: XdpModeArg,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Sessions the table holds; when full, the least recently used goes.
    #[arg(long, default_value_t = sg_common::maps::SESSION_ENTRIES)]
    session_capacity: u32,
    /// NICs this agent can bind, 1 to 128 (each costs 64 KiB of per-rule
    /// counters per CPU).
    #[arg(long, default_value_t = sg_common::policy::DEFAULT_NICS)]
    max_nics: u32,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum XdpModeArg {
    Auto,
    Native,
    Generic,
    Tc,
}

impl From<XdpModeArg> for AttachMode {
    fn from(m: XdpModeArg) -> Self {
        match m {
            XdpModeArg::Auto => Self::Auto,
            XdpModeArg::Native => Self::Native,
            XdpModeArg::Generic => Self::Generic,
            XdpModeArg::Tc => Self::Tc,
        }
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    // Enter the namespace before any thread exists, so the runtime's threads
    // (and the interface lookups) all live in it.
    if let Some(ns) = &args.netns {
        netns::enter_named_or_path(ns)
            .with_context(|| format!("entering network namespace {ns}"))?;
    }
    // One agent per namespace, `attach` included: a daemon or another
    // attach serving it refuses to share it (see `dataplane::NamespaceLock`).
    let lock = sg_agent::dataplane::NamespaceLock::acquire(&sg_agent::dataplane::pin_root(
        netns::current_inode()?,
    ))?;
    let mode = AttachMode::from(args.xdp_mode);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(serve(args, mode));
    // Nothing of attach is pinned: its (empty) directory goes with it.
    lock.remove_if_empty();
    result
}

fn load_policy(path: &Path) -> anyhow::Result<State> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let given: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let state: State = serde_json::from_value(given.clone())
        .with_context(|| format!("parsing {}", path.display()))?;
    // Every field of a state serialises: a key that does not come back is
    // one the state did not read (a misspelt field, taken as absent).
    let known = serde_json::to_value(&state)?;
    if let Some(field) = sg_agent::api::unknown_field(&given, &known) {
        anyhow::bail!("parsing {}: unknown field `{field}`", path.display());
    }
    // A file the user gives is all new input: every check of a change.
    sg_policy::validate::validate_new(&state)
        .with_context(|| format!("validating {}", path.display()))?;
    Ok(state)
}

async fn serve(args: &Args, mode: AttachMode) -> anyhow::Result<()> {
    let limits = Limits {
        sessions: args.session_capacity,
        nics: args.max_nics,
    };
    let mut dp = Dataplane::load_with(limits).context("loading the data plane")?;
    // The programs log only on cold error paths; forward those records to our log.
    let logger = aya_log::EbpfLogger::init(dp.ebpf_mut()).ok();
    let mut logs = match logger {
        // SAFETY: the logger owns its ring buffer fd and moves into the AsyncFd,
        // which deregisters it before the fd is closed on drop.
        Some(l) => {
            Some(unsafe { AsyncFd::register_with_interest(l, tokio::io::Interest::READABLE)? })
        }
        None => None,
    };
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut reconciler = Reconciler::new(dp, Some(mode));
    let mut state = None;
    match (&args.iface, &args.policy) {
        (Some(iface), _) => {
            reconciler
                .dataplane()
                .attach(iface, mode)
                .with_context(|| format!("attaching to {iface}"))?;
            log::info!(
                "attached to {iface} (program ids: {}); SIGINT or SIGTERM detaches",
                program_ids(reconciler.dataplane())
            );
        }
        (None, Some(path)) => {
            let s = load_policy(path)?;
            let report = reconciler.reconcile(&s).context("enforcing the policy")?;
            if report.installed.is_empty() {
                bail!(
                    "no NIC of {} is present here (absent: {:?})",
                    path.display(),
                    report.absent
                );
            }
            log::info!(
                "enforcing {} on {:?} (program ids: {}); absent: {:?}; attached to {}; SIGHUP reloads, SIGINT or SIGTERM detaches",
                path.display(),
                report.installed,
                program_ids(reconciler.dataplane()),
                report.absent,
                report
                    .installed
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            state = Some(s);
        }
        (None, None) => unreachable!("clap requires one"),
    }
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => {
                let Some(path) = &args.policy else { continue };
                match load_policy(path).and_then(|s| Ok((reconciler.reconcile(&s)?, s))) {
                    Ok((report, s)) => {
                        log::info!("reloaded {}: {report:?}", path.display());
                        state = Some(s);
                    }
                    // A bad file changes nothing: the policy in force stays.
                    Err(e) => log::error!("reload refused, policy unchanged: {e:#}"),
                }
            }
            ready = async { logs.as_mut().unwrap().readable_mut().await }, if logs.is_some() => {
                let mut guard = ready?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }
    }
    let report = report(&mut reconciler, state.as_ref())?;
    reconciler.dataplane().detach().context("detaching")?;
    log::info!("detached");
    if args.json {
        println!("{}", report.json);
    } else {
        print!("{}", report.text);
    }
    Ok(())
}

/// The loaded programs' ids, as `xdp N, tc ingress M, tc egress K`.
fn program_ids(dp: &mut Dataplane) -> String {
    dp.program_ids()
        .iter()
        .map(|(name, id)| format!("{name} {id}"))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Report {
    json: serde_json::Value,
    text: String,
}

/// Packet counters, and per NIC its rule hits and decisions by reason.
fn report(reconciler: &mut Reconciler, state: Option<&State>) -> anyhow::Result<Report> {
    use std::fmt::Write as _;
    let counters = Counters::read(reconciler.dataplane().maps())?;
    let mut json = serde_json::to_value(counters.by_direction())?;
    let mut text = counters.table();
    let mut nics = serde_json::Map::new();
    for name in state
        .map(|s| s.nics.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let dp = reconciler.dataplane();
        if dp.nic_id(&name).is_none() {
            continue;
        }
        let dirs = ["ingress", "egress"];
        let hits = dp.rule_hits(&name)?;
        let reasons = dp.reason_counts(&name)?;
        let _ = writeln!(
            text,
            "\n{name}: rule hits\n{:<8} {:<40} {:>10} {:>12}",
            "dir", "rule", "packets", "bytes"
        );
        let mut rules = Vec::new();
        for h in &hits {
            let rank = match &h.rank {
                sg_policy::compile::Rank::Rule(id) => id.to_string(),
                sg_policy::compile::Rank::IntraGroup(g) => format!("default: intra-group {g}"),
            };
            let _ = writeln!(
                text,
                "{:<8} {rank:<40} {:>10} {:>12}",
                dirs[h.dir as usize], h.packets, h.bytes
            );
            rules.push(serde_json::json!({"dir": dirs[h.dir as usize], "rule": rank, "packets": h.packets, "bytes": h.bytes}));
        }
        let _ = writeln!(
            text,
            "{name}: decisions by reason\n{:<8} {:<28} {:>10}",
            "dir", "reason", "packets"
        );
        let mut by_reason = Vec::new();
        for (dir, r, n) in reasons {
            let rname = reason::NAMES.get(r as usize).copied().unwrap_or("?");
            let _ = writeln!(text, "{:<8} {rname:<28} {n:>10}", dirs[dir as usize]);
            by_reason.push(
                serde_json::json!({"dir": dirs[dir as usize], "reason": rname, "packets": n}),
            );
        }
        nics.insert(
            name,
            serde_json::json!({"rules": rules, "reasons": by_reason}),
        );
    }
    json["nics"] = serde_json::Value::Object(nics);
    let events = reconciler.dataplane().maps().session_events()?;
    let _ = writeln!(text, "\nsessions");
    let mut by_event = serde_json::Map::new();
    for (name, n) in events {
        let _ = writeln!(text, "{name:<28} {n:>10}");
        by_event.insert(name.to_owned(), n.into());
    }
    json["sessions"] = serde_json::Value::Object(by_event);
    Ok(Report { json, text })
}

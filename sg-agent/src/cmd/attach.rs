//! `sg-agent attach`: load, attach, wait for a signal, detach, report.

use std::path::PathBuf;

use anyhow::Context as _;
use sg_agent::{
    dataplane::{AttachMode, Counters, Dataplane},
    netns,
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

#[derive(clap::Args)]
pub struct Args {
    /// Interface to attach to.
    #[arg(long)]
    iface: String,
    /// Network namespace of the interface: a name made by `ip netns add`, or a
    /// path such as /proc/PID/ns/net. Default: the agent's own.
    #[arg(long)]
    netns: Option<String>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    xdp_mode: XdpModeArg,
    /// Print the counters as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum XdpModeArg {
    Auto,
    Native,
    Generic,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    // Enter the namespace before any thread exists, so the runtime's threads
    // (and the interface lookup) all live in it.
    if let Some(ns) = &args.netns {
        let path = if ns.contains('/') {
            PathBuf::from(ns)
        } else {
            netns::named(ns)
        };
        netns::enter(&path).with_context(|| format!("entering network namespace {ns}"))?;
    }
    let mode = match args.xdp_mode {
        XdpModeArg::Auto => AttachMode::Auto,
        XdpModeArg::Native => AttachMode::Native,
        XdpModeArg::Generic => AttachMode::Generic,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args, mode))
}

async fn serve(args: &Args, mode: AttachMode) -> anyhow::Result<()> {
    let mut dp = Dataplane::load().context("loading the data plane")?;
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
    dp.attach(&args.iface, mode)
        .with_context(|| format!("attaching to {}", args.iface))?;
    let xdp_id = dp.xdp()?.info()?.id();
    let tc_id = dp.tc_egress()?.info()?.id();
    log::info!(
        "attached to {} (program ids: xdp {xdp_id}, tc egress {tc_id}); SIGINT or SIGTERM detaches",
        args.iface
    );
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            ready = async { logs.as_mut().unwrap().readable_mut().await }, if logs.is_some() => {
                let mut guard = ready?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }
    }
    let counters = Counters::read(&dp)?;
    dp.detach().context("detaching")?;
    log::info!("detached from {}", args.iface);
    if args.json {
        println!("{}", counters.to_json());
    } else {
        print!("{}", counters.table());
    }
    Ok(())
}

//! `cargo xtask demo`: the agent on one end of a veth pair, probes both ways.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::{IpAddr, SocketAddr},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use sg_tests::{
    probe::{self, Outcome, Servers},
    topology::{Host, Pair},
};

pub fn run() -> anyhow::Result<()> {
    crate::cargo(
        &[
            "build",
            "--locked",
            "--package",
            "sg-agent",
            "--bin",
            "sg-agent",
        ],
        &[],
    )?;
    let agent_bin = crate::target_dir().join("debug/sg-agent");

    let pair = Pair::new().context("creating the namespaces")?;
    println!(
        "namespaces: {} ({}, {}) <-> {} ({}, {})",
        pair.a.ns.name(),
        pair.a.v4,
        pair.a.v6,
        pair.b.ns.name(),
        pair.b.v4,
        pair.b.v6
    );
    let servers_a = Servers::start(&pair.a.ns)?;
    let servers_b = Servers::start(&pair.b.ns)?;

    let (mut agent, rx) = start_agent(&agent_bin, &pair.b)?;

    println!("\n| probe | from | to | result |\n| --- | --- | --- | --- |");
    let mut all = true;
    for (from, to, servers) in [
        (&pair.a, &pair.b, &servers_b),
        (&pair.b, &pair.a, &servers_a),
    ] {
        for (kind, outcome, target) in probes(from, to, servers) {
            all &= outcome.allowed();
            println!("| {kind} | {} | {target} | {outcome} |", from.ns.name());
        }
    }

    let pid = i32::try_from(agent.id())?;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let mut out = String::new();
    agent
        .stdout
        .take()
        .context("agent stdout")?
        .read_to_string(&mut out)?;
    let status = agent.wait()?;
    while let Ok(line) = rx.try_recv() {
        println!("agent: {line}");
    }
    if !status.success() {
        bail!("the agent exited {status}");
    }
    let counters: serde_json::Value = serde_json::from_str(&out).context("agent counters")?;
    println!(
        "\ncounters on {} (ingress = received, egress = sent):",
        pair.b.ifname
    );
    println!("| counter | ingress | egress |\n| --- | --- | --- |");
    if let Some(ingress) = counters["ingress"].as_object() {
        for (name, rx) in ingress {
            let tx = &counters["egress"][name];
            if rx.as_u64().unwrap_or(0) + tx.as_u64().unwrap_or(0) > 0 {
                println!("| {name} | {rx} | {tx} |");
            }
        }
    }
    let link = pair.b.link_details()?;
    if link.contains("xdp") {
        bail!("XDP is still attached after the agent exited:\n{link}");
    }
    println!(
        "\nagent stopped; nothing of ours is left on {}",
        pair.b.ifname
    );
    if !all {
        bail!("some probes were blocked although nothing is enforced yet");
    }
    Ok(())
}

/// Starts `sg-agent attach` on `host` and waits until it says it attached;
/// returns the process and its stderr lines.
fn start_agent(
    bin: &std::path::Path,
    host: &Host,
) -> anyhow::Result<(std::process::Child, mpsc::Receiver<String>)> {
    let mut agent = Command::new(bin)
        .args([
            "attach",
            "--iface",
            &host.ifname,
            "--netns",
            host.ns.name(),
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stderr = agent.stderr.take().context("agent stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .context("the agent did not report that it attached")?;
        println!("agent: {line}");
        if line.contains("attached to") {
            return Ok((agent, rx));
        }
    }
}

fn probes(from: &Host, to: &Host, servers: &Servers) -> Vec<(&'static str, Outcome, IpAddr)> {
    let mut rows = Vec::new();
    for addr in [IpAddr::V4(to.v4), IpAddr::V6(to.v6)] {
        rows.push((
            "tcp",
            probe::tcp(&from.ns, SocketAddr::new(addr, servers.tcp_port)),
            addr,
        ));
        rows.push((
            "udp",
            probe::udp(&from.ns, SocketAddr::new(addr, servers.udp_port)),
            addr,
        ));
        rows.push(("ping", probe::ping(&from.ns, addr, 1), addr));
    }
    rows
}

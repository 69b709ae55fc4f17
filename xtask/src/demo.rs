//! `cargo xtask demo`: a web server's NIC under a real policy (seed 002's web
//! service and remote-access cases), probed with real traffic.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context as _, bail};
use sg_agent::policy::{
    Decision, Direction, GroupSpec, NicBinding, Packet, Reason, RuleSpec, State, evaluate,
};
use sg_tests::{
    agent::AgentProcess,
    probe::{self, Servers},
    topology::{Host, Pair},
};

const ADMIN: &str = "192.168.1.10";

/// The demo policy: one basic group on the server's NIC.
fn policy(server: &Host) -> anyhow::Result<State> {
    let mut s = State::with_seed(2026);
    let web = s.create_group(GroupSpec::basic("web"))?;
    let rules = [
        ("ingress", "Allow", "1", "TCP", "80/80", "0.0.0.0/0"),
        ("ingress", "Allow", "1", "TCP", "443/443", "0.0.0.0/0"),
        ("ingress", "Allow", "1", "TCP", "22/22", ADMIN),
        ("ingress", "Allow", "1", "ICMP", "-1/-1", "0.0.0.0/0"),
    ];
    for (d, p, prio, proto, ports, peer) in rules {
        s.authorize(&web, RuleSpec::from_text(d, p, prio, proto, ports, peer)?)?;
    }
    s.bind_nic(NicBinding::new(
        &server.ifname,
        sg_agent::policy::BindingMode::Local,
        vec![IpAddr::V4(server.v4), IpAddr::V6(server.v6)],
        vec![web],
    ))?;
    Ok(s)
}

/// What the policy says decides `p`, in words.
fn explain(state: &State, d: &Decision) -> String {
    match &d.reason {
        Reason::Rule(id) => {
            let rule = state.all_rules().find(|(_, r)| &r.id == id).map(|(_, r)| r);
            rule.map_or_else(
                || id.to_string(),
                |r| {
                    let ports = match &r.spec.ports {
                        sg_agent::policy::PortSpec::Any => "-1/-1".to_owned(),
                        sg_agent::policy::PortSpec::Range(p) => p.to_string(),
                        sg_agent::policy::PortSpec::List(l) => l.to_string(),
                    };
                    let (a, p, peer) = (r.spec.action, r.spec.protocol, &r.spec.peer);
                    format!("rule {id}: {a} {p} {ports} from {peer}")
                },
            )
        }
        Reason::DefaultIngressDrop => "default: ingress drops what no rule allows".to_owned(),
        other => format!("{other:?}"),
    }
}

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
    pair.add_client_address(ADMIN.parse()?)?;
    println!(
        "client {} ({}, {}, {ADMIN}) <-> server {} ({}, {}), the server's NIC {} under policy",
        pair.a.ns.name(),
        pair.a.v4,
        pair.a.v6,
        pair.b.ns.name(),
        pair.b.v4,
        pair.b.v6,
        pair.b.ifname
    );
    let _servers: Vec<Servers> = [80, 443, 22, 53]
        .iter()
        .map(|p| Servers::start_on(&pair.b.ns, *p))
        .collect::<Result<_, _>>()?;
    let state = policy(&pair.b)?;
    let file = crate::target_dir().join("demo-policy.json");
    std::fs::write(&file, serde_json::to_string_pretty(&state)?)?;
    println!("policy: {}", file.display());

    let policy_arg = file.to_str().context("policy path")?;
    let args = [
        "attach",
        "--policy",
        policy_arg,
        "--netns",
        pair.b.ns.name(),
        "--json",
    ];
    let (agent, _) = AgentProcess::start(&agent_bin, &args, "enforcing", true)?;
    println!(
        "\n| probe | from | to | result | policy's decision |\n| --- | --- | --- | --- | --- |"
    );
    let mismatches = run_probes(&pair, &state)?;
    // What the probes left in the session table, as an operator would look.
    let sessions = std::process::Command::new(&agent_bin)
        .args(["sessions", "list", "--netns", pair.b.ns.name()])
        .output()?;
    if !sessions.status.success() {
        bail!(
            "sg-agent sessions list failed: {}",
            String::from_utf8_lossy(&sessions.stderr)
        );
    }
    println!(
        "\nsessions the allowed probes opened (`sg-agent sessions list`; their replies passed by session):\n{}",
        String::from_utf8_lossy(&sessions.stdout)
    );
    let (status, out) = agent.stop(libc::SIGTERM)?;
    if !status.success() {
        bail!("the agent exited {status}");
    }
    let report: serde_json::Value = serde_json::from_str(&out).context("the agent's report")?;
    print_report(&report, &pair.b.ifname);
    let link = pair.b.link_details()?;
    if link.contains("xdp") {
        bail!("XDP is still attached after the agent exited:\n{link}");
    }
    println!(
        "\nagent stopped; nothing of ours is left on {}",
        pair.b.ifname
    );
    if !mismatches.is_empty() {
        bail!(
            "traffic disagreed with the policy:\n{}",
            mismatches.join("\n")
        );
    }
    Ok(())
}

/// Runs every probe, prints a table row for each with the policy's decision,
/// and returns the probes whose outcome disagreed with the policy.
fn run_probes(pair: &Pair, state: &State) -> anyhow::Result<Vec<String>> {
    let mut mismatches = Vec::new();
    for (kind, src, dst, port) in probes(pair) {
        let to = SocketAddr::new(dst, port);
        let (outcome, packet) = match kind {
            "tcp" => (
                probe::tcp_from(&pair.a.ns, Some(src), to),
                Packet::tcp(src, 40000, dst, port),
            ),
            "udp" => (
                probe::udp_from(&pair.a.ns, Some(src), to),
                Packet::udp(src, 40000, dst, port),
            ),
            _ => {
                let t = if dst.is_ipv4() { 8 } else { 128 };
                (
                    probe::ping_from(&pair.a.ns, Some(src), dst, 1),
                    Packet::icmp(src, dst, t, 0),
                )
            }
        };
        let d = evaluate(state, &pair.b.ifname, Direction::Ingress, &packet)?;
        let target = if kind == "ping" {
            dst.to_string()
        } else {
            to.to_string()
        };
        println!(
            "| {kind} | {src} | {target} | {outcome} | {} |",
            explain(state, &d)
        );
        let allowed = d.verdict == sg_agent::policy::Verdict::Accept;
        if outcome.allowed() != allowed {
            mismatches.push(format!(
                "{kind} {src} -> {target}: {outcome} but the policy says {:?}",
                d.verdict
            ));
        }
    }
    Ok(mismatches)
}

fn probes(pair: &Pair) -> Vec<(&'static str, IpAddr, IpAddr, u16)> {
    let (cli, cli6, admin) = (
        IpAddr::V4(pair.a.v4),
        IpAddr::V6(pair.a.v6),
        ADMIN.parse().expect("address"),
    );
    let (srv, srv6) = (IpAddr::V4(pair.b.v4), IpAddr::V6(pair.b.v6));
    vec![
        ("tcp", cli, srv, 80),
        ("tcp", cli, srv, 443),
        ("tcp", cli, srv, 22),
        ("tcp", admin, srv, 22),
        ("udp", cli, srv, 53),
        ("ping", cli, srv, 0),
        ("tcp", cli6, srv6, 80),
        ("ping", cli6, srv6, 0),
    ]
}

fn print_report(report: &serde_json::Value, nic: &str) {
    println!("\nkernel counters on {nic}: hits per rule");
    println!("| dir | rule | packets | bytes |\n| --- | --- | --- | --- |");
    for r in report["nics"][nic]["rules"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        println!(
            "| {} | {} | {} | {} |",
            s(&r["dir"]),
            s(&r["rule"]),
            r["packets"],
            r["bytes"]
        );
    }
    println!("\ndecisions by reason");
    println!("| dir | reason | packets |\n| --- | --- | --- |");
    for r in report["nics"][nic]["reasons"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        println!(
            "| {} | {} | {} |",
            s(&r["dir"]),
            s(&r["reason"]),
            r["packets"]
        );
    }
}

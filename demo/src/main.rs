//! `sg-demo` (`cargo xtask demo`): the daemon as an operator runs it.
//! `sg-agent run` serves the server's namespace; the CLI applies a policy
//! (seed 002's web service and remote-access cases) as a YAML document; real
//! traffic probes it, `sg-agent trace` explains each verdict from the
//! compiled tables the kernel holds; the agent is stopped and started again
//! while the policy stays in force; `sg-agent cleanup` leaves nothing behind.
//!
//! With `--fleet`, two hosts of one fleet on etcd instead (`fleet.rs`).
//!
//! A crate of its own, apart from `xtask`, so that linting does not wait for
//! the agent and its eBPF programs to build.

mod fleet;

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context as _, bail};
use sg_tests::{
    daemon::Daemon,
    probe::{self, Servers},
    topology::Pair,
    workspace::{cargo, target_dir},
};

const ADMIN: &str = "192.168.1.10";

/// The demo policy, in the document `sg-agent apply` reads.
fn document(nic: &str, v4: &str, v6: &str) -> String {
    format!(
        "\
groups:
  - name: web
    type: basic
    rules:
      - {{direction: ingress, policy: Accept, protocol: TCP, port_range: 80/80, peer: 0.0.0.0/0, description: web}}
      - {{direction: ingress, policy: Accept, protocol: TCP, port_range: 80/80, peer: '::/0', description: web over IPv6}}
      - {{direction: ingress, policy: Accept, protocol: TCP, port_range: 443/443, peer: 0.0.0.0/0, description: https}}
      - {{direction: ingress, policy: Accept, protocol: TCP, port_range: 22/22, peer: {ADMIN}, description: admin ssh}}
      - {{direction: ingress, policy: Accept, protocol: ICMP, peer: 0.0.0.0/0, description: ping}}
      - {{direction: ingress, policy: Accept, protocol: ICMPv6, peer: '::/0', description: ping over IPv6}}
nics:
  - {{name: {nic}, mode: local, addresses: [{v4}, '{v6}'], groups: [web]}}
"
    )
}

fn main() -> anyhow::Result<()> {
    cargo(
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
    let agent_bin = target_dir().join("debug/sg-agent");
    if std::env::args().any(|a| a == "--fleet") {
        fleet::run(&agent_bin)
    } else {
        one_host(&agent_bin)
    }
}

/// The demo of one host on SQLite.
fn one_host(agent_bin: &std::path::Path) -> anyhow::Result<()> {
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
    let mut d = Daemon::start(agent_bin, pair.b.ns.name(), &[])?;
    println!(
        "\n$ sg-agent run --netns {}   (socket {}, store {})",
        pair.b.ns.name(),
        d.socket.display(),
        d.store.display()
    );
    let file = target_dir().join("demo-policy.yaml");
    std::fs::write(
        &file,
        document(
            &pair.b.ifname,
            &pair.b.v4.to_string(),
            &pair.b.v6.to_string(),
        ),
    )?;
    let path = file.to_str().context("policy path")?;
    println!("\n$ sg-agent apply -f {path}");
    print!("{}", d.ok(&["apply", "-f", path]));

    println!(
        "\n| probe | from | to | result | decided by (`sg-agent trace`, from the kernel's tables) |\n| --- | --- | --- | --- | --- |"
    );
    let mismatches = run_probes(&pair, &d);
    println!("\n$ sg-agent sessions list   (the allowed probes' replies passed by session)");
    print!("{}", d.ok(&["sessions", "list"]));

    println!("\n$ sg-agent stats --nic {}", pair.b.ifname);
    print!("{}", d.ok(&["stats", "--nic", &pair.b.ifname]));

    // Restart without a gap: the pinned links enforce while no agent runs.
    d.stop(libc::SIGTERM)?;
    let ssh = SocketAddr::new(IpAddr::V4(pair.b.v4), 22);
    let web = SocketAddr::new(IpAddr::V4(pair.b.v4), 80);
    let (ssh_out, web_out) = (probe::tcp(&pair.a.ns, ssh), probe::tcp(&pair.a.ns, web));
    println!(
        "\nagent stopped: tcp {} -> {ssh} {ssh_out}, tcp {} -> {web} {web_out} (still enforced)",
        pair.a.v4, pair.a.v4
    );
    if ssh_out.allowed() || !web_out.allowed() {
        bail!("enforcement changed while the agent was down");
    }
    d.restart()?;
    println!(
        "agent started again: it adopted the pinned maps and links (status: {})",
        d.json(&["status"])["programs"]
    );

    d.stop(libc::SIGTERM)?;
    let out = d.cleanup();
    if !out.status.success() {
        bail!("cleanup: {}", String::from_utf8_lossy(&out.stderr));
    }
    println!(
        "\n$ sg-agent cleanup\n{}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    // Removing a link's pin detaches it, but the kernel frees the link from
    // a work queue, a moment later on a busy machine: give it two seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !probe::tcp(&pair.a.ns, ssh).allowed() {
        if std::time::Instant::now() > deadline {
            bail!("ssh is still filtered 2 s after cleanup");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    println!(
        "nothing of ours is left on {}: ssh from the client passes again",
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

/// Runs every probe, prints a table row for each with what `sg-agent trace`
/// says decides it, and returns the probes whose outcome disagreed.
fn run_probes(pair: &Pair, d: &Daemon) -> Vec<String> {
    let mut mismatches = Vec::new();
    for (kind, src, dst, port) in probes(pair) {
        let to = SocketAddr::new(dst, port);
        let (outcome, protocol) = match kind {
            "tcp" => (probe::tcp_from(&pair.a.ns, Some(src), to), "TCP"),
            "udp" => (probe::udp_from(&pair.a.ns, Some(src), to), "UDP"),
            _ => (
                probe::ping_from(&pair.a.ns, Some(src), dst, 1),
                if dst.is_ipv4() { "ICMP" } else { "ICMPv6" },
            ),
        };
        let (s, t, p) = (src.to_string(), dst.to_string(), port.to_string());
        let mut args = vec![
            "trace",
            "--nic",
            &pair.b.ifname,
            "--direction",
            "ingress",
            "--protocol",
            protocol,
            "--src",
            &s,
            "--dst",
            &t,
        ];
        if kind != "ping" {
            args.extend(["--sport", "40000", "--dport", &p]);
        }
        let trace = d.json(&args);
        let why = match trace["rule"].as_str() {
            Some(rule) => format!("rule {rule} (priority {})", trace["priority"]),
            None => format!("default: {}", trace["reason"].as_str().unwrap_or("?")),
        };
        let target = if kind == "ping" {
            t.clone()
        } else {
            to.to_string()
        };
        println!(
            "| {kind} | {src} | {target} | {outcome} | {} {why} |",
            trace["verdict"].as_str().unwrap_or("?")
        );
        let allowed = trace["verdict"] == "accept";
        if outcome.allowed() != allowed || trace["reference_agrees"] != true {
            mismatches.push(format!(
                "{kind} {src} -> {target}: {outcome} but trace says {trace}"
            ));
        }
    }
    mismatches
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

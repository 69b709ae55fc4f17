//! `sg-agent sessions list` and `flush` against a running `sg-agent attach`,
//! as an operator runs them: separate processes, one network namespace.

use std::{
    net::{IpAddr, SocketAddr},
    process::Command,
};

use sg_agent::policy::{GroupSpec, State};
use sg_tests::{agent::AgentProcess, bench::Bench, probe};

fn sessions(ns: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sg-agent"))
        .arg("sessions")
        .args(args)
        .args(["--netns", ns])
        .output()
        .expect("run sg-agent sessions")
}

fn listed(ns: &str) -> Vec<serde_json::Value> {
    let out = sessions(ns, &["list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON list")
}

#[test]
fn sessions_of_a_running_agent_are_listed_and_flushed() {
    // Bench only for its namespaces, address plan and echo servers on `a`;
    // the agent process does the enforcing.
    let bench = Bench::new(&[], &[], &[8080]).unwrap();
    let (a, b) = (&bench.pair.a, &bench.pair.b);
    let mut s = State::with_seed(3);
    let g = s.create_group(GroupSpec::basic("out")).unwrap();
    s.bind_nic(bench.server_nic(&[&g])).unwrap();
    let policy = std::env::temp_dir().join(format!("sg-cli-sessions-{}.json", std::process::id()));
    std::fs::write(&policy, serde_json::to_string(&s).unwrap()).unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_sg-agent"));
    let ns = b.ns.name().to_owned();
    let args = [
        "attach",
        "--policy",
        policy.to_str().unwrap(),
        "--netns",
        &ns,
    ];
    let (agent, _) = AgentProcess::start(bin, &args, "enforcing", false).expect("agent");
    assert_eq!(listed(&ns), Vec::<serde_json::Value>::new());
    // Outbound UDP and ping from b: replies return by session.
    assert!(probe::udp(&b.ns, SocketAddr::new(IpAddr::V4(a.v4), 8080)).allowed());
    assert!(probe::ping(&b.ns, IpAddr::V6(a.v6), 1).allowed());
    let list = listed(&ns);
    assert_eq!(list.len(), 2, "{list:#?}");
    let udp = list
        .iter()
        .find(|x| x["protocol"] == "udp")
        .expect("a UDP session");
    assert_eq!(udp["nic"], b.ifname.as_str());
    assert_eq!(udp["initiator"]["address"], b.v4.to_string());
    assert_eq!(udp["responder"]["address"], a.v4.to_string());
    assert_eq!(udp["responder"]["port"], 8080);
    assert_eq!(udp["direction"], "egress");
    assert_eq!(udp["state"], "active");
    assert_eq!(udp["live"], true);
    assert!(udp["policy_version"].as_u64().unwrap() >= 1);
    assert!(list.iter().any(|x| x["protocol"] == "icmpv6"));
    // The table form names the same.
    let table = String::from_utf8(sessions(&ns, &["list"]).stdout).unwrap();
    assert!(
        table.contains(&format!("{}:8080", a.v4)) && table.contains("2 sessions"),
        "{table}"
    );
    // Flushing needs a filter or --all; a filter takes only what it matches.
    let refused = sessions(&ns, &["flush"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--all"));
    let out = sessions(&ns, &["flush", "--proto", "udp", "--port", "8080"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "flushed 1 session"
    );
    assert_eq!(listed(&ns).len(), 1);
    let out = sessions(&ns, &["flush", "--nic", &b.ifname]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "flushed 1 session"
    );
    assert_eq!(listed(&ns), Vec::<serde_json::Value>::new());
    let unknown = sessions(&ns, &["list", "--nic", "nosuch0"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("--nic nosuch0"));
    let (status, _) = agent.stop(libc::SIGTERM).unwrap();
    let _ = std::fs::remove_file(&policy);
    assert!(status.success());
    // The pins went with the agent.
    let gone = sessions(&ns, &["list"]);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("no agent serves this network namespace")
    );
}

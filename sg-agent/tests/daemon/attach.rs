//! `sg-agent attach` as an operator runs it: a real process in a namespace,
//! real traffic, then a signal; it must detach cleanly and report counters.

use std::{collections::HashSet, process::Command, time::Duration};

use sg_tests::{
    agent::AgentProcess,
    links_of, probe,
    topology::{Host, Pair},
};

/// Starts the agent on `host`'s interface; returns it with its program ids.
fn start(host: &Host) -> (AgentProcess, HashSet<u32>) {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_sg-agent"));
    let args = [
        "attach",
        "--iface",
        &host.ifname,
        "--netns",
        host.ns.name(),
        "--json",
    ];
    let (agent, line) = AgentProcess::start(bin, &args, "program ids: ", false).expect("agent");
    let ids: HashSet<u32> = line
        .split("program ids: ")
        .nth(1)
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    // Every program is loaded at start (XDP, TC ingress, TC egress and the
    // tag guard that stands beside XDP); on a veth TC ingress is attached.
    assert_eq!(ids.len(), 4, "{line}");
    (agent, ids)
}

fn stop(agent: AgentProcess, signal: i32) -> serde_json::Value {
    let (status, out) = agent.stop(signal).expect("stop");
    assert!(status.success(), "agent exited {status}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("counters JSON {out:?}: {e}"))
}

fn run_and_stop(signal: i32) {
    let pair = Pair::new().expect("topology");
    let (agent, ids) = start(&pair.b);
    assert_eq!(
        links_of(&ids),
        2,
        "receive and transmit links while running"
    );
    let ping = probe::ping(&pair.a.ns, pair.b.v4.into(), 4);
    assert!(ping.allowed(), "{ping:?}");
    let counters = stop(agent, signal);
    // Without a policy the interface is not bound: its frames pass before
    // the parser, counted as not bound alone (4 pings and their replies,
    // and the neighbour lookups around them).
    for side in ["ingress", "egress"] {
        let not_bound = counters[side]["not_bound"].as_u64().unwrap_or(0);
        assert!(not_bound >= 4, "{side}: {counters}");
        assert_eq!(counters[side]["packets"], 0, "{side}: {counters}");
    }
    // Gone: links, programs, and nothing on the interface.
    // The kernel frees links and programs after an RCU grace period: poll.
    let gone = || links_of(&ids) == 0 && !sg_tests::any_loaded(&ids);
    assert!(
        sg_tests::eventually(Duration::from_secs(5), gone),
        "links or programs {ids:?} still there 5 s after exit"
    );
    let link = pair.b.link_details().unwrap();
    assert!(!link.contains("xdp"), "{link}");
    assert!(!pair.b.qdiscs().unwrap().contains("clsact"));
}

#[test]
fn sigterm_detaches_cleanly() {
    run_and_stop(libc::SIGTERM);
}

#[test]
fn sigint_detaches_cleanly() {
    run_and_stop(libc::SIGINT);
}

#[test]
fn unknown_interface_is_a_clear_error() {
    let pair = Pair::new().expect("topology");
    let out = Command::new(env!("CARGO_BIN_EXE_sg-agent"))
        .args(["attach", "--iface", "nosuch0", "--netns", pair.b.ns.name()])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("attaching to nosuch0"), "{err}");
}

#[test]
fn a_policy_file_with_an_unknown_field_is_refused_naming_it() {
    let pair = Pair::new().expect("topology");
    let mut state = serde_json::to_value(sg_policy::State::with_seed(1)).unwrap();
    state["settings"]["block_port_52"] = serde_json::json!(false);
    let file = std::env::temp_dir().join(format!("sg-attach-policy-{}.json", std::process::id()));
    std::fs::write(&file, state.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sg-agent"))
        .args(["attach", "--policy"])
        .arg(&file)
        .args(["--netns", pair.b.ns.name()])
        .output()
        .expect("run");
    let _ = std::fs::remove_file(&file);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field `settings.block_port_52`"),
        "{err}"
    );
}

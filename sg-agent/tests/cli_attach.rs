//! `sg-agent attach` as an operator runs it: a real process in a namespace,
//! real traffic, then a signal; it must detach cleanly and report counters.

use std::{
    collections::HashSet,
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use sg_tests::{
    probe,
    topology::{Host, Pair},
};

struct Agent {
    child: Child,
    ids: HashSet<u32>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Only reached with the process still running if a test failed.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the agent on `host`'s interface and waits for its "attached" line.
fn start(host: &Host) -> Agent {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sg-agent"))
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
        .expect("spawn sg-agent");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("agent: {line}");
            let _ = tx.send(line);
        }
    });
    let mut agent = Agent {
        child,
        ids: HashSet::new(),
    };
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("agent never said it attached");
        if let Some(ids) = line.split("program ids: ").nth(1) {
            agent.ids = ids
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|s| s.parse().ok())
                .collect();
            assert_eq!(agent.ids.len(), 2, "{line}");
            return agent;
        }
    }
}

fn stop(mut agent: Agent, signal: i32) -> serde_json::Value {
    let pid = i32::try_from(agent.child.id()).unwrap();
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let mut stdout = agent.child.stdout.take().unwrap();
    let status = agent.child.wait().expect("wait");
    assert!(status.success(), "agent exited {status}");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("counters JSON {out:?}: {e}"))
}

fn attached_links(ids: &HashSet<u32>) -> usize {
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .filter(|l| ids.contains(&l.program_id()))
        .count()
}

fn run_and_stop(signal: i32) {
    let pair = Pair::new().expect("topology");
    let agent = start(&pair.b);
    let ids = agent.ids.clone();
    assert_eq!(attached_links(&ids), 2, "XDP and tcx links while running");
    let ping = probe::ping(&pair.a.ns, pair.b.v4.into(), 4);
    assert!(ping.allowed(), "{ping:?}");
    let counters = stop(agent, signal);
    assert_eq!(counters["ingress"]["icmp"], 4, "{counters}");
    assert_eq!(counters["egress"]["icmp"], 4, "{counters}");
    // Gone: links, programs, and nothing on the interface.
    // The kernel frees links and programs after an RCU grace period: poll.
    let gone = || attached_links(&ids) == 0 && !sg_tests::any_loaded(&ids);
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

//! Durability (issue 5 item 2), with the daemon as a real process driven
//! through the CLI: a stream of whole-state changes, each touching several
//! tables (a group, three rules, a NIC binding), is cut by SIGKILL; after a
//! restart every acknowledged change is there and no change is there in part.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use sg_tests::{daemon::Daemon, topology::Netns};

use crate::support::bin;

/// The desired state after change `i`: groups g0..=gi, three rules each, and
/// NIC ghost-k (an interface that does not exist, bound in advance) in gk.
fn document(i: usize) -> String {
    let mut y = String::from("groups:\n");
    for k in 0..=i {
        let _ = write!(y, "  - name: g{k}\n    type: basic\n    rules:\n");
        for j in 0..3 {
            let _ = writeln!(
                y,
                "      - {{direction: ingress, policy: Accept, protocol: TCP, port_range: {p}/{p}, peer: 10.{k}.0.0/16}}",
                p = 1000 + 3 * k + j
            );
        }
    }
    y += "nics:\n";
    for k in 0..=i {
        let _ = writeln!(y, "  - {{name: ghost{k}, mode: local, groups: [g{k}]}}");
    }
    y
}

#[test]
fn sigkill_during_a_stream_of_changes_keeps_every_acknowledged_one_whole() {
    let ns = Netns::new("persist").unwrap();
    let mut d = Daemon::start(bin(), ns.name(), &[]).unwrap();
    let acked = Arc::new(AtomicUsize::new(0));
    let dir = d.dir.clone();
    let socket = d.socket.clone();
    let writer = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            for i in 0.. {
                let file = dir.join(format!("doc{i}.yaml"));
                std::fs::write(&file, document(i)).unwrap();
                let out = std::process::Command::new(bin())
                    .env("SG_AGENT_SOCKET", &socket)
                    .args(["apply", "-f", file.to_str().unwrap()])
                    .output()
                    .unwrap();
                if !out.status.success() {
                    return i;
                }
                acked.store(i + 1, Ordering::SeqCst);
            }
            unreachable!()
        })
    };
    assert!(sg_tests::eventually(Duration::from_secs(60), || acked
        .load(Ordering::SeqCst)
        >= 12));
    d.kill().unwrap();
    let failed_at = writer.join().unwrap();
    let acknowledged = acked.load(Ordering::SeqCst);
    assert_eq!(
        failed_at, acknowledged,
        "the first refused change follows the last acknowledged"
    );

    d.restart().unwrap();
    let groups = d.json(&["group", "list"]);
    let mut by_name = BTreeMap::new();
    for g in groups.as_array().unwrap() {
        by_name.insert(
            g["name"].as_str().unwrap().to_owned(),
            g["rules"].as_array().unwrap().len(),
        );
    }
    let n = by_name.len();
    // Every acknowledged change, and at most the one in flight.
    assert!(
        n == acknowledged || n == acknowledged + 1,
        "{n} groups, {acknowledged} acknowledged"
    );
    for k in 0..n {
        assert_eq!(
            by_name.get(&format!("g{k}")),
            Some(&3),
            "group g{k} whole: {by_name:?}"
        );
    }
    let nics = d.json(&["nic", "list"]);
    let names: Vec<&str> = nics
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["binding"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), n, "{names:?}");
    for k in 0..n {
        assert!(names.contains(&format!("ghost{k}").as_str()), "{names:?}");
        let shown = d.json(&["nic", "show", &format!("ghost{k}")]);
        assert_eq!(shown["attached"], false, "no such interface: not attached");
    }
}

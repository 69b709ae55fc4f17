//! `sg-agent apply` through the CLI against a real daemon, where an
//! operator's slip used to open a NIC (issue 12 item 3): a document without
//! content (only comments, only `---`, `null`) applied as "delete
//! everything", and nothing asked before every NIC was unbound.

use std::net::{IpAddr, SocketAddr};

use sg_tests::{
    daemon::Daemon,
    probe::{self, Servers},
    topology::Pair,
};

use crate::support::{bin, doc};

/// A daemon serving `pair.b`, its NIC bound in one group that allows TCP to
/// the servers' port from the pair's subnet (so UDP is denied).
fn enforcing(pair: &Pair, servers: &Servers) -> Daemon {
    let d = Daemon::start(bin(), pair.b.ns.name(), &[]).unwrap();
    let g = d.group("web");
    d.allow_tcp(&g, servers.tcp_port);
    d.bind(&pair.b.ifname, &["10.77.0.2"], &g);
    d
}

fn udp_allowed(pair: &Pair, servers: &Servers) -> bool {
    let to = SocketAddr::new(IpAddr::V4(pair.b.v4), servers.udp_port);
    probe::udp(&pair.a.ns, to).allowed()
}

fn tcp_allowed(pair: &Pair, servers: &Servers) -> bool {
    let to = SocketAddr::new(IpAddr::V4(pair.b.v4), servers.tcp_port);
    probe::tcp(&pair.a.ns, to).allowed()
}

#[test]
fn a_comment_only_document_is_refused_and_the_nic_stays_enforced() {
    let pair = Pair::new().unwrap();
    let servers = Servers::start(&pair.b.ns).unwrap();
    let d = enforcing(&pair, &servers);
    assert!(tcp_allowed(&pair, &servers) && !udp_allowed(&pair, &servers));
    let before = d.ok(&["export"]);

    for (name, text) in [
        ("comments.yaml", "# the policy of web\n# (to be written)\n"),
        ("dashes.yaml", "---\n"),
        ("dashes-comment.yaml", "---\n# nothing yet\n"),
        ("null.yaml", "null\n"),
        ("tilde.yaml", "~\n"),
        ("blank.yaml", "  \n\n"),
    ] {
        let path = doc(&d.dir, name, text);
        for extra in [&[][..], &["--dry-run"], &["--allow-delete-all"]] {
            let mut args = vec!["apply", "-f", path.as_str()];
            args.extend_from_slice(extra);
            let e = d.fails(&args);
            assert!(
                e.contains("the document is empty") && e.contains("{}"),
                "{name} {extra:?}: {e}"
            );
        }
    }
    assert_eq!(d.ok(&["export"]), before, "nothing changed");
    let nics = d.json(&["nic", "list"]);
    assert_eq!(nics.as_array().unwrap().len(), 1, "{nics}");
    assert!(
        tcp_allowed(&pair, &servers) && !udp_allowed(&pair, &servers),
        "the NIC is still bound and enforced"
    );
}

#[test]
fn the_empty_state_unbinding_every_nic_needs_allow_delete_all() {
    let pair = Pair::new().unwrap();
    let servers = Servers::start(&pair.b.ns).unwrap();
    let d = enforcing(&pair, &servers);
    let before = d.ok(&["export"]);
    let empty = doc(&d.dir, "empty.json", "{}\n");

    // The dry run says so, first and loudly.
    let dry = d.ok(&["apply", "-f", &empty, "--dry-run"]);
    let first = dry.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("! unbinds every NIC") && first.contains(&pair.b.ifname),
        "{dry}"
    );
    assert!(dry.contains("! deletes every security group"), "{dry}");
    assert!(dry.contains("--allow-delete-all"), "{dry}");

    // Without the flag: refused, naming what it would do and the flag.
    let e = d.fails(&["apply", "-f", &empty]);
    assert!(
        e.contains("unbind every NIC")
            && e.contains(&pair.b.ifname)
            && e.contains("--allow-delete-all"),
        "{e}"
    );
    assert_eq!(d.ok(&["export"]), before, "nothing changed");
    assert!(!udp_allowed(&pair, &servers), "still enforced");

    // A document that keeps the groups but binds no NIC: the same refusal.
    let no_nics = doc(&d.dir, "no-nics.json", &{
        let mut v: serde_json::Value = serde_json::from_str(&before).unwrap();
        v["nics"] = serde_json::json!([]);
        v.to_string()
    });
    let e = d.fails(&["apply", "-f", &no_nics]);
    assert!(e.contains("unbind every NIC"), "{e}");
    assert!(!e.contains("every security group"), "{e}");

    // With the flag: applied; the NIC is no longer enforced.
    let out = d.ok(&["apply", "-f", &empty, "--allow-delete-all"]);
    assert!(out.starts_with("! unbinds every NIC"), "{out}");
    assert_eq!(d.json(&["nic", "list"]), serde_json::json!([]));
    assert_eq!(d.json(&["group", "list"]), serde_json::json!([]));
    assert!(
        udp_allowed(&pair, &servers),
        "an unbound NIC passes everything"
    );

    // Nothing left to sweep: `{}` applies without the flag (no changes).
    assert!(d.ok(&["apply", "-f", &empty]).contains("no changes"));
}

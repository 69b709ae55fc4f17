//! Every operation of SPEC §5 through the CLI against a real daemon (issue 5
//! item 1): groups, rules, NIC membership, intra-group policy, prefix and
//! port lists, clone, templates, import and export in JSON and CSV, the
//! health check, settings, and the refusals an operator must see, each
//! naming what refused it. Enforcement of each is tested elsewhere; here the
//! API's coverage and its answers are.

use sg_tests::{daemon::Daemon, topology::Netns};

use crate::support::bin;

fn id(v: &serde_json::Value) -> String {
    v["id"].as_str().expect("an id").to_owned()
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one walk through every operation in order, each step building on the last"
)]
fn every_operation_of_the_api_through_the_cli() {
    let ns = Netns::new("ops").unwrap();
    let d = Daemon::start(bin(), ns.name(), &[]).unwrap();

    // Groups: create (plain and from a template), modify, inner policy, clone.
    let web = id(&d.json(&[
        "group",
        "create",
        "web",
        "--description",
        "front",
        "--tag",
        "env=prod",
    ]));
    let tpl = id(&d.json(&["group", "create", "tpl", "--template", "Sys-WebServer"]));
    assert!(
        d.json(&["rule", "list", "--group", &tpl])
            .as_array()
            .unwrap()
            .len()
            >= 5
    );
    d.line(&format!(
        "group modify {web} --name web2 --deletion-protection true"
    ));
    d.line(&format!("group set-inner-policy {web} Drop"));
    let shown = d.json(&["group", "show", &web]);
    assert_eq!(shown["group"]["name"], "web2");
    assert_eq!(shown["group"]["inner_policy"], "Drop");
    assert_eq!(shown["group"]["tags"]["env"], "prod");
    let ent = id(&d.json(&["group", "create", "ent", "--type", "enterprise"]));
    let e = d.fails(&["group", "set-inner-policy", &ent, "Accept"]);
    assert!(e.contains("enterprise"), "{e}");

    // Lists, and rules that name them.
    let pl = id(&d.json(&[
        "prefix-list",
        "create",
        "office",
        "--family",
        "ipv4",
        "--max-entries",
        "5",
        "--entry",
        "10.1.0.0/16 hq",
    ]));
    let prl = id(&d.json(&[
        "port-list",
        "create",
        "webports",
        "--max-entries",
        "4",
        "--entry",
        "80/80",
        "--entry",
        "443/443",
    ]));
    d.line(&format!(
        "prefix-list modify {pl} --entry 10.1.0.0/16 --entry 10.2.0.0/16"
    ));
    assert_eq!(
        d.json(&["prefix-list", "show", &pl])["entries"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let ids = d.json(&[
        "rule",
        "add",
        &web,
        "--direction",
        "ingress",
        "--protocol",
        "TCP",
        "--port-range",
        &prl,
        "--peer",
        &pl,
        "--priority",
        "5",
    ]);
    let r1 = ids["ids"][0].as_str().unwrap().to_owned();
    let ids = d.json(&[
        "rule",
        "add",
        &web,
        "--direction",
        "ingress",
        "--protocol",
        "TCP",
        "--port-range",
        "80/80",
        "--peer",
        "10.1.2.0/24",
        "--priority",
        "10",
    ]);
    let r2 = ids["ids"][0].as_str().unwrap().to_owned();
    d.line(&format!("rule modify {web} {r1} --direction ingress --protocol TCP --port-range {prl} --peer {pl} --priority 3"));
    assert_eq!(d.json(&["rule", "list", "--group", &web])[0]["priority"], 3);
    // A list in use cannot go, and says why.
    let e = d.fails(&["prefix-list", "delete", &pl]);
    assert!(e.contains(&pl), "{e}");

    // The health check finds the rule another covers.
    let health = d.json(&["group", "health", &web]);
    assert!(
        health
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["rule"] == r2.as_str()),
        "{health}"
    );

    // Export and import in both of the documents' formats.
    let exported = d.json(&[
        "rule", "export", &web, "--format", "json", "--region", "cn-test",
    ]);
    assert_eq!(exported["file_name"], format!("ecs_cn-test_{web}.json"));
    let csv = d.json(&[
        "rule", "export", &web, "--format", "csv", "--region", "cn-test",
    ]);
    assert!(
        csv["file_name"]
            .as_str()
            .unwrap()
            .starts_with(&format!("ecs_sgRule_{web}_cn-test_"))
    );
    let copy = id(&d.json(&["group", "create", "copy"]));
    let file = d.dir.join("rules.csv");
    std::fs::write(&file, csv["text"].as_str().unwrap()).unwrap();
    let imported = d.json(&["rule", "import", &copy, "-f", file.to_str().unwrap()]);
    assert_eq!(
        imported["imported"].as_array().unwrap().len(),
        2,
        "{imported}"
    );

    // Clone, NICs and membership.
    let clone = id(&d.json(&["group", "clone", &web, "--name", "web-copy", "--keep-rules"]));
    assert_eq!(
        d.json(&["rule", "list", "--group", &clone])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    d.line(&format!(
        "nic bind ghost0 --mode port --address 10.9.0.2 --group {web}"
    ));
    d.line(&format!("nic join ghost0 {clone}"));
    d.line(&format!("nic leave ghost0 {clone}"));
    d.line(&format!(
        "nic set-groups ghost0 --group {copy} --group {web}"
    ));
    d.line("nic set-addresses ghost0 --address 10.9.0.3");
    let nic = d.json(&["nic", "show", "ghost0"]);
    assert_eq!(nic["binding"]["groups"], serde_json::json!([copy, web]));
    assert_eq!(nic["binding"]["addresses"], serde_json::json!(["10.9.0.3"]));
    let merged = d.json(&["rule", "list", "--nic", "ghost0"]);
    assert_eq!(merged[0]["priority"], 3, "sorted by priority: {merged}");
    let e = d.fails(&["nic", "join", "ghost0", &ent]);
    assert!(e.contains("type") || e.contains("enterprise"), "{e}");

    // Deleting a group: each refusal says which, then it goes.
    let e = d.fails(&["group", "delete", &web]);
    assert!(e.contains("ghost0") || e.contains("protection"), "{e}");
    d.line(&format!("group modify {web} --deletion-protection false"));
    d.line(&format!("nic set-groups ghost0 --group {copy}"));
    d.line(&format!("rule remove {web} {r1} {r2}"));
    d.line(&format!("group delete {web}"));
    assert!(d.fails(&["group", "show", &web]).contains("does not exist"));

    // Settings, with their limits named.
    let s = d.json(&[
        "settings",
        "set",
        "--snapshot-retention-days",
        "7",
        "--other-secs",
        "120",
    ]);
    assert_eq!(s["snapshot_retention_days"], 7);
    let e = d.fails(&["settings", "set", "--snapshot-retention-days", "31"]);
    assert!(
        e.contains("snapshot_retention_days") && e.contains("30"),
        "{e}"
    );
    assert_eq!(s["fragment_timeout_secs"], 30);
    let s = d.json(&["settings", "set", "--fragment-timeout-secs", "45"]);
    assert_eq!(s["fragment_timeout_secs"], 45);
    let e = d.fails(&["settings", "set", "--fragment-timeout-secs", "601"]);
    assert!(
        e.contains("settings.fragment_timeout_secs") && e.contains("1..=600"),
        "{e}"
    );
    assert_eq!(
        d.json(&["settings", "show"])["session_timeouts"]["other_secs"],
        120
    );

    // Everything above survives a restart of the daemon.
    let before = d.ok(&["export"]);
    let mut d = d;
    d.stop(libc::SIGTERM).unwrap();
    d.restart().unwrap();
    assert_eq!(d.ok(&["export"]), before);
}

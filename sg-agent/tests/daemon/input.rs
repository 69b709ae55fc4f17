//! Input an operator (or an attacker with the socket) gives through the CLI
//! to a real daemon, refused where it used to be taken (issue 12 item 13):
//! terminal escapes in free text, an intra-group policy on an enterprise
//! group, a platform address that exempts everything, and a rule import
//! keeping a malformed id. Each refusal names the field and changes nothing.

use sg_tests::{daemon::Daemon, topology::Netns};

use crate::support::bin;

#[test]
fn bad_input_through_the_cli_is_refused_naming_the_field() {
    let ns = Netns::new("input").unwrap();
    let d = Daemon::start(bin(), ns.name(), &[]).unwrap();
    let g = d.group("web");
    let before = d.ok(&["export"]);

    let e = d.fails(&["group", "create", "db", "--description", "x\u{1b}[2Jy"]);
    assert!(
        e.contains("group.description") && e.contains("U+001B") && e.contains("character 2"),
        "{e}"
    );
    assert!(!e.contains('\u{1b}'), "the error never echoes it: {e:?}");
    let e = d.fails(&[
        "rule",
        "add",
        &g,
        "--direction",
        "ingress",
        "--protocol",
        "TCP",
        "--port-range",
        "22/22",
        "--peer",
        "10.0.0.0/8",
        "--description",
        "ssh\u{202e}gnp.exe",
    ]);
    assert!(
        e.contains("rules[0].description") && e.contains("U+202E"),
        "{e}"
    );

    let e = d.fails(&[
        "group",
        "create",
        "iso",
        "--type",
        "enterprise",
        "--inner-policy",
        "Drop",
    ]);
    assert!(
        e.contains("group.inner_policy") && e.contains("only basic groups"),
        "{e}"
    );

    let e = d.fails(&["settings", "set", "--platform-address", "0.0.0.0/0"]);
    assert!(
        e.contains("settings.platform_addresses[0]") && e.contains("0.0.0.0/0") && e.contains("/8"),
        "{e}"
    );

    let file = d.dir.join("rules.json");
    std::fs::write(
        &file,
        r#"[{"SecurityGroupRuleId": "sgr-ZZ", "Direction": "ingress", "IpProtocol": "TCP", "PortRange": "22/22", "SourceCidrIp": "10.0.0.0/8"}]"#,
    )
    .unwrap();
    let report = d.json(&["rule", "import", &g, "-f", file.to_str().unwrap()]);
    assert_eq!(report["imported"], serde_json::json!([]), "{report}");
    let reason = report["skipped"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("Permissions[0].SecurityGroupRuleId"),
        "{reason}"
    );

    assert_eq!(d.ok(&["export"]), before, "nothing changed");
}

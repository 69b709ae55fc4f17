//! The API's requests as the daemon reads them (issue 12 item 13): every
//! request kind, and every object nested in one, refuses a field it does not
//! know, naming it; before, the kinds without fields (`status`, `group_list`
//! …), `trace` and the session filter took any and ignored it, so a misspelt
//! option was read as absent.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use sg_agent::api::{Request, RuleText, SessionFilter, TraceText};

/// The `op` of each request kind. Exhaustive, so a new kind does not compile
/// until it is named here (and then `every_kind_has_a_sample` asks for a
/// sample of it).
fn op(r: &Request) -> &'static str {
    match r {
        Request::Status => "status",
        Request::GroupCreate { .. } => "group_create",
        Request::GroupList => "group_list",
        Request::GroupShow { .. } => "group_show",
        Request::GroupModify { .. } => "group_modify",
        Request::GroupSetInnerPolicy { .. } => "group_set_inner_policy",
        Request::GroupDelete { .. } => "group_delete",
        Request::GroupClone { .. } => "group_clone",
        Request::GroupHealth { .. } => "group_health",
        Request::RuleAuthorize { .. } => "rule_authorize",
        Request::RuleRevoke { .. } => "rule_revoke",
        Request::RuleModify { .. } => "rule_modify",
        Request::RuleList { .. } => "rule_list",
        Request::RuleImport { .. } => "rule_import",
        Request::RuleExport { .. } => "rule_export",
        Request::NicBind { .. } => "nic_bind",
        Request::NicUnbind { .. } => "nic_unbind",
        Request::NicJoin { .. } => "nic_join",
        Request::NicLeave { .. } => "nic_leave",
        Request::NicSetGroups { .. } => "nic_set_groups",
        Request::NicSetAddresses { .. } => "nic_set_addresses",
        Request::NicList => "nic_list",
        Request::NicShow { .. } => "nic_show",
        Request::PrefixListCreate { .. } => "prefix_list_create",
        Request::PrefixListModify { .. } => "prefix_list_modify",
        Request::PrefixListDelete { .. } => "prefix_list_delete",
        Request::PrefixListList => "prefix_list_list",
        Request::PrefixListShow { .. } => "prefix_list_show",
        Request::PortListCreate { .. } => "port_list_create",
        Request::PortListModify { .. } => "port_list_modify",
        Request::PortListDelete { .. } => "port_list_delete",
        Request::PortListList => "port_list_list",
        Request::PortListShow { .. } => "port_list_show",
        Request::HostList => "host_list",
        Request::HostRemove { .. } => "host_remove",
        Request::SettingsShow => "settings_show",
        Request::SettingsSet { .. } => "settings_set",
        Request::Apply { .. } => "apply",
        Request::Export => "export",
        Request::SnapshotList { .. } => "snapshot_list",
        Request::SnapshotShow { .. } => "snapshot_show",
        Request::SnapshotRestore { .. } => "snapshot_restore",
        Request::Trace(..) => "trace",
        Request::Stats { .. } => "stats",
        Request::Verify { .. } => "verify",
        Request::SessionList { .. } => "session_list",
        Request::SessionFlush { .. } => "session_flush",
    }
}

const OPS: usize = 47;

fn rule_text() -> RuleText {
    RuleText {
        direction: "ingress".into(),
        protocol: "TCP".into(),
        port_range: Some("22/22".into()),
        peer: "10.0.0.0/8".into(),
        ..RuleText::default()
    }
}

fn filter() -> SessionFilter {
    SessionFilter {
        nic: Some("eth0".into()),
        ..SessionFilter::default()
    }
}

/// One request of every kind, each with its optional parts filled in, so
/// every nested object is there to be tampered with.
#[expect(clippy::too_many_lines, reason = "one sample per request kind")]
fn samples() -> Vec<Request> {
    let id = || "sg-1".to_owned();
    let tags = || [("env".to_owned(), "prod".to_owned())].into();
    vec![
        Request::Status,
        Request::GroupCreate {
            name: "web".into(),
            description: String::new(),
            kind: Some("basic".into()),
            inner_policy: Some("Accept".into()),
            deletion_protection: false,
            tags: tags(),
            template: None,
        },
        Request::GroupList,
        Request::GroupShow { id: id() },
        Request::GroupModify {
            id: id(),
            name: Some("web".into()),
            description: None,
            deletion_protection: None,
            tags: Some(tags()),
        },
        Request::GroupSetInnerPolicy {
            id: id(),
            policy: "Drop".into(),
        },
        Request::GroupDelete { id: id() },
        Request::GroupClone {
            id: id(),
            name: None,
            keep_rules: true,
            copy_tags: false,
        },
        Request::GroupHealth { id: Some(id()) },
        Request::RuleAuthorize {
            group: id(),
            rules: vec![rule_text()],
        },
        Request::RuleRevoke {
            group: id(),
            rules: vec!["sgr-1".into()],
        },
        Request::RuleModify {
            group: id(),
            rule: "sgr-1".into(),
            spec: rule_text(),
        },
        Request::RuleList {
            group: Some(id()),
            nic: None,
        },
        Request::RuleImport {
            group: id(),
            format: "json".into(),
            text: "[]".into(),
        },
        Request::RuleExport {
            group: id(),
            format: "csv".into(),
            region: None,
        },
        Request::NicBind {
            name: "eth0".into(),
            mode: "local".into(),
            addresses: vec!["10.0.0.2".into()],
            extra_allowed: vec![],
            anti_spoof: None,
            groups: vec![id()],
        },
        Request::NicUnbind {
            name: "eth0".into(),
        },
        Request::NicJoin {
            name: "eth0".into(),
            group: id(),
        },
        Request::NicLeave {
            name: "eth0".into(),
            group: id(),
        },
        Request::NicSetGroups {
            name: "eth0".into(),
            groups: vec![id()],
        },
        Request::NicSetAddresses {
            name: "eth0".into(),
            addresses: vec![],
            extra_allowed: vec![],
        },
        Request::NicList,
        Request::NicShow {
            name: "eth0".into(),
        },
        Request::PrefixListCreate {
            name: "office".into(),
            description: String::new(),
            family: "ipv4".into(),
            max_entries: 5,
            entries: vec![],
        },
        Request::PrefixListModify {
            id: "pl-1".into(),
            name: None,
            description: None,
            max_entries: None,
            entries: None,
        },
        Request::PrefixListDelete { id: "pl-1".into() },
        Request::PrefixListList,
        Request::PrefixListShow { id: "pl-1".into() },
        Request::PortListCreate {
            name: "web".into(),
            description: String::new(),
            max_entries: 5,
            entries: vec![],
        },
        Request::PortListModify {
            id: "prl-1".into(),
            name: None,
            description: None,
            max_entries: None,
            entries: None,
        },
        Request::PortListDelete { id: "prl-1".into() },
        Request::PortListList,
        Request::PortListShow { id: "prl-1".into() },
        Request::HostList,
        Request::HostRemove {
            host: "web-7".into(),
            force: true,
        },
        Request::SettingsShow,
        Request::SettingsSet {
            block_port_25: Some(true),
            platform_addresses: None,
            snapshot_retention_days: None,
            tcp_handshake_secs: None,
            tcp_established_secs: None,
            tcp_closing_secs: None,
            other_secs: None,
            fragment_timeout_secs: Some(30),
        },
        Request::Apply {
            document: "{}".into(),
            dry_run: true,
            allow_delete_all: false,
        },
        Request::Export,
        Request::SnapshotList { group: None },
        Request::SnapshotShow { id: 1 },
        Request::SnapshotRestore { id: 1 },
        Request::Trace(TraceText {
            nic: "eth0".into(),
            direction: "ingress".into(),
            protocol: "TCP".into(),
            source: "10.0.0.1".into(),
            destination: "10.0.0.2".into(),
            source_port: Some(40000),
            destination_port: Some(22),
            icmp_type: None,
            icmp_code: None,
        }),
        Request::Stats { nic: None },
        Request::Verify { no_repair: true },
        Request::SessionList { filter: filter() },
        Request::SessionFlush {
            filter: filter(),
            all: false,
        },
    ]
}

fn parse(value: &Value) -> Result<Request, String> {
    serde_json::from_str(&value.to_string()).map_err(|e| e.to_string())
}

#[test]
fn every_kind_has_a_sample_and_each_reads_back() {
    let samples = samples();
    let ops: BTreeSet<&str> = samples.iter().map(op).collect();
    assert_eq!(ops.len(), samples.len(), "one sample per kind");
    assert_eq!(ops.len(), OPS, "a sample of every kind: {ops:?}");
    for r in &samples {
        let v = serde_json::to_value(r).unwrap();
        assert_eq!(v["op"], op(r));
        assert_eq!(parse(&v).as_ref(), Ok(r), "{v}");
    }
    // What a client leaves out still takes its default.
    assert_eq!(parse(&json!({"op": "status"})), Ok(Request::Status));
    assert_eq!(
        parse(&json!({"op": "apply", "document": "{}"})),
        Ok(Request::Apply {
            document: "{}".into(),
            dry_run: false,
            allow_delete_all: false
        })
    );
}

/// Every place in `v` an unknown field can go: the request itself, and each
/// object nested in it (the first element of an array of objects), but not
/// inside `tags`, whose keys are the user's own.
fn object_paths(v: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Value::Object(m) = v {
        out.push(path.clone());
        for (k, child) in m {
            if k == "tags" {
                continue;
            }
            let child = match child {
                Value::Array(items) => match items.first() {
                    Some(first) => {
                        path.push(k.clone());
                        path.push("0".to_owned());
                        object_paths(first, path, out);
                        path.truncate(path.len() - 2);
                        continue;
                    }
                    None => continue,
                },
                other => other,
            };
            path.push(k.clone());
            object_paths(child, path, out);
            path.pop();
        }
    }
}

fn at<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(v, |v, key| match v {
        Value::Array(items) => &mut items[key.parse::<usize>().unwrap()],
        other => &mut other[key.as_str()],
    })
}

#[test]
fn every_request_kind_refuses_an_unknown_field_naming_it() {
    let mut checked = 0;
    for r in samples() {
        let v = serde_json::to_value(&r).unwrap();
        let mut places = Vec::new();
        object_paths(&v, &mut Vec::new(), &mut places);
        for place in places {
            let mut tampered = v.clone();
            at(&mut tampered, &place)["colour"] = json!("red");
            let e = parse(&tampered).expect_err(&format!("{tampered}: must be refused"));
            assert!(
                e.contains("unknown field") && e.contains("colour"),
                "{} at {place:?}: {e}",
                op(&r)
            );
            checked += 1;
        }
    }
    // The request level of every kind, plus rule texts, filters and the like.
    assert!(checked > OPS, "{checked}");
}

#[test]
fn a_misspelt_option_of_a_request_without_fields_is_refused() {
    // `status` took `{"op": "status", "verbose": true}` and ignored it.
    for op in [
        "status",
        "group_list",
        "nic_list",
        "prefix_list_list",
        "port_list_list",
        "settings_show",
        "host_list",
        "export",
    ] {
        let e = parse(&json!({"op": op, "verbose": true})).unwrap_err();
        assert!(
            e.contains("unknown field `verbose`") && e.contains(op),
            "{e}"
        );
    }
    // And `trace` a misspelt port, which would trace another packet.
    let e = parse(&json!({
        "op": "trace", "nic": "eth0", "direction": "ingress", "protocol": "TCP",
        "source": "10.0.0.1", "destination": "10.0.0.2", "destination_prot": 22
    }))
    .unwrap_err();
    assert!(e.contains("destination_prot"), "{e}");
}

//! The API's requests as the daemon reads them (issue 12 item 13): every
//! request kind, and every object nested in one, refuses a field it does not
//! know, naming it; before, the kinds without fields (`status`, `group_list`
//! …), `trace` and the session filter took any and ignored it, so a misspelt
//! option was read as absent.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use sg_agent::api::{
    GroupCreate, GroupRequest, HostRequest, NicRequest, ObserveRequest, PortListRequest,
    PrefixListRequest, Request, RuleRequest, RuleText, SessionFilter, SessionRequest,
    SnapshotRequest, StateRequest, TraceText, routes,
};

/// The `op` of each request kind. Exhaustive, so a new kind does not compile
/// until it is named here (and then `every_kind_has_a_sample` asks for a
/// sample of it).
fn op(r: &Request) -> &'static str {
    match r {
        Request::Observe(ObserveRequest::Status) => "status",
        Request::Group(GroupRequest::Create(..)) => "group_create",
        Request::Group(GroupRequest::List) => "group_list",
        Request::Group(GroupRequest::Show { .. }) => "group_show",
        Request::Group(GroupRequest::Modify { .. }) => "group_modify",
        Request::Group(GroupRequest::SetInnerPolicy { .. }) => "group_set_inner_policy",
        Request::Group(GroupRequest::Delete { .. }) => "group_delete",
        Request::Group(GroupRequest::Clone { .. }) => "group_clone",
        Request::Group(GroupRequest::Health { .. }) => "group_health",
        Request::Rule(RuleRequest::Authorize { .. }) => "rule_authorize",
        Request::Rule(RuleRequest::Revoke { .. }) => "rule_revoke",
        Request::Rule(RuleRequest::Modify { .. }) => "rule_modify",
        Request::Rule(RuleRequest::List { .. }) => "rule_list",
        Request::Rule(RuleRequest::Import { .. }) => "rule_import",
        Request::Rule(RuleRequest::Export { .. }) => "rule_export",
        Request::Nic(NicRequest::Bind { .. }) => "nic_bind",
        Request::Nic(NicRequest::Unbind { .. }) => "nic_unbind",
        Request::Nic(NicRequest::Join { .. }) => "nic_join",
        Request::Nic(NicRequest::Leave { .. }) => "nic_leave",
        Request::Nic(NicRequest::SetGroups { .. }) => "nic_set_groups",
        Request::Nic(NicRequest::SetAddresses { .. }) => "nic_set_addresses",
        Request::Nic(NicRequest::List) => "nic_list",
        Request::Nic(NicRequest::Show { .. }) => "nic_show",
        Request::PrefixList(PrefixListRequest::Create { .. }) => "prefix_list_create",
        Request::PrefixList(PrefixListRequest::Modify { .. }) => "prefix_list_modify",
        Request::PrefixList(PrefixListRequest::Delete { .. }) => "prefix_list_delete",
        Request::PrefixList(PrefixListRequest::List) => "prefix_list_list",
        Request::PrefixList(PrefixListRequest::Show { .. }) => "prefix_list_show",
        Request::PortList(PortListRequest::Create { .. }) => "port_list_create",
        Request::PortList(PortListRequest::Modify { .. }) => "port_list_modify",
        Request::PortList(PortListRequest::Delete { .. }) => "port_list_delete",
        Request::PortList(PortListRequest::List) => "port_list_list",
        Request::PortList(PortListRequest::Show { .. }) => "port_list_show",
        Request::Host(HostRequest::List) => "host_list",
        Request::Host(HostRequest::Remove { .. }) => "host_remove",
        Request::State(StateRequest::SettingsShow) => "settings_show",
        Request::State(StateRequest::SettingsSet { .. }) => "settings_set",
        Request::State(StateRequest::Apply { .. }) => "apply",
        Request::State(StateRequest::Export) => "export",
        Request::Snapshot(SnapshotRequest::List { .. }) => "snapshot_list",
        Request::Snapshot(SnapshotRequest::Show { .. }) => "snapshot_show",
        Request::Snapshot(SnapshotRequest::Restore { .. }) => "snapshot_restore",
        Request::Observe(ObserveRequest::Trace(..)) => "trace",
        Request::Observe(ObserveRequest::Stats { .. }) => "stats",
        Request::Observe(ObserveRequest::Verify { .. }) => "verify",
        Request::Session(SessionRequest::List { .. }) => "session_list",
        Request::Session(SessionRequest::Flush { .. }) => "session_flush",
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
        Request::Observe(ObserveRequest::Status),
        Request::Group(GroupRequest::Create(GroupCreate {
            name: "web".into(),
            description: String::new(),
            kind: Some("basic".into()),
            inner_policy: Some("Accept".into()),
            deletion_protection: false,
            tags: tags(),
            template: None,
        })),
        Request::Group(GroupRequest::List),
        Request::Group(GroupRequest::Show { id: id() }),
        Request::Group(GroupRequest::Modify {
            id: id(),
            name: Some("web".into()),
            description: None,
            deletion_protection: None,
            tags: Some(tags()),
        }),
        Request::Group(GroupRequest::SetInnerPolicy {
            id: id(),
            policy: "Drop".into(),
        }),
        Request::Group(GroupRequest::Delete { id: id() }),
        Request::Group(GroupRequest::Clone {
            id: id(),
            name: None,
            keep_rules: true,
            copy_tags: false,
        }),
        Request::Group(GroupRequest::Health { id: Some(id()) }),
        Request::Rule(RuleRequest::Authorize {
            group: id(),
            rules: vec![rule_text()],
        }),
        Request::Rule(RuleRequest::Revoke {
            group: id(),
            rules: vec!["sgr-1".into()],
        }),
        Request::Rule(RuleRequest::Modify {
            group: id(),
            rule: "sgr-1".into(),
            spec: rule_text(),
        }),
        Request::Rule(RuleRequest::List {
            group: Some(id()),
            nic: None,
        }),
        Request::Rule(RuleRequest::Import {
            group: id(),
            format: "json".into(),
            text: "[]".into(),
        }),
        Request::Rule(RuleRequest::Export {
            group: id(),
            format: "csv".into(),
            region: None,
        }),
        Request::Nic(NicRequest::Bind {
            name: "eth0".into(),
            mode: "local".into(),
            addresses: vec!["10.0.0.2".into()],
            extra_allowed: vec![],
            anti_spoof: None,
            groups: vec![id()],
        }),
        Request::Nic(NicRequest::Unbind {
            name: "eth0".into(),
        }),
        Request::Nic(NicRequest::Join {
            name: "eth0".into(),
            group: id(),
        }),
        Request::Nic(NicRequest::Leave {
            name: "eth0".into(),
            group: id(),
        }),
        Request::Nic(NicRequest::SetGroups {
            name: "eth0".into(),
            groups: vec![id()],
        }),
        Request::Nic(NicRequest::SetAddresses {
            name: "eth0".into(),
            addresses: vec![],
            extra_allowed: vec![],
        }),
        Request::Nic(NicRequest::List),
        Request::Nic(NicRequest::Show {
            name: "eth0".into(),
        }),
        Request::PrefixList(PrefixListRequest::Create {
            name: "office".into(),
            description: String::new(),
            family: "ipv4".into(),
            max_entries: 5,
            entries: vec![],
        }),
        Request::PrefixList(PrefixListRequest::Modify {
            id: "pl-1".into(),
            name: None,
            description: None,
            max_entries: None,
            entries: None,
        }),
        Request::PrefixList(PrefixListRequest::Delete { id: "pl-1".into() }),
        Request::PrefixList(PrefixListRequest::List),
        Request::PrefixList(PrefixListRequest::Show { id: "pl-1".into() }),
        Request::PortList(PortListRequest::Create {
            name: "web".into(),
            description: String::new(),
            max_entries: 5,
            entries: vec![],
        }),
        Request::PortList(PortListRequest::Modify {
            id: "prl-1".into(),
            name: None,
            description: None,
            max_entries: None,
            entries: None,
        }),
        Request::PortList(PortListRequest::Delete { id: "prl-1".into() }),
        Request::PortList(PortListRequest::List),
        Request::PortList(PortListRequest::Show { id: "prl-1".into() }),
        Request::Host(HostRequest::List),
        Request::Host(HostRequest::Remove {
            host: "web-7".into(),
            force: true,
        }),
        Request::State(StateRequest::SettingsShow),
        Request::State(StateRequest::SettingsSet {
            block_port_25: Some(true),
            platform_addresses: None,
            snapshot_retention_days: None,
            tcp_handshake_secs: None,
            tcp_established_secs: None,
            tcp_closing_secs: None,
            other_secs: None,
            fragment_timeout_secs: Some(30),
        }),
        Request::State(StateRequest::Apply {
            document: "{}".into(),
            dry_run: true,
            allow_delete_all: false,
        }),
        Request::State(StateRequest::Export),
        Request::Snapshot(SnapshotRequest::List { group: None }),
        Request::Snapshot(SnapshotRequest::Show { id: 1 }),
        Request::Snapshot(SnapshotRequest::Restore { id: 1 }),
        Request::Observe(ObserveRequest::Trace(TraceText {
            nic: "eth0".into(),
            direction: "ingress".into(),
            protocol: "TCP".into(),
            source: "10.0.0.1".into(),
            destination: "10.0.0.2".into(),
            source_port: Some(40000),
            destination_port: Some(22),
            icmp_type: None,
            icmp_code: None,
        })),
        Request::Observe(ObserveRequest::Stats {
            nic: None,
            dir: None,
            min_packets: Some(1),
            limit: Some(100),
            after: None,
        }),
        Request::Observe(ObserveRequest::Verify { no_repair: true }),
        Request::Session(SessionRequest::List {
            filter: filter(),
            limit: Some(10),
        }),
        Request::Session(SessionRequest::Flush {
            filter: filter(),
            all: false,
        }),
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
    assert_eq!(
        parse(&json!({"op": "status"})),
        Ok(Request::Observe(ObserveRequest::Status))
    );
    assert_eq!(
        parse(&json!({"op": "apply", "document": "{}"})),
        Ok(Request::State(StateRequest::Apply {
            document: "{}".into(),
            dry_run: false,
            allow_delete_all: false
        }))
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

/// How `request` reaches the daemon: the route table's method, path and
/// body, decoded again as the daemon decodes them.
fn over_the_wire(request: &Request) -> Result<Request, String> {
    let (method, target, body) = routes::encode(request)?;
    let (path, query) = target
        .split_once('?')
        .map_or((target.as_str(), None), |(p, q)| (p, Some(q)));
    let (route, params) = routes::find(method.as_str(), path).map_err(|e| e.to_string())?;
    assert_eq!(route.op, op(request), "{target}");
    routes::decode(route, params, query, body.as_deref().unwrap_or_default())
        .map_err(|e| e.to_string())
}

#[test]
fn every_request_kind_has_a_route_and_survives_it() {
    for r in samples() {
        assert_eq!(over_the_wire(&r).as_ref(), Ok(&r), "{}", op(&r));
    }
    // Every route carries a request that exists, and every op has one.
    let ops: BTreeSet<&str> = samples().iter().map(op).collect();
    let routed: BTreeSet<&str> = routes::ROUTES.iter().map(|r| r.op).collect();
    assert_eq!(ops, routed);
}

#[test]
fn the_openapi_document_is_the_one_the_routes_and_types_make() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let made = sg_agent::api::openapi::text();
    if std::env::var_os("SG_WRITE_OPENAPI").is_some() {
        std::fs::write(&path, &made).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == made,
        "docs/openapi.json differs from what the routes and request types make: \
         write it again with `SG_WRITE_OPENAPI=1 cargo test -p sg-agent --test agent openapi`"
    );
    // Every route is in it, with its method, and every path parameter of a
    // route is a field its request requires.
    let doc: Value = serde_json::from_str(&made).unwrap();
    for route in routes::ROUTES {
        let op = &doc["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{} {} missing",
            route.method.as_str(),
            route.path
        );
        for p in routes::params(route.path) {
            let declared = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"] == p && x["in"] == "path");
            assert!(declared, "{}: {p}", route.path);
        }
    }
    assert_eq!(
        doc["components"]["schemas"]["ApiError"]["required"],
        json!(["kind", "message"])
    );
    // Every op names its reply, and every schema a reply refers to is in
    // the document.
    let replied: BTreeSet<&str> = sg_agent::api::reply::REPLIES
        .iter()
        .map(|(op, _)| *op)
        .collect();
    assert_eq!(replied, routed_ops());
    for (op, name) in sg_agent::api::reply::REPLIES {
        for part in name.split('|') {
            let item = part.trim_start_matches('[').trim_end_matches(']');
            assert!(
                doc["components"]["schemas"][item].is_object(),
                "{op}: no schema {item}"
            );
        }
    }
}

fn routed_ops() -> BTreeSet<&'static str> {
    routes::ROUTES.iter().map(|r| r.op).collect()
}

//! SPEC §5 import and export: field names, file names, per-rule skip reports,
//! and export-then-import being exact.

use crate::support::{basic, rule, state};
use sg_policy::{
    Cidr, GroupId, PolicyError, PortRange, State, csv_file_name, export_csv, export_json,
    import_csv, import_json, json_file_name,
};

/// A group with one rule of every shape.
fn rich() -> (State, GroupId) {
    let mut s = state();
    let peer = basic(&mut s, "peer");
    let pl = s
        .create_prefix_list(sg_policy::PrefixListSpec {
            name: "pl".into(),
            description: String::new(),
            family: sg_policy::Family::Ipv6,
            max_entries: 3,
            entries: vec![],
        })
        .unwrap();
    let prl = s
        .create_port_list(sg_policy::PortListSpec {
            name: "prl".into(),
            description: String::new(),
            max_entries: 3,
            entries: vec![],
        })
        .unwrap();
    let g = basic(&mut s, "g");
    let rules = vec![
        rule("ingress", "Accept", "1", "TCP", "22/22", "192.168.1.10")
            // Quotes and commas, which CSV must quote; not a newline,
            // which free text refuses.
            .with_description("ssh, \"admin\"; été"),
        rule("ingress", "Drop", "100", "ALL", "-1/-1", "::/0"),
        rule("ingress", "Accept", "5", "UDP", prl.as_str(), peer.as_str()),
        rule("ingress", "Accept", "5", "ICMPv6", "-1/-1", pl.as_str()),
        rule("ingress", "Accept", "5", "132", "-1/-1", g.as_str()),
        rule("ingress", "Accept", "9", "TCP", "8000/9000", "10.0.0.0/8")
            .with_source_ports(PortRange {
                from: 1024,
                to: 65535,
            })
            .with_local(Cidr::parse("x", "172.16.0.5").unwrap()),
        rule("egress", "Accept", "2", "TCP", "443/443", "2001:db8::/32")
            .with_local(Cidr::parse("x", "2001:db8:1::5").unwrap()),
        rule("egress", "Drop", "3", "GRE", "-1/-1", "0.0.0.0/0"),
        rule("egress", "Accept", "3", "TCP", "53/53", pl.as_str()),
    ];
    s.authorize_all(&g, rules).unwrap();
    (s, g)
}

fn emptied(s: &State, g: &GroupId) -> State {
    let mut e = s.clone();
    for r in s.describe_group(g).unwrap().rules.clone() {
        e.revoke(g, &r.id).unwrap();
    }
    e
}

#[test]
fn file_names_follow_the_documents() {
    let g = GroupId::parse("g", "sg-123").unwrap();
    assert_eq!(
        json_file_name("cn-qingdao", &g).unwrap(),
        "ecs_cn-qingdao_sg-123.json"
    );
    assert_eq!(
        csv_file_name(&g, "cn-qingdao", "2020-01-20").unwrap(),
        "ecs_sgRule_sg-123_cn-qingdao_2020-01-20.csv"
    );
    assert!(csv_file_name(&g, "cn-qingdao", "2020-13-01").is_err());
    assert!(csv_file_name(&g, "cn-qingdao", "20-01-2020").is_err());
    assert!(json_file_name("../etc", &g).is_err());
}

#[test]
fn json_export_uses_the_documents_field_names() {
    let (s, g) = rich();
    let doc: serde_json::Value = serde_json::from_str(&export_json(&s, &g).unwrap()).unwrap();
    assert_eq!(doc["SecurityGroupId"], g.as_str());
    let perms = doc["Permissions"].as_array().unwrap();
    assert_eq!(perms.len(), 9);
    let first = &perms[0];
    for f in [
        "SecurityGroupRuleId",
        "Direction",
        "Policy",
        "Priority",
        "IpProtocol",
        "PortRange",
        "SourceCidrIp",
        "DestCidrIp",
        "Ipv6SourceCidrIp",
        "Ipv6DestCidrIp",
        "SourceGroupId",
        "DestGroupId",
        "SourcePrefixListId",
        "DestPrefixListId",
        "PortRangeListId",
        "SourcePortRange",
        "Description",
    ] {
        assert!(first.get(f).is_some(), "missing {f}");
    }
    assert_eq!(first["IpProtocol"], "TCP");
    assert_eq!(first["PortRange"], "22/22");
    assert_eq!(first["SourceCidrIp"], "192.168.1.10");
    assert_eq!(first["Priority"], 1);
    // Quintuple: ingress local is the destination, egress local is the source.
    assert_eq!(perms[5]["DestCidrIp"], "172.16.0.5");
    assert_eq!(perms[5]["SourcePortRange"], "1024/65535");
    assert_eq!(perms[6]["Ipv6DestCidrIp"], "2001:db8::/32");
    assert_eq!(perms[6]["Ipv6SourceCidrIp"], "2001:db8:1::5");
}

#[test]
fn json_export_then_import_is_exact() {
    let (s, g) = rich();
    let text = export_json(&s, &g).unwrap();
    let mut back = emptied(&s, &g);
    let report = import_json(&mut back, &g, &text).unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.imported.len(), 9);
    assert_eq!(
        back.describe_group(&g).unwrap().rules,
        s.describe_group(&g).unwrap().rules
    );
    assert_eq!(export_json(&back, &g).unwrap(), text);
}

#[test]
fn csv_export_then_import_is_exact() {
    let (s, g) = rich();
    let text = export_csv(&s, &g).unwrap();
    assert!(text.starts_with(
        "SecurityGroupId,SecurityGroupRuleId,Direction,Policy,Priority,IpProtocol,PortRange"
    ));
    let mut back = emptied(&s, &g);
    let report = import_csv(&mut back, &g, &text).unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(
        back.describe_group(&g).unwrap().rules,
        s.describe_group(&g).unwrap().rules
    );
    assert_eq!(export_csv(&back, &g).unwrap(), text);
}

#[test]
fn import_into_another_group_gets_new_ids_and_keeps_self_references_its_own() {
    let (mut st, g) = rich();
    let text = export_json(&st, &g).unwrap();
    let h = basic(&mut st, "h");
    let report = import_json(&mut st, &h, &text).unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let (src, dst) = (
        st.describe_group(&g).unwrap(),
        st.describe_group(&h).unwrap(),
    );
    assert!(
        src.rules.iter().zip(&dst.rules).all(|(x, y)| x.id != y.id),
        "ids were taken: new ones"
    );
    assert_eq!(dst.rules[4].spec.peer, sg_policy::Peer::Group(h.clone()));
    // Everything else is the same rule.
    assert_eq!(src.rules[0].spec, dst.rules[0].spec);
}

#[test]
fn import_reports_each_skipped_rule_and_why() {
    let mut s = state();
    let g = basic(&mut s, "g");
    let doc = r#"{
      "SecurityGroupId": "sg-elsewhere",
      "Permissions": [
        {"Direction": "ingress", "Policy": "accept", "Priority": "1", "IpProtocol": "tcp", "PortRange": "22/22",
         "SourceCidrIp": "192.168.0.0/16", "CreateTime": "2020-01-20T00:00:00Z", "NicType": "intranet"},
        {"Direction": "ingress", "Policy": "Accept", "Priority": 150, "IpProtocol": "TCP", "PortRange": "80/80", "SourceCidrIp": "0.0.0.0/0"},
        {"Direction": "ingress", "Policy": "Accept", "Priority": 1, "IpProtocol": "SCTP", "PortRange": "80/80", "SourceCidrIp": "0.0.0.0/0"},
        {"Direction": "ingress", "Policy": "Accept", "Priority": 1, "IpProtocol": "TCP", "PortRange": "80/80", "SourceGroupId": "sg-missing"},
        {"Direction": "ingress", "Policy": "Accept", "Priority": 1, "IpProtocol": "TCP", "PortRange": "80/80", "SourceGroupId": "1609982/sg-bp174yoe"},
        {"Direction": "ingress", "Policy": "Accept", "Priority": 1, "IpProtocol": "TCP", "PortRange": "22/22", "SourceCidrIp": "192.168.0.0/16"},
        {"Direction": "ingress", "Policy": "Accept", "Priority": 1, "IpProtocol": "TCP", "PortRange": "22/22", "SourceCidrIp": "10.0.0.1/8"},
        {"Direction": "ingress", "Policy": "Accept", "Priority": 1, "IpProtocol": "TCP", "PortRange": "22/22"},
        {"Direction": "egress", "Policy": "Drop", "Priority": 1, "IpProtocol": "ALL", "PortRange": "-1/-1", "Ipv6DestCidrIp": "10.0.0.0/8"},
        "not an object"
      ]
    }"#;
    let report = import_json(&mut s, &g, doc).unwrap();
    assert_eq!(
        report.imported.iter().map(|r| r.index).collect::<Vec<_>>(),
        vec![0]
    );
    let reasons: Vec<(usize, String)> = report
        .skipped
        .iter()
        .map(|k| (k.index, k.reason.to_string()))
        .collect();
    let expect = [
        (1, "Permissions[1].Priority: 150 is outside 1..=100"),
        (2, "Permissions[2].IpProtocol"),
        (3, "sg-missing"),
        (4, "cross-account"),
        (5, "duplicates rule"),
        (6, "host bits"),
        (7, "exactly one peer"),
        (8, "Ipv6DestCidrIp"),
        (9, "Permissions[9]"),
    ];
    assert_eq!(reasons.len(), expect.len(), "{reasons:?}");
    for ((i, text), (want_i, want)) in reasons.iter().zip(expect) {
        assert_eq!(*i, want_i);
        assert!(text.contains(want), "rule {i}: {text:?} lacks {want:?}");
    }
    assert!(matches!(
        report.skipped[0].reason,
        PolicyError::OutOfRange { .. }
    ));
}

#[test]
fn import_of_more_than_200_rules_is_refused_whole() {
    let mut s = state();
    let g = basic(&mut s, "g");
    let rule_json = |p: u32| {
        format!(
            r#"{{"Direction":"ingress","IpProtocol":"TCP","PortRange":"{p}/{p}","SourceCidrIp":"0.0.0.0/0"}}"#
        )
    };
    let doc = |n: u32| format!("[{}]", (1..=n).map(rule_json).collect::<Vec<_>>().join(","));
    let e = import_json(&mut s, &g, &doc(201)).unwrap_err().to_string();
    assert!(e.contains("201") && e.contains("limit of 200"), "{e}");
    assert_eq!(s.describe_group(&g).unwrap().rules, vec![]);
    let report = import_json(&mut s, &g, &doc(200)).unwrap();
    assert_eq!(report.imported.len(), 200);
}

#[test]
fn csv_import_finds_columns_by_name() {
    let mut s = state();
    let g = basic(&mut s, "g");
    let csv = "CreateTime,IpProtocol,PortRange,Direction,SourceCidrIp,Priority,Policy\n\
               x,TCP,443/443,ingress,0.0.0.0/0,2,Accept\n\
               y,UDP,53/53,ingress,::/0,101,Accept\n";
    let report = import_csv(&mut s, &g, csv).unwrap();
    assert_eq!(report.imported.len(), 1);
    assert_eq!(report.skipped.len(), 1);
    assert!(
        report.skipped[0]
            .reason
            .to_string()
            .contains("rows[1].Priority: 101"),
        "{:?}",
        report.skipped
    );
    let r = &s.describe_group(&g).unwrap().rules[0].spec;
    assert_eq!(
        r,
        &rule("ingress", "Accept", "2", "TCP", "443/443", "0.0.0.0/0")
    );
    assert!(
        import_csv(&mut s, &g, "a,b\n1,2\n").is_err(),
        "no Direction column"
    );
}

#[test]
fn unreadable_documents_are_refused_as_a_whole() {
    let mut s = state();
    let g = basic(&mut s, "g");
    assert!(matches!(
        import_json(&mut s, &g, "{"),
        Err(PolicyError::Document { .. })
    ));
    assert!(matches!(
        import_json(&mut s, &g, r#"{"Rules": []}"#),
        Err(PolicyError::Document { .. })
    ));
    assert!(matches!(
        import_json(&mut s, &g, "42"),
        Err(PolicyError::Document { .. })
    ));
}

/// Imports `doc` (JSON) into a fresh group: the report and the group's rules.
fn import_one(doc: &str) -> (sg_policy::ImportReport, usize) {
    let mut s = state();
    let g = basic(&mut s, "g");
    let report = import_json(&mut s, &g, doc).unwrap();
    let rules = s.describe_group(&g).unwrap().rules.len();
    (report, rules)
}

#[test]
fn a_malformed_imported_rule_id_is_refused_naming_the_row_and_field() {
    for id in ["sgr-ZZ", "sgr-", "rule-1", "sgr-a b", "sg-abc", "sgr-zz!"] {
        let doc = format!(
            r#"{{"Permissions": [
              {{"Direction": "ingress", "IpProtocol": "TCP", "PortRange": "22/22", "SourceCidrIp": "10.0.0.0/8"}},
              {{"SecurityGroupRuleId": "{id}", "Direction": "ingress", "IpProtocol": "TCP", "PortRange": "80/80", "SourceCidrIp": "10.0.0.0/8"}}
            ]}}"#
        );
        let (report, rules) = import_one(&doc);
        assert_eq!(rules, 1, "{id}: only the first rule is imported");
        assert_eq!(report.skipped.len(), 1, "{id}: {report:?}");
        let reason = report.skipped[0].reason.to_string();
        assert!(
            reason.contains("Permissions[1].SecurityGroupRuleId") && reason.contains(id),
            "{id}: {reason}"
        );
        assert_eq!(report.skipped[0].rule_id, id);
    }
    // CSV names the row.
    let mut s = state();
    let g = basic(&mut s, "g");
    let csv = "SecurityGroupRuleId,Direction,IpProtocol,PortRange,SourceCidrIp\n\
               sgr-OOPS,ingress,TCP,22/22,10.0.0.0/8\n";
    let report = import_csv(&mut s, &g, csv).unwrap();
    assert_eq!(report.imported.len(), 0);
    assert!(
        report.skipped[0]
            .reason
            .to_string()
            .contains("rows[0].SecurityGroupRuleId"),
        "{report:?}"
    );
    // Well-formed ids are kept as before, the seeds' spelling included
    // (lowercase letters and digits after the prefix).
    let (report, _) = import_one(
        r#"[{"SecurityGroupRuleId": "sgr-zz", "Direction": "ingress", "IpProtocol": "TCP", "PortRange": "22/22", "SourceCidrIp": "10.0.0.0/8"},
            {"SecurityGroupRuleId": "sgr-bp67acfmxazb4p", "Direction": "ingress", "IpProtocol": "TCP", "PortRange": "23/23", "SourceCidrIp": "10.0.0.0/8"}]"#,
    );
    let ids: Vec<&str> = report.imported.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["sgr-zz", "sgr-bp67acfmxazb4p"]);
}

#[test]
fn a_misspelt_import_field_is_refused_not_read_as_absent() {
    // Read as absent, "Polcy": "Drop" would have imported an Accept.
    let (report, rules) = import_one(
        r#"[{"Direction": "ingress", "Polcy": "Drop", "IpProtocol": "TCP", "PortRange": "22/22", "SourceCidrIp": "0.0.0.0/0"}]"#,
    );
    assert_eq!(rules, 0, "{report:?}");
    let reason = &report.skipped[0].reason;
    assert!(
        matches!(reason, PolicyError::UnknownField { field, name, .. }
            if field == "Permissions[0]" && name == "Polcy"),
        "{reason:?}"
    );
    assert!(
        reason.to_string().contains("Policy"),
        "lists the fields: {reason}"
    );
    // CSV: the column refuses the whole document.
    let mut s = state();
    let g = basic(&mut s, "g");
    let e = import_csv(
        &mut s,
        &g,
        "Direction,Polcy,IpProtocol,PortRange,SourceCidrIp\ningress,Drop,TCP,22/22,0.0.0.0/0\n",
    )
    .unwrap_err();
    assert!(
        matches!(e, PolicyError::Document { format: "CSV", .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("\"Polcy\""), "{e}");
    let e = import_csv(
        &mut s,
        &g,
        "Direction,Policy,Policy,IpProtocol,PortRange,SourceCidrIp\ningress,Drop,Accept,TCP,22/22,0.0.0.0/0\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
    assert_eq!(s.describe_group(&g).unwrap().rules, vec![]);
    // A JSON document's own fields are SecurityGroupId and Permissions.
    let e = import_json(
        &mut s,
        &g,
        r#"{"Permissions": [], "InnerAccessPolicy": "Drop"}"#,
    )
    .unwrap_err();
    assert!(
        matches!(e, PolicyError::Document { format: "JSON", .. })
            && e.to_string().contains("InnerAccessPolicy"),
        "{e}"
    );
}

#[test]
fn fields_the_documents_api_adds_are_accepted_only_when_they_ask_for_nothing() {
    let rule = |extra: &str| {
        format!(
            r#"[{{"Direction": "ingress", "IpProtocol": "TCP", "PortRange": "22/22", "SourceGroupId": "sg-g", {extra}}}]"#
        )
    };
    let mut s = state();
    let g = basic(&mut s, "g");
    let doc = rule(r#""CreateTime": "2020-01-20T00:00:00Z", "NicType": "intranet", "SourceGroupName": "g", "SourceGroupOwnerAccount": """#)
        .replace("sg-g", g.as_str());
    let report = import_json(&mut s, &g, &doc).unwrap();
    assert_eq!(report.imported.len(), 1, "{report:?}");
    for (extra, field, why) in [
        (
            r#""NicType": "internet""#,
            "Permissions[0].NicType",
            "intranet",
        ),
        (
            r#""SourceGroupOwnerAccount": "1609982""#,
            "Permissions[0].SourceGroupOwnerAccount",
            "cross-account",
        ),
    ] {
        let (report, rules) = import_one(&rule(extra));
        assert_eq!(rules, 0, "{extra}");
        let reason = report.skipped[0].reason.to_string();
        assert!(reason.contains(field) && reason.contains(why), "{reason}");
    }
}

//! Input that used to be accepted and then opened a NIC or corrupted what an
//! operator reads (issue 12 item 13): free text with control characters and
//! terminal escapes, platform addresses that exempt everything, and errors
//! naming ids the system gave inside the same request.

use std::collections::BTreeMap;

use crate::support::{basic, bind, rule, state};
use sg_policy::{
    Cidr, CloneOptions, Family, GroupChange, GroupSpec, PolicyError, PortListEntry, PortListSpec,
    PortRange, PrefixListEntry, PrefixListSpec, RuleSpec, Settings, State, Template,
    apply::{desired, document_of, parse},
    import_csv, import_json,
    validate::{PLATFORM_MIN_PREFIX_V4, PLATFORM_MIN_PREFIX_V6},
    validate_state,
};

fn tcp_from(peer: &str, port: u16) -> RuleSpec {
    rule(
        "ingress",
        "Accept",
        "1",
        "TCP",
        &format!("{port}/{port}"),
        peer,
    )
}

/// The character error's parts, or a panic naming what came instead.
fn forbidden(e: &PolicyError) -> (&str, u32, usize) {
    match e {
        PolicyError::ForbiddenCharacter {
            field,
            code,
            position,
            ..
        } => (field.as_str(), *code, *position),
        other => panic!("expected a forbidden character, got {other:?}"),
    }
}

// ---- free text -------------------------------------------------------------------

/// Characters free text refuses: ESC (terminal escapes), tab, newline,
/// carriage return, NUL, DEL, a C1 control (NEL), the right-to-left override
/// and a first-strong isolate (reordering "Trojan Source"), and the line
/// separator.
const BAD: [char; 11] = [
    '\u{1b}', '\t', '\n', '\r', '\0', '\u{7f}', '\u{85}', '\u{202e}', '\u{2068}', '\u{2028}',
    '\u{2029}',
];

/// Every way a user gives free text, each given `text`: the field the
/// error must name (a prefix of it), and the outcome.
fn attempts(
    s: &mut State,
    g: &sg_policy::GroupId,
    text: &str,
) -> Vec<(String, Result<(), PolicyError>)> {
    let mut out: Vec<(String, Result<(), PolicyError>)> = Vec::new();
    let mut push = |field: &str, r: Result<(), PolicyError>| out.push((field.to_owned(), r));
    let group = |f: &dyn Fn(&mut GroupSpec)| {
        let mut spec = GroupSpec::basic("ok");
        f(&mut spec);
        spec
    };
    push(
        "group.name",
        s.create_group(GroupSpec::basic(text)).map(drop),
    );
    push(
        "group.description",
        s.create_group(group(&|g| text.clone_into(&mut g.description)))
            .map(drop),
    );
    push(
        "group.tags[\"ab",
        s.create_group(group(&|g| {
            g.tags = BTreeMap::from([(text.to_owned(), "v".to_owned())]);
        }))
        .map(drop),
    );
    push(
        "group.tags[\"k\"] value",
        s.create_group(group(&|g| {
            g.tags = BTreeMap::from([("k".to_owned(), text.to_owned())]);
        }))
        .map(drop),
    );
    push(
        &format!("groups[{g}].description"),
        s.modify_group(
            g,
            GroupChange {
                description: Some(text.to_owned()),
                ..GroupChange::default()
            },
        ),
    );
    let rule = tcp_from("10.0.0.0/8", 22).with_description(text);
    push(
        "rules[0].description",
        s.authorize_all(g, vec![rule.clone()]).map(drop),
    );
    push("rule.description", s.authorize(g, rule).map(drop));
    let list = |name: &str, description: &str, entry: &str| PrefixListSpec {
        name: name.to_owned(),
        description: description.to_owned(),
        family: Family::Ipv4,
        max_entries: 2,
        entries: vec![PrefixListEntry {
            cidr: Cidr::parse("x", "10.0.0.0/8").unwrap(),
            description: entry.to_owned(),
        }],
    };
    for (field, spec) in [
        ("prefix_list.name", list(text, "", "")),
        ("prefix_list.description", list("pl", text, "")),
        ("prefix_list.entries[0].description", list("pl", "", text)),
    ] {
        push(field, s.create_prefix_list(spec).map(drop));
    }
    let ports = |name: &str, description: &str, entry: &str| PortListSpec {
        name: name.to_owned(),
        description: description.to_owned(),
        max_entries: 2,
        entries: vec![PortListEntry {
            range: PortRange::single(80),
            description: entry.to_owned(),
        }],
    };
    for (field, spec) in [
        ("port_list.name", ports(text, "", "")),
        ("port_list.description", ports("prl", text, "")),
        ("port_list.entries[0].description", ports("prl", "", text)),
    ] {
        push(field, s.create_port_list(spec).map(drop));
    }
    let options = CloneOptions {
        name: Some(text.to_owned()),
        keep_rules: true,
        copy_tags: true,
    };
    push("clone.name", s.clone_group(g, &options).map(drop));
    push(
        "group.name",
        s.create_from_template(Template::SysWebServer, Some(text))
            .map(drop),
    );
    out
}

#[test]
fn control_characters_and_terminal_escapes_in_free_text_are_refused_everywhere() {
    for c in BAD {
        let text = format!("ab{c}cd");
        let code = u32::from(c);
        let mut s = state();
        let g = basic(&mut s, "g");
        let before = s.clone();
        for (want, result) in attempts(&mut s, &g, &text) {
            let e = result.expect_err(&format!("{want} with U+{code:04X} must be refused"));
            let (field, got, position) = forbidden(&e);
            assert!(field.starts_with(&want), "{c:?}: {field} for {want}: {e}");
            assert_eq!((got, position), (code, 3), "{want}: {e}");
            let message = e.to_string();
            assert!(message.contains(&format!("U+{code:04X}")), "{message}");
            assert!(message.contains("at character 3"), "{message}");
            assert!(
                !message.contains(c),
                "the message never holds the character itself: {message:?}"
            );
        }
        assert_eq!(s, before, "{c:?}: nothing changed");
    }
}

#[test]
fn plain_text_of_any_script_is_still_taken() {
    let mut s = state();
    let mut spec = GroupSpec::basic("الويب – web 🌐");
    spec.description = "Zugriff für Büro · שלום \u{200f}(rtl mark) \u{200d}".to_owned();
    let g = s.create_group(spec).unwrap();
    s.authorize(
        &g,
        tcp_from("10.0.0.0/8", 22).with_description("«ssh» 管理"),
    )
    .unwrap();
}

#[test]
fn import_and_apply_refuse_control_characters_naming_their_place() {
    let mut s = state();
    let g = basic(&mut s, "g");
    let doc = r#"[{"Direction": "ingress", "IpProtocol": "TCP", "PortRange": "22/22", "SourceCidrIp": "10.0.0.0/8", "Description": "x\u001b[2Jy"}]"#;
    let report = import_json(&mut s, &g, doc).unwrap();
    assert_eq!(report.imported.len(), 0);
    let (field, code, position) = forbidden(&report.skipped[0].reason);
    assert_eq!(
        (field, code, position),
        ("Permissions[0].Description", 0x1b, 2)
    );
    let csv = "Direction,IpProtocol,PortRange,SourceCidrIp,Description\n\
               ingress,TCP,22/22,10.0.0.0/8,\"tab\there\"\n";
    let report = import_csv(&mut s, &g, csv).unwrap();
    assert_eq!(
        forbidden(&report.skipped[0].reason).0,
        "rows[0].Description"
    );

    for (text, path) in [
        ("groups:\n  - {name: \"web\\e[31m\"}\n", "groups[0].name"),
        (
            "groups:\n  - {name: web, description: \"a\\u202eb\"}\n",
            "groups[0].description",
        ),
        (
            "groups:\n  - name: web\n    rules:\n      - {direction: ingress, protocol: ALL, peer: 0.0.0.0/0, description: \"l1\\nl2\"}\n",
            "groups[0].rules[0].description",
        ),
        (
            "port_lists:\n  - {name: p, max_entries: 1, entries: [{range: 80/80, description: \"\\x07\"}]}\n",
            "port_lists[0].entries[0].description",
        ),
    ] {
        let e = desired(&s, &parse(text).unwrap()).unwrap_err();
        assert_eq!(forbidden(&e).0, path, "{text}: {e}");
    }
}

/// A state as an older agent stored it: a description with an escape,
/// written before free text was checked (by hand here, as the store would
/// read it back).
fn stored_by_an_older_agent() -> (State, sg_policy::GroupId) {
    let mut s = state();
    let g = basic(&mut s, "g");
    s.authorize(&g, tcp_from("10.0.0.0/8", 22)).unwrap();
    let group = std::sync::Arc::make_mut(s.groups.get_mut(&g).unwrap());
    "old\u{1b}[31m".clone_into(&mut group.description);
    "old\u{202e}".clone_into(&mut group.rules[0].spec.description);
    (s, g)
}

#[test]
fn text_an_older_agent_stored_still_loads_and_takes_other_changes() {
    let (mut s, g) = stored_by_an_older_agent();
    // It loads (the store validates with validate_state).
    validate_state(&s).expect("still a valid state");
    // Other changes go on, the group's included, and so does its export.
    s.authorize(&g, tcp_from("10.0.0.0/8", 23)).unwrap();
    s.modify_group(
        &g,
        GroupChange {
            name: Some("g2".into()),
            ..GroupChange::default()
        },
    )
    .unwrap();
    let next = desired(&s, &document_of(&s)).unwrap();
    assert_eq!(next, s, "applying its own export changes nothing");
    // New or changed bad text is refused; clearing it is taken.
    let e = s
        .modify_group(
            &g,
            GroupChange {
                description: Some("new\u{1b}".into()),
                ..GroupChange::default()
            },
        )
        .unwrap_err();
    assert_eq!(forbidden(&e).0, format!("groups[{g}].description"));
    s.modify_group(
        &g,
        GroupChange {
            description: Some(String::new()),
            ..GroupChange::default()
        },
    )
    .unwrap();
    // A clone copies it as new text: refused, naming the clone.
    let (mut s, g) = stored_by_an_older_agent();
    let e = s
        .clone_group(
            &g,
            &CloneOptions {
                name: None,
                keep_rules: false,
                copy_tags: false,
            },
        )
        .unwrap_err();
    assert_eq!(forbidden(&e).0, "clone.description");
}

// ---- platform addresses ----------------------------------------------------------

fn with_platform(s: &mut State, cidrs: &[&str]) -> Result<(), PolicyError> {
    s.set_settings(Settings {
        platform_addresses: cidrs.iter().map(|c| Cidr::parse("x", c).unwrap()).collect(),
        ..Settings::default()
    })
}

#[test]
fn a_platform_address_that_exempts_everything_is_refused() {
    assert_eq!((PLATFORM_MIN_PREFIX_V4, PLATFORM_MIN_PREFIX_V6), (8, 32));
    for (cidrs, index, entry, limit) in [
        (&["0.0.0.0/0"][..], 0, "0.0.0.0/0", "/8"),
        (&["100.100.100.200", "0.0.0.0/1"], 1, "0.0.0.0/1", "/8"),
        (&["10.0.0.0/7"], 0, "10.0.0.0/7", "/8"),
        (&["::/0"], 0, "::/0", "/32"),
        (&["2001::/31"], 0, "2001::/31", "/32"),
    ] {
        let mut s = state();
        let before = s.clone();
        let e = with_platform(&mut s, cidrs).unwrap_err();
        let PolicyError::Invalid {
            field,
            value,
            reason,
        } = &e
        else {
            panic!("{e:?}");
        };
        assert_eq!(field, &format!("settings.platform_addresses[{index}]"));
        assert_eq!(value, entry);
        assert!(
            reason.contains(limit) && reason.contains("every rule"),
            "{e}"
        );
        assert_eq!(s, before);
    }
    // The seeds' metadata service and health-check range fit, and a /32 of
    // IPv6.
    let mut s = state();
    with_platform(
        &mut s,
        &[
            "100.100.100.200",
            "100.64.0.0/10",
            "10.0.0.0/8",
            "2001:db8::/32",
            "fd00::1",
        ],
    )
    .unwrap();
    // An apply document is refused the same way.
    let e = desired(
        &state(),
        &parse("settings: {platform_addresses: [0.0.0.0/0]}\n").unwrap(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("settings.platform_addresses[0]"),
        "{e}"
    );
}

#[test]
fn a_stored_broad_platform_address_loads_but_takes_no_change_until_narrowed() {
    let mut s = state();
    let g = basic(&mut s, "g");
    s.settings.platform_addresses = vec![Cidr::parse("x", "0.0.0.0/0").unwrap()];
    validate_state(&s).expect("a store of an older agent still loads");
    let e = s.authorize(&g, tcp_from("10.0.0.0/8", 22)).unwrap_err();
    assert!(
        e.to_string().contains("settings.platform_addresses[0]"),
        "{e}"
    );
    with_platform(&mut s, &["100.100.100.200"]).expect("narrowing is the way out");
    s.authorize(&g, tcp_from("10.0.0.0/8", 22)).unwrap();
}

// ---- errors name what the user gave ---------------------------------------------

/// Every `sgr-…`/`sg-…`/`pl-…`/`prl-…` id in `text`.
fn ids_in(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| {
            ["sg-", "sgr-", "pl-", "prl-"]
                .iter()
                .any(|p| w.starts_with(p))
        })
        .map(str::to_owned)
        .collect()
}

/// Asserts `e` names no id but those of `known` (the state before the
/// request).
fn names_only_known_ids(e: &PolicyError, known: &State) {
    let text = e.to_string();
    for id in ids_in(&text) {
        let seen = known.groups.keys().any(|g| g.as_str() == id)
            || known.all_rules().any(|(_, r)| r.id.as_str() == id)
            || known.prefix_lists.keys().any(|l| l.as_str() == id)
            || known.port_lists.keys().any(|l| l.as_str() == id);
        assert!(seen, "{text}: names {id}, which the user never saw");
    }
}

#[test]
fn a_new_rule_duplicating_another_of_the_request_names_its_place_not_its_new_id() {
    let mut s = state();
    let g = basic(&mut s, "g");
    let before = s.clone();
    let r = tcp_from("10.0.0.0/8", 22);
    let e = s
        .authorize_all(
            &g,
            vec![
                tcp_from("10.0.0.0/8", 80),
                r.clone(),
                r.with_description("again"),
            ],
        )
        .unwrap_err();
    names_only_known_ids(&e, &before);
    let text = e.to_string();
    assert!(
        text.starts_with("rules[2]: duplicates rule rules[1] of this request"),
        "{text}"
    );
}

#[test]
fn a_new_rule_taking_a_nic_past_1000_rules_names_the_nic_and_the_limit() {
    let mut s = state();
    let g = basic(&mut s, "g");
    bind(&mut s, "eth0", &["10.0.0.2"], &[&g]);
    let rules: Vec<RuleSpec> = (1..=1000).map(|p| tcp_from("10.0.0.0/8", p)).collect();
    s.authorize_all(&g, rules).unwrap();
    let before = s.clone();
    let e = s
        .authorize_all(&g, vec![tcp_from("10.0.0.0/8", 2000)])
        .unwrap_err();
    names_only_known_ids(&e, &before);
    assert!(
        e.to_string()
            .contains("nics[eth0].rules: 1001 exceeds the limit of 1000"),
        "{e}"
    );
}

#[test]
fn errors_of_a_new_group_list_clone_or_template_name_what_the_user_gave() {
    let long = "x".repeat(129);
    let mut s = state();
    let g = basic(&mut s, "g");
    s.authorize(&g, tcp_from("10.0.0.0/8", 22)).unwrap();
    let before = s.clone();
    let mut checks: Vec<(&str, PolicyError)> = vec![
        (
            "group.name length",
            s.create_group(GroupSpec::basic(&long)).unwrap_err(),
        ),
        (
            "group.name length",
            s.create_from_template(Template::Default, Some(&long))
                .unwrap_err(),
        ),
        (
            "clone.name length",
            s.clone_group(
                &g,
                &CloneOptions {
                    name: Some(long.clone()),
                    keep_rules: true,
                    copy_tags: false,
                },
            )
            .unwrap_err(),
        ),
    ];
    let mut pl = PrefixListSpec {
        name: "pl".into(),
        description: String::new(),
        family: Family::Ipv6,
        max_entries: 1,
        entries: vec![PrefixListEntry {
            cidr: Cidr::parse("x", "10.0.0.0/8").unwrap(),
            description: String::new(),
        }],
    };
    checks.push((
        "prefix_list.entries[0].cidr",
        s.create_prefix_list(pl.clone()).unwrap_err(),
    ));
    pl.entries.clear();
    pl.max_entries = 0;
    checks.push((
        "prefix_list.max_entries",
        s.create_prefix_list(pl).unwrap_err(),
    ));
    checks.push((
        "port_list.max_entries",
        s.create_port_list(PortListSpec {
            name: "prl".into(),
            description: String::new(),
            max_entries: 500,
            entries: vec![],
        })
        .unwrap_err(),
    ));
    for (want, e) in checks {
        names_only_known_ids(&e, &before);
        assert!(e.to_string().starts_with(want), "{want}: {e}");
    }
    assert_eq!(s, before);
}

#[test]
fn an_imported_rule_duplicating_an_earlier_row_names_that_row() {
    let mut s = state();
    let g = basic(&mut s, "g");
    let before = s.clone();
    let row = r#"{"Direction": "ingress", "IpProtocol": "TCP", "PortRange": "22/22", "SourceCidrIp": "10.0.0.0/8"}"#;
    let report = import_json(&mut s, &g, &format!("[{row}, {row}]")).unwrap();
    assert_eq!(report.imported.len(), 1);
    let e = &report.skipped[0].reason;
    names_only_known_ids(e, &before);
    assert!(
        e.to_string()
            .starts_with("Permissions[1]: duplicates rule Permissions[0] of this import"),
        "{e}"
    );
}

#[test]
fn apply_errors_name_document_places_for_what_it_makes() {
    let current = state();
    // Two equal rules of a new group: the first is named by its place.
    let e = desired(
        &current,
        &parse(
            "groups:\n  - name: web\n    rules:\n      - {direction: ingress, protocol: ALL, peer: 0.0.0.0/0}\n      - {direction: ingress, protocol: ALL, peer: 0.0.0.0/0, description: again}\n",
        )
        .unwrap(),
    )
    .unwrap_err();
    names_only_known_ids(&e, &current);
    assert!(
        e.to_string()
            .starts_with("groups[0].rules[1]: duplicates rule groups[0].rules[0] of security group groups[0] (web)"),
        "{e}"
    );
    // A NIC in a new basic and a new enterprise group.
    let e = desired(
        &current,
        &parse(
            "groups:\n  - name: web\n  - {name: iso, type: enterprise}\nnics:\n  - {name: eth0, mode: local, groups: [web, iso]}\n",
        )
        .unwrap(),
    )
    .unwrap_err();
    names_only_known_ids(&e, &current);
    assert!(
        e.to_string()
            .contains("groups[0] (web) is basic but groups[1] (iso) is enterprise"),
        "{e}"
    );
    // Ids of the current state are still named: the user can look them up.
    let mut s = state();
    let g = basic(&mut s, "g");
    let mut doc = document_of(&s);
    doc.groups[0].rules = vec![
        sg_policy::apply::RuleDoc {
            direction: "ingress".into(),
            protocol: "ALL".into(),
            peer: g.to_string(),
            ..Default::default()
        };
        21
    ];
    for (i, r) in doc.groups[0].rules.iter_mut().enumerate() {
        r.description = format!("{i}");
        r.priority = Some(i64::try_from(i + 1).unwrap().into());
    }
    let e = desired(&s, &doc).unwrap_err();
    assert!(
        e.to_string()
            .contains("groups[0].rules: 21 exceeds the limit of 20"),
        "{e}"
    );
}

//! Declarative apply: documents (YAML and JSON), the desired state they
//! describe, the refusals, `document_of` as the way back, and the diff.

use std::sync::Arc;

use crate::support::{basic, bind, rule, state};
use proptest::prelude::*;
use sg_policy::{
    Cidr, Family, GroupId, GroupSpec, PolicyError, PortListEntry, PortListSpec, PortRange,
    PrefixListEntry, PrefixListSpec, State,
    apply::{
        Change, Document, GroupDoc, NicDoc, RuleDoc, Scalar, desired, diff, document_of, parse,
    },
    validate_state,
};

const YAML: &str = r#"
settings:
  block_port_25: false
prefix_lists:
  - name: office
    family: ipv4
    max_entries: 10
    entries:
      - {cidr: 10.0.0.0/8, description: hq}
port_lists:
  - name: web-ports
    max_entries: 5
    entries: [{range: 80/80}, {range: 443/443}]
groups:
  - name: web
    type: basic
    tags: {env: prod}
    rules:
      - {direction: ingress, policy: Accept, priority: 1, protocol: TCP, port_range: web-ports, peer: office}
      - {direction: ingress, protocol: TCP, port_range: 22/22, peer: admin}
      - {direction: egress, policy: Drop, priority: 100, protocol: ALL, peer: 0.0.0.0/0, description: no egress}
  - name: admin
    description: operators
    rules:
      - {direction: ingress, protocol: 58, peer: "2001:db8::/32", source_port_range: null}
nics:
  - name: veth0
    mode: local
    addresses: [10.0.0.2]
    anti_spoof: null
    groups: [web, admin]
"#;

const JSON: &str = r#"
{
  "settings": {"block_port_25": false},
  "prefix_lists": [
    {"name": "office", "family": "ipv4", "max_entries": 10,
     "entries": [{"cidr": "10.0.0.0/8", "description": "hq"}]}
  ],
  "port_lists": [
    {"name": "web-ports", "max_entries": 5, "entries": [{"range": "80/80"}, {"range": "443/443"}]}
  ],
  "groups": [
    {"name": "web", "type": "basic", "tags": {"env": "prod"}, "rules": [
      {"direction": "ingress", "policy": "Accept", "priority": 1, "protocol": "TCP",
       "port_range": "web-ports", "peer": "office"},
      {"direction": "ingress", "protocol": "TCP", "port_range": "22/22", "peer": "admin"},
      {"direction": "egress", "policy": "Drop", "priority": 100, "protocol": "ALL",
       "peer": "0.0.0.0/0", "description": "no egress"}
    ]},
    {"name": "admin", "description": "operators", "rules": [
      {"direction": "ingress", "protocol": 58, "peer": "2001:db8::/32"}
    ]}
  ],
  "nics": [
    {"name": "veth0", "mode": "local", "addresses": ["10.0.0.2"], "groups": ["web", "admin"]}
  ]
}
"#;

/// The field an error names (empty for variants that name an object instead).
fn field(e: &PolicyError) -> String {
    match e {
        PolicyError::Invalid { field, .. }
        | PolicyError::OutOfRange { field, .. }
        | PolicyError::LimitExceeded { field, .. }
        | PolicyError::NotFound { field, .. }
        | PolicyError::AlreadyExists { field, .. }
        | PolicyError::Enterprise { field, .. }
        | PolicyError::DuplicateRule { field, .. } => field.clone(),
        _ => String::new(),
    }
}

fn doc(text: &str) -> Document {
    parse(text).expect("document")
}

/// `desired` on a document that must be refused; the error.
fn refused(current: &State, text: &str) -> PolicyError {
    let before = current.clone();
    let e = desired(current, &doc(text)).expect_err("refused");
    assert_eq!(current, &before, "the current state is never modified");
    e
}

fn group_named<'a>(s: &'a State, name: &str) -> &'a sg_policy::SecurityGroup {
    let mut it = s.groups.values().filter(|g| g.name == name);
    let g = it.next().expect("group by name");
    assert!(it.next().is_none(), "one group named {name}");
    g
}

fn lines(changes: &[Change]) -> Vec<String> {
    changes.iter().map(ToString::to_string).collect()
}

fn applied(current: &State, text: &str) -> State {
    desired(current, &doc(text)).expect("applies")
}

// ---- parsing -------------------------------------------------------------------

#[test]
fn yaml_and_json_of_one_document_parse_the_same() {
    let y = doc(YAML);
    let j = doc(JSON);
    assert_eq!(y, j);
    assert_eq!(y.groups[1].rules[0].protocol, Scalar::Number(58));
    assert_eq!(y.groups[0].rules[0].priority, Some(Scalar::Number(1)));
    // Leading white space before the JSON brace still means JSON.
    assert_eq!(doc(&format!("\n  \t{}", JSON.trim())), j);
}

#[test]
fn unknown_fields_are_refused_everywhere() {
    for (text, name) in [
        ("groups: []\ncolour: red\n", "colour"),
        (
            "groups:\n  - name: web\n    rules:\n      - {direction: ingress, protocol: ALL, peer: 0.0.0.0/0, prio: 1}\n",
            "prio",
        ),
        (
            "nics:\n  - {name: e0, mode: local, groups: [], vlan: 3}\n",
            "vlan",
        ),
        (
            "{\"groups\": [{\"name\": \"web\", \"colour\": 1}]}",
            "colour",
        ),
        (
            "settings: {block_port_25: true, block_port_26: true}\n",
            "block_port_26",
        ),
        (
            "settings: {session_timeouts: {other_secs: 5, udp_secs: 5}}\n",
            "udp_secs",
        ),
    ] {
        let e = parse(text).expect_err(text);
        assert!(matches!(e, PolicyError::Document { .. }), "{e}");
        let message = e.to_string();
        assert!(message.contains(name), "{message} names {name}");
        assert!(message.contains("unknown field"), "{message}");
    }
}

#[test]
fn empty_and_malformed_documents_are_refused() {
    assert!(matches!(
        parse("   \n"),
        Err(PolicyError::Document { format: "YAML", .. })
    ));
    assert!(matches!(
        parse("{\"groups\": ["),
        Err(PolicyError::Document { format: "JSON", .. })
    ));
    assert!(matches!(
        parse("groups: {name: web}"),
        Err(PolicyError::Document { format: "YAML", .. })
    ));
    // `{}` is the explicit empty state.
    assert_eq!(doc("{}"), Document::default());
}

#[test]
fn a_comment_only_document_is_refused_like_a_blank_one() {
    for text in [
        "",
        "   \n",
        "# only a comment\n",
        "# one\n\n  # two\n",
        "---\n",
        "---\n# a comment\n",
        "--- # a comment\n",
        "null\n",
        "~\n",
        "--- ~\n",
        "\u{feff}# a comment after a byte order mark\n",
    ] {
        let e = parse(text).expect_err(text);
        let PolicyError::Document { format, reason } = &e else {
            panic!("{text:?}: {e:?}");
        };
        assert_eq!(*format, "YAML", "{text:?}");
        assert!(reason.contains("the document is empty"), "{text:?}: {e}");
        assert!(
            reason.contains("{}") && reason.contains("allow_delete_all"),
            "{text:?}: says how to ask for the empty state: {e}"
        );
    }
    // Only the explicit `{}` is the empty state, in JSON and in YAML.
    for text in ["{}", " {}\n", "--- {}\n", "# empty on purpose\n{}\n"] {
        assert_eq!(doc(text), Document::default(), "{text:?}");
    }
}

#[test]
fn an_apply_that_unbinds_every_nic_or_deletes_every_group_needs_allow_delete_all() {
    use sg_policy::apply::{Sweep, check_sweep};
    let s = applied(&state(), YAML);
    let empty = applied(&s, "{}");
    assert!(empty.groups.is_empty() && empty.nics.is_empty());

    let e = check_sweep(&s, &empty, false).expect_err("refused without the flag");
    assert!(matches!(e, PolicyError::Sweeping { .. }), "{e:?}");
    let text = e.to_string();
    for want in [
        "nothing changed",
        "unbind every NIC (veth0)",
        "delete every security group",
        "(web)",
        "(admin)",
        "allow_delete_all",
        "--allow-delete-all",
    ] {
        assert!(text.contains(want), "{text} lacks {want:?}");
    }
    let sweep = check_sweep(&s, &empty, true)
        .expect("allowed with the flag")
        .expect("still a sweep");
    let lines = sweep.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("! unbinds every NIC") && lines[0].contains("veth0"));
    assert!(lines[1].starts_with("! deletes every security group"));

    // Every NIC unbound, the groups kept: only the NICs are named.
    let mut no_nics = document_of(&s);
    no_nics.nics.clear();
    let kept = desired(&s, &no_nics).unwrap();
    let sweep = Sweep::of(&s, &kept).expect("a sweep");
    assert_eq!(sweep.unbound, vec!["veth0".to_owned()]);
    assert_eq!(sweep.deleted, Vec::<String>::new());
    assert!(check_sweep(&s, &kept, false).is_err());

    // Every group deleted where no NIC was bound: refused too.
    let mut unbound = s.clone();
    unbound.unbind_nic("veth0").unwrap();
    let e = check_sweep(&unbound, &empty, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("every security group") && !e.contains("NIC"),
        "{e}"
    );

    // Not a sweep: one NIC of two unbound; an empty state kept empty.
    let mut two = document_of(&s);
    let mut second = two.nics[0].clone();
    second.name = "veth1".to_owned();
    second.addresses = vec!["10.0.0.3".to_owned()];
    two.nics.push(second);
    let two = desired(&s, &two).unwrap();
    let one = desired(&two, &document_of(&s)).unwrap();
    assert_eq!(Sweep::of(&two, &one), None);
    assert_eq!(check_sweep(&two, &one, false), Ok(None));
    assert_eq!(Sweep::of(&state(), &applied(&state(), "{}")), None);
}

#[test]
fn a_sweep_names_at_most_ten_objects_and_counts_the_rest() {
    use sg_policy::apply::Sweep;
    let sweep = Sweep {
        unbound: (0..12).map(|i| format!("veth{i}")).collect(),
        deleted: Vec::new(),
    };
    let line = &sweep.lines()[0];
    assert!(
        line.contains("veth9 and 2 more") && !line.contains("veth10"),
        "{line}"
    );
}

// ---- desired -------------------------------------------------------------------

#[test]
fn a_document_applied_to_an_empty_state_builds_it() {
    let empty = state();
    let s = applied(&empty, YAML);
    validate_state(&s).expect("valid");
    assert!(!s.settings.block_port_25);
    assert_eq!(s.groups.len(), 2);
    let web = group_named(&s, "web");
    let admin = group_named(&s, "admin");
    let office = s.prefix_lists.values().next().expect("prefix list");
    let ports = s.port_lists.values().next().expect("port list");
    assert_eq!(office.family, Family::Ipv4);
    assert_eq!(office.entries[0].description, "hq");
    assert_eq!(ports.entries.len(), 2);
    assert_eq!(web.tags.get("env").map(String::as_str), Some("prod"));
    assert_eq!(admin.description, "operators");
    // Names became ids, in document order.
    let expect = [
        rule(
            "ingress",
            "Accept",
            "1",
            "TCP",
            ports.id.as_str(),
            office.id.as_str(),
        ),
        rule("ingress", "Accept", "1", "TCP", "22/22", admin.id.as_str()),
        rule("egress", "Drop", "100", "ALL", "-1/-1", "0.0.0.0/0").with_description("no egress"),
    ];
    let specs: Vec<_> = web.rules.iter().map(|r| r.spec.clone()).collect();
    assert_eq!(specs, expect);
    assert_eq!(
        admin.rules[0].spec,
        rule("ingress", "Accept", "1", "ICMPv6", "-1/-1", "2001:db8::/32")
    );
    let nic = s.nic("veth0").expect("nic");
    assert_eq!(nic.groups, vec![web.id.clone(), admin.id.clone()]);
    // Fresh ids came from the state's generator, which moved on.
    assert_ne!(s.ids, empty.ids);
    assert_eq!(empty, state(), "the current state is untouched");
}

#[test]
fn the_same_document_twice_changes_nothing() {
    let s = applied(&state(), YAML);
    let again = applied(&s, YAML);
    assert_eq!(again, s);
    assert_eq!(diff(&s, &again), vec![]);
    let from_json = applied(&s, JSON);
    assert_eq!(from_json, s);
}

#[test]
fn settings_absent_are_kept_and_present_are_exact() {
    let s = applied(&state(), YAML);
    assert!(!s.settings.block_port_25);
    let without = YAML.replace("settings:\n  block_port_25: false\n", "");
    assert!(!applied(&s, &without).settings.block_port_25, "kept");
    let defaults = YAML.replace("  block_port_25: false\n", "  {}\n");
    let d = applied(&s, &defaults);
    assert_eq!(d.settings, sg_policy::Settings::default());
}

#[test]
fn export_then_apply_is_a_no_op() {
    let s = applied(&state(), YAML);
    let d = document_of(&s);
    assert_eq!(desired(&s, &d).expect("applies"), s);
    // Through text too, both formats.
    let yaml = serde_norway::to_string(&d).expect("yaml");
    let json = serde_json::to_string_pretty(&d).expect("json");
    assert_eq!(doc(&yaml), d);
    assert_eq!(doc(&json), d);
    assert_eq!(applied(&s, &yaml), s);
}

#[test]
fn an_exported_document_rebuilds_the_state_elsewhere() {
    let s = applied(&state(), YAML);
    let elsewhere = State::with_seed(7);
    let copy = desired(&elsewhere, &document_of(&s)).expect("applies");
    // Every id is given, so none is drawn: only the generator differs.
    assert_eq!(copy.ids, elsewhere.ids);
    let mut same = copy.clone();
    same.ids = s.ids.clone();
    assert_eq!(same, s);
}

#[test]
fn objects_left_out_are_deleted() {
    let s = applied(&state(), YAML);
    let smaller = applied(
        &s,
        "groups:\n  - name: admin\n    description: operators\n    rules:\n      - {direction: ingress, protocol: 58, peer: \"2001:db8::/32\"}\n",
    );
    assert_eq!(smaller.groups.len(), 1);
    assert_eq!(
        group_named(&smaller, "admin").id,
        group_named(&s, "admin").id
    );
    assert_eq!(smaller.prefix_lists.len(), 0);
    assert_eq!(smaller.port_lists.len(), 0);
    assert_eq!(smaller.nics.len(), 0);
}

#[test]
fn groups_and_lists_without_id_match_by_name_and_renames_need_the_id() {
    let s = applied(&state(), YAML);
    let web = group_named(&s, "web").id.clone();
    // Renamed without an id: a new group (the old one is deleted).
    let renamed = YAML
        .replace("name: web\n", "name: www\n")
        .replace("[web, admin]", "[www, admin]");
    let r = applied(&s, &renamed);
    assert_ne!(group_named(&r, "www").id, web);
    // Renamed with the id: the same group.
    let by_id = YAML
        .replace("name: web\n", &format!("name: www\n    id: {web}\n"))
        .replace("[web, admin]", "[www, admin]");
    let r = applied(&s, &by_id);
    assert_eq!(group_named(&r, "www").id, web);
    assert_eq!(
        lines(&diff(&s, &r)),
        vec![format!("~ group {web} (www): name \"web\" -> \"www\"")]
    );
}

#[test]
fn two_current_groups_of_one_name_match_neither() {
    let mut s = state();
    let a = basic(&mut s, "twin");
    let b = basic(&mut s, "twin");
    let r = applied(&s, "groups:\n  - name: twin\n");
    assert_eq!(r.groups.len(), 1);
    let id = r.groups.keys().next().expect("group");
    assert!(id != &a && id != &b, "new: no unique match");
}

#[test]
fn a_group_given_by_id_is_created_with_that_id() {
    let r = applied(&state(), "groups:\n  - {id: sg-chosen1, name: web}\n");
    assert!(
        r.groups
            .contains_key(&GroupId::parse("t", "sg-chosen1").expect("id"))
    );
    let e = refused(&state(), "groups:\n  - {id: sg-Bad, name: web}\n");
    assert_eq!(field(&e), "groups[0].id");
    let e = refused(
        &state(),
        "groups:\n  - {id: sg-a1, name: web}\n  - {id: sg-a1, name: api}\n",
    );
    assert_eq!(field(&e), "groups[1].id");
    assert!(e.to_string().contains("groups[0]"), "{e}");
}

#[test]
fn rule_ids_are_kept_when_unchanged_and_new_when_changed() {
    let s = applied(&state(), YAML);
    let web = group_named(&s, "web");
    let old: Vec<_> = web.rules.iter().map(|r| r.id.clone()).collect();
    // Change the second rule's port, swap the first and the third.
    let changed = YAML
        .replace("port_range: 22/22", "port_range: 2222/2222")
        .replace(
            "      - {direction: ingress, policy: Accept, priority: 1, protocol: TCP, port_range: web-ports, peer: office}\n",
            "",
        )
        .replace(
            "description: no egress}\n",
            "description: no egress}\n      - {direction: ingress, policy: Accept, priority: 1, protocol: TCP, port_range: web-ports, peer: office}\n",
        );
    let r = applied(&s, &changed);
    let now: Vec<_> = group_named(&r, "web")
        .rules
        .iter()
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(now[1], old[2], "unchanged rule keeps its id");
    assert_eq!(now[2], old[0], "unchanged rule keeps its id");
    assert!(!old.contains(&now[0]), "a changed rule without id is new");
    // A description counts.
    let redescribed = YAML.replace("no egress", "nothing out");
    let r = applied(&s, &redescribed);
    assert_ne!(group_named(&r, "web").rules[2].id, old[2]);
    // With its id, a changed rule keeps it.
    let with_id = YAML.replace(
        "port_range: 22/22, peer: admin",
        &format!("port_range: 2222/2222, peer: admin, id: {}", old[1]),
    );
    let r = applied(&s, &with_id);
    assert_eq!(group_named(&r, "web").rules[1].id, old[1]);
}

#[test]
fn a_rule_id_claimed_elsewhere_is_not_reused_by_an_equal_rule() {
    let mut s = state();
    let g = basic(&mut s, "g");
    let id = s
        .authorize(
            &g,
            rule("ingress", "Accept", "1", "ALL", "-1/-1", "10.0.0.0/8"),
        )
        .expect("rule");
    // The document moves the id to another rule and keeps an equal rule
    // without id: the equal rule must get a fresh id.
    let text = format!(
        "groups:\n  - name: g\n    rules:\n      - {{direction: ingress, protocol: ALL, peer: 10.0.0.0/8}}\n      - {{id: {id}, direction: ingress, protocol: ALL, peer: 10.1.0.0/16}}\n"
    );
    let r = applied(&s, &text);
    let rules = &group_named(&r, "g").rules;
    assert_eq!(rules[1].id, id);
    assert_ne!(rules[0].id, id);
}

#[test]
fn names_refer_to_groups_and_lists() {
    let s = applied(&state(), YAML);
    let web = group_named(&s, "web");
    let office = s.prefix_lists.values().next().expect("pl");
    let ports = s.port_lists.values().next().expect("prl");
    assert_eq!(web.rules[0].spec.peer.to_string(), office.id.to_string());
    assert_eq!(
        web.rules[0].spec.ports,
        sg_policy::PortSpec::List(ports.id.clone())
    );
    // Ids work as well as names, and address-looking text stays an address.
    let by_id = YAML
        .replace(
            "port_range: web-ports",
            &format!("port_range: {}", ports.id),
        )
        .replace("peer: office", &format!("peer: {}", office.id));
    assert_eq!(applied(&s, &by_id), s);
}

#[test]
fn an_ambiguous_name_is_refused_naming_it() {
    let two_webs = "groups:\n  - name: web\n  - name: web\n  - name: app\n    rules:\n      - {direction: ingress, protocol: ALL, peer: web}\n";
    let e = refused(&state(), two_webs);
    assert_eq!(field(&e), "groups[2].rules[0].peer");
    assert!(e.to_string().contains("ambiguous"), "{e}");
    assert!(e.to_string().contains("\"web\""), "{e}");
    let nic = "groups:\n  - name: web\n  - name: web\nnics:\n  - {name: e0, mode: local, groups: [web]}\n";
    let e = refused(&state(), nic);
    assert_eq!(field(&e), "nics[0].groups[0]");
    assert!(e.to_string().contains("ambiguous"), "{e}");
    let group_and_list = "prefix_lists:\n  - {name: web, family: ipv4, max_entries: 1}\ngroups:\n  - name: web\n    rules:\n      - {direction: ingress, protocol: ALL, peer: web}\n";
    let e = refused(&state(), group_and_list);
    assert_eq!(field(&e), "groups[0].rules[0].peer");
    assert!(e.to_string().contains("ambiguous"), "{e}");
    let lists = "port_lists:\n  - {name: p, max_entries: 1}\n  - {name: p, max_entries: 1}\ngroups:\n  - name: web\n    rules:\n      - {direction: ingress, protocol: TCP, port_range: p, peer: 0.0.0.0/0}\n";
    let e = refused(&state(), lists);
    assert_eq!(field(&e), "groups[0].rules[0].port_range");
    assert!(e.to_string().contains("ambiguous"), "{e}");
}

#[test]
fn a_missing_name_is_refused_naming_the_field() {
    let peer = "groups:\n  - name: web\n    rules:\n      - {direction: ingress, protocol: ALL, peer: nobody}\n";
    let e = refused(&state(), peer);
    assert_eq!(field(&e), "groups[0].rules[0].peer");
    assert!(e.to_string().contains("nobody"), "{e}");
    let ports = "groups:\n  - name: web\n    rules:\n      - {direction: ingress, protocol: TCP, port_range: web-ports, peer: 0.0.0.0/0}\n";
    let e = refused(&state(), ports);
    assert_eq!(field(&e), "groups[0].rules[0].port_range");
    let nic = "groups:\n  - name: web\nnics:\n  - {name: e0, mode: local, groups: [web, api]}\n";
    let e = refused(&state(), nic);
    assert_eq!(field(&e), "nics[0].groups[1]");
    assert!(e.to_string().contains("api"), "{e}");
    // An id that is not in the document is missing too (the document is the
    // whole state).
    let mut s = state();
    let g = basic(&mut s, "old");
    let gone = format!(
        "groups:\n  - name: web\n    rules:\n      - {{direction: ingress, protocol: ALL, peer: {g}}}\n"
    );
    let e = refused(&s, &gone);
    assert_eq!(field(&e), "groups[0].rules[0].peer");
}

#[test]
fn a_cidr_with_host_bits_is_refused_naming_the_path() {
    let text = "groups:\n  - name: web\n  - name: app\n    rules:\n      - {direction: ingress, protocol: ALL, peer: 0.0.0.0/0}\n      - {direction: ingress, protocol: ALL, peer: 10.0.0.1/24}\n";
    let e = refused(&state(), text);
    assert_eq!(field(&e), "groups[1].rules[1].peer");
    assert!(e.to_string().contains("host bits"), "{e}");
    let entry = "prefix_lists:\n  - {name: o, family: ipv4, max_entries: 2, entries: [{cidr: 10.0.0.0/8}, {cidr: 192.168.1.1/16}]}\n";
    let e = refused(&state(), entry);
    assert_eq!(field(&e), "prefix_lists[0].entries[1].cidr");
    assert!(e.to_string().contains("host bits"), "{e}");
    let local = "groups:\n  - name: web\n    rules:\n      - {direction: ingress, protocol: ALL, peer: 0.0.0.0/0, local: 10.0.0.5/30}\n";
    assert_eq!(field(&refused(&state(), local)), "groups[0].rules[0].local");
}

#[test]
fn priority_zero_and_101_are_refused() {
    for p in ["0", "101", "\"0\"", "-3"] {
        let text = format!(
            "groups:\n  - name: web\n    rules:\n      - {{direction: ingress, protocol: ALL, peer: 0.0.0.0/0}}\n      - {{direction: egress, protocol: ALL, peer: 0.0.0.0/0, priority: {p}}}\n"
        );
        let e = refused(&state(), &text);
        assert_eq!(field(&e), "groups[0].rules[1].priority", "{p}");
        assert!(e.to_string().contains("1..=100"), "{e}");
    }
    for p in ["1", "100"] {
        let text = format!(
            "groups:\n  - name: web\n    rules:\n      - {{direction: ingress, protocol: ALL, peer: 0.0.0.0/0, priority: {p}}}\n"
        );
        applied(&state(), &text);
    }
}

#[test]
fn bad_values_name_their_field() {
    for (text, path) in [
        ("groups:\n  - {name: web, type: huge}\n", "groups[0].type"),
        (
            "groups:\n  - {name: web, inner_access_policy: Maybe}\n",
            "groups[0].inner_access_policy",
        ),
        (
            "groups:\n  - {name: web, type: enterprise, inner_access_policy: Accept}\n",
            "groups[0].inner_access_policy",
        ),
        (
            "groups:\n  - {name: web, type: enterprise, inner_access_policy: Drop}\n",
            "groups[0].inner_access_policy",
        ),
        (
            "groups:\n  - name: web\n    rules:\n      - {direction: sideways, protocol: ALL, peer: 0.0.0.0/0}\n",
            "groups[0].rules[0].direction",
        ),
        (
            "groups:\n  - name: web\n    rules:\n      - {direction: ingress, protocol: SCTPX, peer: 0.0.0.0/0}\n",
            "groups[0].rules[0].protocol",
        ),
        (
            "groups:\n  - name: web\n    rules:\n      - {direction: ingress, protocol: TCP, port_range: 90/80, peer: 0.0.0.0/0}\n",
            "groups[0].rules[0].port_range",
        ),
        (
            "groups:\n  - name: web\n    rules:\n      - {direction: ingress, protocol: TCP, port_range: 80, peer: 0.0.0.0/0}\n",
            "groups[0].rules[0].port_range",
        ),
        (
            "groups:\n  - name: web\n    rules:\n      - {direction: ingress, protocol: TCP, port_range: 80/80, peer: 0.0.0.0/0, source_port_range: 0/5}\n",
            "groups[0].rules[0].source_port_range",
        ),
        (
            "groups:\n  - name: web\n    rules:\n      - {direction: ingress, policy: Maybe, protocol: ALL, peer: 0.0.0.0/0}\n",
            "groups[0].rules[0].policy",
        ),
        (
            "groups:\n  - name: web\n    rules:\n      - {id: rule-1, direction: ingress, protocol: ALL, peer: 0.0.0.0/0}\n",
            "groups[0].rules[0].id",
        ),
        (
            "prefix_lists:\n  - {name: o, family: ipv5, max_entries: 1}\n",
            "prefix_lists[0].family",
        ),
        (
            "port_lists:\n  - {name: p, max_entries: 2, entries: [{range: 80/80}, {range: 0/1}]}\n",
            "port_lists[0].entries[1].range",
        ),
        (
            "groups:\n  - name: web\nnics:\n  - {name: e0, mode: bridge, groups: [web]}\n",
            "nics[0].mode",
        ),
        (
            "groups:\n  - name: web\nnics:\n  - {name: e0, mode: local, addresses: [10.0.0.1, 10.0.0.0/24], groups: [web]}\n",
            "nics[0].addresses[1]",
        ),
        (
            "groups:\n  - name: web\nnics:\n  - {name: e0, mode: local, extra_allowed: [10.0.0.1/8], groups: [web]}\n",
            "nics[0].extra_allowed[0]",
        ),
        (
            "groups:\n  - name: web\nnics:\n  - {name: e0, mode: local, groups: [web]}\n  - {name: e0, mode: port, groups: [web]}\n",
            "nics[1].name",
        ),
    ] {
        let e = refused(&state(), text);
        assert_eq!(field(&e), path, "{text}: {e}");
    }
}

#[test]
fn validation_errors_name_the_document_path() {
    // Checked by validate_state on the result, rerooted to document paths.
    for (text, path) in [
        (
            "groups:\n  - name: web\n  - name: api\n    rules:\n      - {direction: ingress, protocol: ICMP, port_range: 80/80, peer: 0.0.0.0/0}\n",
            "groups[1].rules[0].port_range",
        ),
        ("groups:\n  - name: \"\"\n", "groups[0].name length"),
        (
            "prefix_lists:\n  - {name: o, family: ipv6, max_entries: 1, entries: [{cidr: 10.0.0.0/8}]}\n",
            "prefix_lists[0].entries[0].cidr",
        ),
        (
            "port_lists:\n  - {name: p, max_entries: 1, entries: [{range: 80/80}, {range: 81/81}]}\n",
            "port_lists[0].entries",
        ),
        (
            "groups:\n  - name: web\n    rules:\n      - {direction: ingress, protocol: ALL, peer: 0.0.0.0/0}\n      - {direction: ingress, protocol: ALL, peer: 0.0.0.0/0}\n",
            "groups[0].rules[1]",
        ),
        (
            "groups:\n  - name: web\nnics:\n  - {name: e0, mode: local, groups: []}\n",
            "nics[0].groups count",
        ),
        (
            "groups:\n  - {name: a, type: enterprise}\n  - name: b\n    rules:\n      - {direction: ingress, protocol: ALL, peer: a}\n",
            "groups[1].rules[0].peer",
        ),
    ] {
        let e = refused(&state(), text);
        assert_eq!(field(&e), path, "{text}: {e}");
    }
    let mixed = "groups:\n  - {name: a, type: enterprise}\n  - name: b\nnics:\n  - {name: e0, mode: local, groups: [a, b]}\n";
    assert!(matches!(
        refused(&state(), mixed),
        PolicyError::MixedGroupTypes { .. }
    ));
}

#[test]
fn more_than_ten_groups_on_a_nic_are_refused() {
    let mut d = Document::default();
    for i in 0..11 {
        d.groups.push(GroupDoc {
            name: format!("g{i}"),
            ..GroupDoc::default()
        });
    }
    d.nics.push(NicDoc {
        name: "eth0".into(),
        mode: "local".into(),
        groups: (0..11).map(|i| format!("g{i}")).collect(),
        ..NicDoc::default()
    });
    let e = desired(&state(), &d).expect_err("11 groups");
    assert_eq!(field(&e), "nics[0].groups");
    assert!(
        matches!(e, PolicyError::LimitExceeded { limit: 10, .. }),
        "{e}"
    );
    d.nics[0].groups.pop();
    desired(&state(), &d).expect("10 groups");
}

#[test]
fn more_than_1000_rules_on_a_nic_are_refused() {
    let rules = |from: u16, n: u16| -> Vec<RuleDoc> {
        (from..from + n)
            .map(|p| RuleDoc {
                direction: "ingress".into(),
                protocol: "TCP".into(),
                port_range: Some(Scalar::Text(format!("{p}/{p}"))),
                peer: "0.0.0.0/0".into(),
                ..RuleDoc::default()
            })
            .collect()
    };
    let mut d = Document::default();
    d.groups.push(GroupDoc {
        name: "a".into(),
        rules: rules(1, 600),
        ..GroupDoc::default()
    });
    d.groups.push(GroupDoc {
        name: "b".into(),
        rules: rules(1, 401),
        ..GroupDoc::default()
    });
    d.nics.push(NicDoc {
        name: "eth0".into(),
        mode: "port".into(),
        groups: vec!["a".into(), "b".into()],
        ..NicDoc::default()
    });
    let e = desired(&state(), &d).expect_err("1001 rules");
    assert_eq!(field(&e), "nics[0].rules");
    assert!(
        matches!(
            e,
            PolicyError::LimitExceeded {
                value: 1001,
                limit: 1000,
                ..
            }
        ),
        "{e}"
    );
    d.groups[1].rules.pop();
    let s = desired(&state(), &d).expect("1000 rules");
    // Unbound, the groups may hold more.
    d.nics.clear();
    d.groups[1].rules = rules(1, 700);
    desired(&s, &d).expect("no NIC, no quota");
}

// ---- refusals of the current state ------------------------------------------------

fn with_managed() -> (State, GroupId) {
    let mut s = state();
    let mut spec = GroupSpec::basic("platform");
    spec.managed = true;
    spec.description = "managed by the platform".into();
    let m = s.create_group(spec).expect("managed group");
    (s, m)
}

#[test]
fn a_managed_group_is_refused_any_difference() {
    let (s, m) = with_managed();
    // Unchanged, by name or by id: accepted.
    let same = "groups:\n  - {name: platform, description: managed by the platform}\n";
    assert_eq!(applied(&s, same), s);
    assert_eq!(desired(&s, &document_of(&s)).expect("export"), s);
    for (text, operation) in [
        ("groups: []\n", None),
        (
            "groups:\n  - {name: platform, description: changed}\n",
            Some("change description"),
        ),
        (
            "groups:\n  - {name: platform, description: managed by the platform, deletion_protection: true}\n",
            Some("change deletion protection"),
        ),
        (
            "groups:\n  - name: platform\n    description: managed by the platform\n    rules:\n      - {direction: ingress, protocol: ALL, peer: 0.0.0.0/0}\n",
            Some("change rules"),
        ),
        (
            &format!(
                "groups:\n  - {{id: {m}, name: renamed, description: managed by the platform}}\n"
            ),
            Some("rename"),
        ),
    ] {
        let e = refused(&s, text);
        match (operation, &e) {
            (Some(op), PolicyError::Managed { group, operation }) => {
                assert_eq!(group, m.as_str());
                assert_eq!(operation, &op);
            }
            (None, PolicyError::DeleteRefused { group, blockers }) => {
                assert_eq!(group, m.as_str());
                assert_eq!(blockers, &vec![sg_policy::DeleteBlocker::Managed]);
            }
            _ => panic!("{text}: unexpected {e}"),
        }
        assert!(e.to_string().contains(m.as_str()), "{e}");
    }
}

#[test]
fn deleting_a_protected_group_is_refused() {
    let mut s = state();
    let mut spec = GroupSpec::basic("keep");
    spec.deletion_protection = true;
    let k = s.create_group(spec).expect("group");
    let e = refused(&s, "groups: []\n");
    assert_eq!(
        e,
        PolicyError::DeleteRefused {
            group: k.to_string(),
            blockers: vec![sg_policy::DeleteBlocker::DeletionProtection],
        }
    );
    // Turning protection off in the same document does not help: it is the
    // current state's flag that counts.
    let renamed = "groups:\n  - {name: other}\n";
    assert!(matches!(
        refused(&s, renamed),
        PolicyError::DeleteRefused { .. }
    ));
    // Keeping it while turning protection off is fine; deleting it next time too.
    let off = applied(&s, "groups:\n  - {name: keep}\n");
    assert!(!off.groups[&k].deletion_protection);
    assert_eq!(applied(&off, "groups: []\n").groups.len(), 0);
}

#[test]
fn a_deleted_group_still_in_use_is_refused_by_validation() {
    let mut s = state();
    let web = basic(&mut s, "web");
    bind(&mut s, "e0", &["10.0.0.2"], &[&web]);
    let e = refused(
        &s,
        "nics:\n  - {name: e0, mode: local, addresses: [10.0.0.2], groups: [web]}\n",
    );
    assert_eq!(field(&e), "nics[0].groups[0]");
}

// ---- diff -------------------------------------------------------------------------------

#[test]
fn diff_lines_for_each_kind_of_change() {
    let s = applied(&state(), YAML);
    let web = group_named(&s, "web").clone();
    let admin = group_named(&s, "admin").clone();
    let office = s.prefix_lists.values().next().expect("pl").clone();
    let ports = s.port_lists.values().next().expect("prl").clone();
    let [r1, r2] = [1, 2].map(|i| web.rules[i].id.clone());

    let mut text = YAML
        // settings
        .replace("block_port_25: false", "block_port_25: true")
        // prefix list: entry added, max changed
        .replace(
            "entries:\n      - {cidr: 10.0.0.0/8, description: hq}",
            "entries:\n      - {cidr: 10.0.0.0/8, description: hq}\n      - {cidr: 172.16.0.0/12}",
        )
        .replace("max_entries: 10", "max_entries: 12")
        // port list: entry removed
        .replace("[{range: 80/80}, {range: 443/443}]", "[{range: 80/80}]")
        // group attributes
        .replace("tags: {env: prod}", "tags: {env: dev}\n    deletion_protection: true")
        // rule changed in place (id given), rule removed
        .replace(
            "port_range: 22/22, peer: admin}",
            &format!("port_range: 2222/2222, peer: admin, id: {r1}}}"),
        )
        .replace("      - {direction: egress, policy: Drop, priority: 100, protocol: ALL, peer: 0.0.0.0/0, description: no egress}\n", "")
        // NIC: addresses and groups
        .replace("addresses: [10.0.0.2]", "addresses: [10.0.0.2, 10.0.0.3]")
        .replace("groups: [web, admin]", "groups: [admin, web]");
    // A rule added, a group added, a NIC added.
    text = text.replace("  - name: admin\n", "  - name: api\n  - name: admin\n");
    text = text.replace(
        "protocol: 58, peer: \"2001:db8::/32\", source_port_range: null}",
        "protocol: 58, peer: \"2001:db8::/32\", source_port_range: null}\n      - {direction: egress, protocol: UDP, port_range: 53/53, peer: 10.0.0.0/8, priority: 5}",
    );
    text.push_str("  - {name: veth1, mode: port, groups: [api]}\n");

    let r = applied(&s, &text);
    let api = group_named(&r, "api").id.clone();
    let added_rule = group_named(&r, "admin").rules[1].id.clone();
    let got = lines(&diff(&s, &r));
    let want = vec![
        "~ settings block_port_25: false -> true".to_owned(),
        format!(
            "~ prefix_list {} (office): max_entries 10 -> 12; + entry 172.16.0.0/12",
            office.id
        ),
        format!("~ port_list {} (web-ports): - entry 443/443", ports.id),
    ];
    let mut groups = vec![
        (
            web.id.clone(),
            vec![
                format!(
                    "~ group {} (web): deletion_protection false -> true; tags.env \"prod\" -> \"dev\"",
                    web.id
                ),
                format!(
                    "- rule {r2} in {} (web): egress Drop ALL to 0.0.0.0/0 priority 100 description \"no egress\"",
                    web.id
                ),
                format!(
                    "~ rule {r1} in {} (web): port_range 22/22 -> 2222/2222",
                    web.id
                ),
            ],
        ),
        (
            admin.id.clone(),
            vec![format!(
                "+ rule {added_rule} in {} (admin): egress Accept UDP 53/53 to 10.0.0.0/8 priority 5",
                admin.id
            )],
        ),
        (
            api.clone(),
            vec![format!(
                "+ group {api} (api): basic, inner_access_policy Accept, 0 rules"
            )],
        ),
    ];
    groups.sort();
    let mut want = want;
    want.extend(groups.into_iter().flat_map(|(_, l)| l));
    want.push(format!(
        "~ nic veth0: addresses 10.0.0.2 -> 10.0.0.2, 10.0.0.3; groups {}, {} -> {}, {}",
        web.id, admin.id, admin.id, web.id
    ));
    want.push(format!("+ nic veth1: port; addresses (none); groups {api}"));
    assert_eq!(got, want);

    // And the way back: removals.
    let back = lines(&diff(&r, &s));
    assert!(back.contains(&format!(
        "- group {api} (api): basic, inner_access_policy Accept, 0 rules"
    )));
    assert!(back.contains(&format!(
        "- nic veth1: port; addresses (none); groups {api}"
    )));
    assert!(back.contains(&format!(
        "+ rule {r2} in {} (web): egress Drop ALL to 0.0.0.0/0 priority 100 description \"no egress\"",
        web.id
    )));
}

#[test]
fn diff_shows_rule_order_and_whole_groups() {
    let s = applied(&state(), YAML);
    let web = group_named(&s, "web").clone();
    let ids: Vec<_> = web.rules.iter().map(|r| r.id.to_string()).collect();
    let mut reordered = s.clone();
    Arc::make_mut(reordered.groups.get_mut(&web.id).expect("web"))
        .rules
        .reverse();
    assert_eq!(
        lines(&diff(&s, &reordered)),
        vec![format!(
            "~ rule_order in {} (web): {}, {}, {} -> {}, {}, {}",
            web.id, ids[0], ids[1], ids[2], ids[2], ids[1], ids[0]
        )]
    );
    // A new group's rules are listed with it.
    let empty = state();
    let all = lines(&diff(&empty, &s));
    let first_rule = format!(
        "+ rule {} in {} (web): ingress Accept TCP {} from {} priority 1",
        ids[0],
        web.id,
        s.port_lists.keys().next().expect("prl"),
        s.prefix_lists.keys().next().expect("pl")
    );
    assert!(all.contains(&first_rule), "{all:#?}");
    assert!(all.contains(&format!(
        "+ group {} (web): basic, inner_access_policy Accept, 3 rules",
        web.id
    )));
    assert!(all.iter().any(|l| l.starts_with("+ prefix_list ")
        && l.contains("IPv4, max_entries 10, entries [10.0.0.0/8]")));
    assert!(all.contains(&format!(
        "+ nic veth0: local; addresses 10.0.0.2; groups {}, {}",
        web.id,
        group_named(&s, "admin").id
    )));
}

#[test]
fn changes_serialise_as_objects() {
    let s = applied(&state(), YAML);
    let web = group_named(&s, "web");
    let rule = &web.rules[1];
    let changes = diff(&state(), &s);
    let c = changes
        .iter()
        .find(|c| c.id == rule.id.as_str())
        .expect("rule change");
    let v = serde_json::to_value(c).expect("json");
    assert_eq!(
        v,
        serde_json::json!({
            "op": "+",
            "kind": "rule",
            "id": rule.id.as_str(),
            "group": web.id.as_str(),
            "group_name": "web",
            "detail": format!(
                "ingress Accept TCP 22/22 from {} priority 1",
                group_named(&s, "admin").id
            ),
        })
    );
    let settings = diff(&s, &state());
    let v = serde_json::to_value(&settings[0]).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"op": "~", "kind": "settings", "id": "block_port_25", "detail": "false -> true"})
    );
    let g = serde_json::to_value(
        settings
            .iter()
            .find(|c| c.id == web.id.as_str())
            .expect("group"),
    )
    .expect("json");
    assert_eq!(g["op"], "-");
    assert_eq!(g["kind"], "group");
    assert_eq!(g["name"], "web");
}

// ---- properties ---------------------------------------------------------------------------

const NAMES: [&str; 4] = ["web", "db", "web", "ops"];
const PEERS: [&str; 5] = [
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.1.2.3",
    "::/0",
    "2001:db8::/32",
];

/// One step of building a random state through the operations.
#[derive(Debug, Clone)]
enum Step {
    Group {
        name: usize,
        enterprise: bool,
        protection: bool,
    },
    PrefixList {
        name: usize,
        entries: Vec<usize>,
    },
    PortList {
        name: usize,
        entries: Vec<u16>,
    },
    Rule {
        group: usize,
        ingress: bool,
        accept: bool,
        priority: u8,
        protocol: usize,
        ports: usize,
        peer: usize,
        described: bool,
    },
    Bind {
        nic: usize,
        port: bool,
        groups: Vec<usize>,
        anti_spoof: Option<bool>,
    },
    Manage {
        group: usize,
    },
    Settings {
        block: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (0..NAMES.len(), any::<bool>(), any::<bool>()).prop_map(|(name, enterprise, protection)| {
            Step::Group {
                name,
                enterprise,
                protection,
            }
        }),
        1 => (0..NAMES.len(), prop::collection::vec(0..PEERS.len(), 0..3))
            .prop_map(|(name, entries)| Step::PrefixList { name, entries }),
        1 => (0..NAMES.len(), prop::collection::vec(1u16..100, 0..3))
            .prop_map(|(name, entries)| Step::PortList { name, entries }),
        4 => (
            0..8usize,
            any::<bool>(),
            any::<bool>(),
            1u8..=100,
            0..5usize,
            0..4usize,
            0..8usize,
            any::<bool>()
        )
            .prop_map(
                |(group, ingress, accept, priority, protocol, ports, peer, described)| Step::Rule {
                    group,
                    ingress,
                    accept,
                    priority,
                    protocol,
                    ports,
                    peer,
                    described,
                }
            ),
        1 => (
            0..3usize,
            any::<bool>(),
            prop::collection::vec(0..8usize, 1..3),
            prop::option::of(any::<bool>())
        )
            .prop_map(|(nic, port, groups, anti_spoof)| Step::Bind {
                nic,
                port,
                groups,
                anti_spoof
            }),
        1 => (0..8usize).prop_map(|group| Step::Manage { group }),
        1 => any::<bool>().prop_map(|block| Step::Settings { block }),
    ]
}

fn nth<T: Clone>(items: impl Iterator<Item = T>, i: usize) -> Option<T> {
    let v: Vec<T> = items.collect();
    (!v.is_empty()).then(|| v[i % v.len()].clone())
}

/// Builds a state through the operations; steps they refuse are skipped.
fn build(seed: u64, steps: &[Step]) -> State {
    let mut s = State::with_seed(seed);
    for step in steps {
        let _ = apply_step(&mut s, step);
    }
    s
}

fn apply_step(s: &mut State, step: &Step) -> Result<(), PolicyError> {
    match step {
        Step::Group {
            name,
            enterprise,
            protection,
        } => {
            let mut spec = if *enterprise {
                GroupSpec::enterprise(NAMES[*name])
            } else {
                GroupSpec::basic(NAMES[*name])
            };
            spec.deletion_protection = *protection;
            s.create_group(spec).map(drop)
        }
        Step::PrefixList { name, entries } => s
            .create_prefix_list(PrefixListSpec {
                name: NAMES[*name].into(),
                description: String::new(),
                family: Family::Ipv4,
                max_entries: 3,
                entries: entries
                    .iter()
                    .map(|i| PrefixListEntry {
                        cidr: Cidr::parse("t", PEERS[*i]).expect("cidr"),
                        description: String::new(),
                    })
                    .collect(),
            })
            .map(drop),
        Step::PortList { name, entries } => s
            .create_port_list(PortListSpec {
                name: NAMES[*name].into(),
                description: "ports".into(),
                max_entries: 4,
                entries: entries
                    .iter()
                    .map(|p| PortListEntry {
                        range: PortRange::single(*p),
                        description: String::new(),
                    })
                    .collect(),
            })
            .map(drop),
        Step::Rule { .. } => add_rule(s, step),
        Step::Bind {
            nic,
            port,
            groups,
            anti_spoof,
        } => {
            let ids: Vec<GroupId> = groups
                .iter()
                .filter_map(|g| nth(s.groups.keys().cloned(), *g))
                .collect();
            let mut binding = sg_policy::NicBinding::new(
                ["eth0", "veth1", "tap2"][*nic],
                if *port {
                    sg_policy::BindingMode::Port
                } else {
                    sg_policy::BindingMode::Local
                },
                vec![crate::support::ip(&format!("10.0.0.{}", nic + 2))],
                ids,
            );
            binding.anti_spoof = *anti_spoof;
            s.bind_nic(binding)
        }
        Step::Manage { group } => {
            if let Some(g) = nth(s.groups.keys().cloned(), *group) {
                Arc::make_mut(s.groups.get_mut(&g).expect("group")).managed = true;
            }
            Ok(())
        }
        Step::Settings { block } => {
            let mut settings = s.settings.clone();
            settings.block_port_25 = *block;
            s.set_settings(settings)
        }
    }
}

/// Adds the rule a [`Step::Rule`] describes, picking its references among
/// the objects that exist.
fn add_rule(s: &mut State, step: &Step) -> Result<(), PolicyError> {
    let Step::Rule {
        group,
        ingress,
        accept,
        priority,
        protocol,
        ports,
        peer,
        described,
    } = step
    else {
        return Ok(());
    };
    let Some(g) = nth(s.groups.keys().cloned(), *group) else {
        return Ok(());
    };
    let protocol = ["TCP", "UDP", "ICMP", "ALL", "132"][*protocol];
    let has_ports = matches!(protocol, "TCP" | "UDP");
    let ports = match (has_ports, ports) {
        (false, _) => "-1/-1".to_owned(),
        (true, 0) => "80/80".to_owned(),
        (true, 1) => "1/65535".to_owned(),
        (true, 2) => "443/8443".to_owned(),
        (true, _) => nth(s.port_lists.keys().cloned(), *peer)
            .map_or_else(|| "22/22".to_owned(), |id| id.to_string()),
    };
    let peer = match peer {
        0..5 => PEERS[*peer].to_owned(),
        5 => nth(s.prefix_lists.keys().cloned(), *group)
            .map_or_else(|| "10.9.0.0/16".to_owned(), |id| id.to_string()),
        _ => nth(s.groups.keys().cloned(), *peer)
            .map_or_else(|| "192.168.0.0/16".to_owned(), |id| id.to_string()),
    };
    let mut spec = rule(
        if *ingress { "ingress" } else { "egress" },
        if *accept { "Accept" } else { "Drop" },
        &priority.to_string(),
        protocol,
        &ports,
        &peer,
    );
    if *described {
        spec = spec.with_description("from a test");
    }
    s.authorize(&g, spec).map(drop)
}

fn without_guards(mut s: State) -> State {
    for g in s.groups.values_mut() {
        let g = Arc::make_mut(g);
        g.managed = false;
        g.deletion_protection = false;
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Export then apply is a no-op, in memory and through YAML and JSON text.
    #[test]
    fn export_then_apply_changes_nothing(
        seed in any::<u64>(),
        steps in prop::collection::vec(step(), 0..25),
    ) {
        let s = build(seed, &steps);
        validate_state(&s).expect("built through the operations");
        let d = document_of(&s);
        let again = desired(&s, &d).expect("export applies");
        prop_assert_eq!(&again, &s);
        prop_assert_eq!(diff(&s, &again), vec![]);
        let yaml = serde_norway::to_string(&d).expect("yaml");
        prop_assert_eq!(&parse(&yaml).expect("yaml parses"), &d);
        let json = serde_json::to_string(&d).expect("json");
        prop_assert_eq!(&parse(&json).expect("json parses"), &d);
    }

    /// The export of one state applied to another yields the first (its id
    /// generator aside), and the diff is empty exactly when they are equal.
    #[test]
    fn applying_an_export_reaches_that_state(
        seed in any::<u64>(),
        a in prop::collection::vec(step(), 0..15),
        b in prop::collection::vec(step(), 0..15),
    ) {
        let from = without_guards(build(seed, &a));
        let to = build(seed.wrapping_add(1), &b);
        let mut got = desired(&from, &document_of(&to)).expect("applies");
        prop_assert_eq!(&got.ids, &from.ids);
        let changes = diff(&from, &got);
        got.ids = to.ids.clone();
        let mut expect = to.clone();
        for g in expect.groups.values_mut() {
            // Only the current state makes a group managed.
            let managed = from.groups.get(&g.id).is_some_and(|f| f.managed);
            Arc::make_mut(g).managed = managed;
        }
        prop_assert_eq!(&got, &expect);
        let mut from_ids = from.clone();
        from_ids.ids = expect.ids.clone();
        prop_assert_eq!(changes.is_empty(), from_ids == expect);
    }
}

#[test]
fn an_enterprise_group_in_a_document_refuses_inner_policy_drop_and_exports_none() {
    let e = refused(
        &state(),
        "groups:\n  - {name: iso, type: enterprise, inner_access_policy: Drop}\n",
    );
    assert_eq!(field(&e), "groups[0].inner_access_policy");
    assert!(e.to_string().contains("only basic groups"), "{e}");
    let s = applied(&state(), "groups:\n  - {name: iso, type: enterprise}\n");
    let exported = document_of(&s);
    assert_eq!(exported.groups[0].inner_access_policy, None);
    assert_eq!(
        desired(&s, &exported).unwrap(),
        s,
        "the export applies as is"
    );
}

#[test]
fn malformed_ids_in_a_document_are_refused_naming_the_field() {
    for (text, path) in [
        ("groups:\n  - {id: sg-Bad, name: web}\n", "groups[0].id"),
        (
            "groups:\n  - name: web\n    rules:\n      - {id: sgr-zz!, direction: ingress, protocol: ALL, peer: 0.0.0.0/0}\n",
            "groups[0].rules[0].id",
        ),
        (
            "groups:\n  - name: web\n    rules:\n      - {id: sg-abc, direction: ingress, protocol: ALL, peer: 0.0.0.0/0}\n",
            "groups[0].rules[0].id",
        ),
        (
            "prefix_lists:\n  - {id: prl-1, name: o, family: ipv4, max_entries: 1}\n",
            "prefix_lists[0].id",
        ),
        (
            "port_lists:\n  - {id: prl-, name: p, max_entries: 1}\n",
            "port_lists[0].id",
        ),
    ] {
        let e = refused(&state(), text);
        assert_eq!(field(&e), path, "{text}: {e}");
    }
}

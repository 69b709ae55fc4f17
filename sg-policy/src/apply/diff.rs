//! The difference between two states, as [`Change`]s.
//!
//! [`diff`] lists [`Change`]s in a fixed order: settings, prefix lists, port
//! lists, groups (each followed by its rules), NICs; objects by id (NICs by
//! name). It is empty exactly when the two states are equal (the id generator
//! aside). Each change displays as one line:
//!
//! ```text
//! ~ settings block_port_25: true -> false
//! + rule sgr-abc in sg-web (web): ingress Accept TCP 80/80 from 0.0.0.0/0 priority 1
//! ~ group sg-web (web): description "" -> "front"; deletion_protection false -> true
//! ~ rule_order in sg-web (web): sgr-a, sgr-b -> sgr-b, sgr-a
//! - nic veth0: local; addresses 10.0.0.2; groups sg-web
//! ```
//!
//! and serialises as an object (absent members left out):
//!
//! ```json
//! {"op": "+", "kind": "rule", "id": "sgr-abc", "group": "sg-web",
//!  "group_name": "web", "detail": "ingress Accept TCP 80/80 from 0.0.0.0/0 priority 1"}
//! ```
//!
//! - `op`: `+` added, `-` removed, `~` changed;
//! - `kind`: `settings`, `prefix_list`, `port_list`, `group`, `rule`,
//!   `rule_order`, `nic`;
//! - `id`: the object's id, the NIC's name, or the settings field's path
//!   (`session_timeouts.other_secs`); for `rule_order`, the group's id;
//! - `name`: the name of a group or list;
//! - `group`, `group_name`: for `rule` and `rule_order`, the group holding it;
//! - `detail`: what the line says after the colon.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::{self, Write as _},
};

use serde::Serialize;
use serde_json::Value;

use crate::{
    ids::{GroupId, RuleId},
    model::{
        Direction, NicBinding, PortList, PortSpec, PrefixList, RuleSpec, SecurityGroup, Settings,
        State,
    },
};

use super::document::{inner_text, mode_text, ports_text};

// ---- diff ----------------------------------------------------------------------------

/// Added, removed or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Op {
    #[serde(rename = "+")]
    Add,
    #[serde(rename = "-")]
    Remove,
    #[serde(rename = "~")]
    Change,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Add => "+",
            Self::Remove => "-",
            Self::Change => "~",
        })
    }
}

/// What a [`Change`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Settings,
    PrefixList,
    PortList,
    Group,
    Rule,
    RuleOrder,
    Nic,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Settings => "settings",
            Self::PrefixList => "prefix_list",
            Self::PortList => "port_list",
            Self::Group => "group",
            Self::Rule => "rule",
            Self::RuleOrder => "rule_order",
            Self::Nic => "nic",
        })
    }
}

/// One line of a [`diff`]; its shape is in the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub op: Op,
    pub kind: Kind,
    /// The object's id, the NIC's name, or the settings field's path; for
    /// `rule_order`, the group's id.
    pub id: String,
    /// The name of a group or list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For rules and rule order: the group holding the rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// For rules and rule order: that group's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    /// What changed, or what was added or removed.
    pub detail: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op, self.kind)?;
        if self.kind != Kind::RuleOrder {
            write!(f, " {}", self.id)?;
        }
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        if let Some(group) = &self.group {
            write!(f, " in {group}")?;
            if let Some(name) = &self.group_name {
                write!(f, " ({name})")?;
            }
        }
        if self.detail.is_empty() {
            Ok(())
        } else {
            write!(f, ": {}", self.detail)
        }
    }
}

impl Change {
    fn new(op: Op, kind: Kind, id: impl fmt::Display, detail: String) -> Self {
        Self {
            op,
            kind,
            id: id.to_string(),
            name: None,
            group: None,
            group_name: None,
            detail,
        }
    }

    fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    fn in_group(mut self, group: &SecurityGroup) -> Self {
        self.group = Some(group.id.to_string());
        self.group_name = Some(group.name.clone());
        self
    }
}

/// What changes from `old` to `new`, in a fixed order (see the module
/// documentation); empty exactly when the states are equal, their id
/// generators aside.
pub fn diff(old: &State, new: &State) -> Vec<Change> {
    let mut out = Vec::new();
    diff_settings(&old.settings, &new.settings, &mut out);
    diff_maps(
        &old.prefix_lists,
        &new.prefix_lists,
        &mut out,
        |op, a, b| {
            let (l, detail) = match (a, b) {
                (Some(a), Some(b)) => (b, prefix_list_changes(a, b)),
                (Some(l), None) | (None, Some(l)) => (l, prefix_list_text(l)),
                (None, None) => return None,
            };
            Some(Change::new(op, Kind::PrefixList, &l.id, detail).named(&l.name))
        },
    );
    diff_maps(&old.port_lists, &new.port_lists, &mut out, |op, a, b| {
        let (l, detail) = match (a, b) {
            (Some(a), Some(b)) => (b, port_list_changes(a, b)),
            (Some(l), None) | (None, Some(l)) => (l, port_list_text(l)),
            (None, None) => return None,
        };
        Some(Change::new(op, Kind::PortList, &l.id, detail).named(&l.name))
    });
    let ids: BTreeSet<&GroupId> = old.groups.keys().chain(new.groups.keys()).collect();
    for id in ids {
        diff_group(
            old.groups.get(id).map(|g| &**g),
            new.groups.get(id).map(|g| &**g),
            &mut out,
        );
    }
    diff_maps(&old.nics, &new.nics, &mut out, |op, a, b| {
        let (n, detail) = match (a, b) {
            (Some(a), Some(b)) => (b, nic_changes(a, b)),
            (Some(n), None) | (None, Some(n)) => (n, nic_text(n)),
            (None, None) => return None,
        };
        Some(Change::new(op, Kind::Nic, &n.name, detail))
    });
    out
}

/// Runs `line` over the union of two maps' keys: `(Add, None, new)`,
/// `(Remove, old, None)` or, when the values differ, `(Change, old, new)`.
fn diff_maps<K: Ord, V: PartialEq>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    out: &mut Vec<Change>,
    line: impl Fn(Op, Option<&V>, Option<&V>) -> Option<Change>,
) {
    let keys: BTreeSet<&K> = old.keys().chain(new.keys()).collect();
    for k in keys {
        let change = match (old.get(k), new.get(k)) {
            (Some(a), Some(b)) if a == b => None,
            (Some(a), Some(b)) => line(Op::Change, Some(a), Some(b)),
            (Some(a), None) => line(Op::Remove, Some(a), None),
            (None, Some(b)) => line(Op::Add, None, Some(b)),
            (None, None) => None,
        };
        out.extend(change);
    }
}

fn diff_settings(old: &Settings, new: &Settings, out: &mut Vec<Change>) {
    if old == new {
        return;
    }
    let mut a = BTreeMap::new();
    let mut b = BTreeMap::new();
    flatten(
        "",
        &serde_json::to_value(old).unwrap_or(Value::Null),
        &mut a,
    );
    flatten(
        "",
        &serde_json::to_value(new).unwrap_or(Value::Null),
        &mut b,
    );
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let before = out.len();
    for k in keys {
        let (x, y) = (a.get(k), b.get(k));
        if x != y {
            let show = |v: Option<&Value>| v.map_or_else(|| "(none)".to_owned(), Value::to_string);
            let id = if k.is_empty() { "settings" } else { k.as_str() };
            out.push(Change::new(
                Op::Change,
                Kind::Settings,
                id,
                format!("{} -> {}", show(x), show(y)),
            ));
        }
    }
    if out.len() == before {
        // Equal as JSON but not as values: say so rather than nothing.
        out.push(Change::new(
            Op::Change,
            Kind::Settings,
            "settings",
            format!("{old:?} -> {new:?}"),
        ));
    }
}

/// Objects become dotted paths; arrays and scalars are leaves.
fn flatten(path: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        leaf => {
            out.insert(path.to_owned(), leaf.clone());
        }
    }
}

/// One rule, compactly: `ingress Accept TCP 80/80 from 0.0.0.0/0 priority 1`.
pub fn rule_text(spec: &RuleSpec) -> String {
    let mut s = format!("{} {} {}", spec.direction, spec.action, spec.protocol);
    if spec.ports != PortSpec::Any {
        s.push(' ');
        s.push_str(&ports_text(&spec.ports));
    }
    let side = match spec.direction {
        Direction::Ingress => "from",
        Direction::Egress => "to",
    };
    let _ = write!(s, " {side} {} priority {}", spec.peer, spec.priority);
    if let Some(p) = spec.source_ports {
        let _ = write!(s, " source_port_range {p}");
    }
    if let Some(l) = spec.local {
        let _ = write!(s, " local {l}");
    }
    if !spec.description.is_empty() {
        let _ = write!(s, " description {:?}", spec.description);
    }
    s
}

fn rule_changes(a: &RuleSpec, b: &RuleSpec) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "(none)".to_owned());
    let fields = [
        (
            "direction",
            a.direction.to_string(),
            b.direction.to_string(),
        ),
        ("policy", a.action.to_string(), b.action.to_string()),
        ("priority", a.priority.to_string(), b.priority.to_string()),
        ("protocol", a.protocol.to_string(), b.protocol.to_string()),
        ("port_range", ports_text(&a.ports), ports_text(&b.ports)),
        ("peer", a.peer.to_string(), b.peer.to_string()),
        (
            "source_port_range",
            opt(a.source_ports.map(|p| p.to_string())),
            opt(b.source_ports.map(|p| p.to_string())),
        ),
        (
            "local",
            opt(a.local.map(|c| c.to_string())),
            opt(b.local.map(|c| c.to_string())),
        ),
        (
            "description",
            format!("{:?}", a.description),
            format!("{:?}", b.description),
        ),
    ];
    fields
        .into_iter()
        .filter(|(_, x, y)| x != y)
        .map(|(name, x, y)| format!("{name} {x} -> {y}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn group_text(g: &SecurityGroup) -> String {
    let mut s = format!(
        "{}, inner_access_policy {}, {} rules",
        g.kind,
        inner_text(g.inner_policy),
        g.rules.len()
    );
    if g.deletion_protection {
        s.push_str(", deletion_protection");
    }
    if g.managed {
        s.push_str(", managed");
    }
    s
}

fn group_changes(a: &SecurityGroup, b: &SecurityGroup) -> Vec<String> {
    let mut parts = Vec::new();
    if a.name != b.name {
        parts.push(format!("name {:?} -> {:?}", a.name, b.name));
    }
    if a.description != b.description {
        parts.push(format!(
            "description {:?} -> {:?}",
            a.description, b.description
        ));
    }
    if a.kind != b.kind {
        parts.push(format!("type {} -> {}", a.kind, b.kind));
    }
    if a.inner_policy != b.inner_policy {
        parts.push(format!(
            "inner_access_policy {} -> {}",
            inner_text(a.inner_policy),
            inner_text(b.inner_policy)
        ));
    }
    if a.deletion_protection != b.deletion_protection {
        parts.push(format!(
            "deletion_protection {} -> {}",
            a.deletion_protection, b.deletion_protection
        ));
    }
    if a.managed != b.managed {
        parts.push(format!("managed {} -> {}", a.managed, b.managed));
    }
    let keys: BTreeSet<&String> = a.tags.keys().chain(b.tags.keys()).collect();
    for k in keys {
        let (x, y) = (a.tags.get(k), b.tags.get(k));
        if x != y {
            let show =
                |v: Option<&String>| v.map_or_else(|| "(none)".to_owned(), |v| format!("{v:?}"));
            parts.push(format!("tags.{k} {} -> {}", show(x), show(y)));
        }
    }
    parts
}

fn diff_group(old: Option<&SecurityGroup>, new: Option<&SecurityGroup>, out: &mut Vec<Change>) {
    match (old, new) {
        (None, Some(g)) => {
            out.push(Change::new(Op::Add, Kind::Group, &g.id, group_text(g)).named(&g.name));
            for r in &g.rules {
                out.push(Change::new(Op::Add, Kind::Rule, &r.id, rule_text(&r.spec)).in_group(g));
            }
        }
        (Some(g), None) => {
            out.push(Change::new(Op::Remove, Kind::Group, &g.id, group_text(g)).named(&g.name));
            for r in &g.rules {
                out.push(
                    Change::new(Op::Remove, Kind::Rule, &r.id, rule_text(&r.spec)).in_group(g),
                );
            }
        }
        (Some(a), Some(b)) if a != b => {
            let parts = group_changes(a, b);
            if !parts.is_empty() {
                out.push(
                    Change::new(Op::Change, Kind::Group, &b.id, parts.join("; ")).named(&b.name),
                );
            }
            diff_rules(a, b, out);
        }
        _ => {}
    }
}

fn diff_rules(a: &SecurityGroup, b: &SecurityGroup, out: &mut Vec<Change>) {
    let before: BTreeMap<&RuleId, &RuleSpec> = a.rules.iter().map(|r| (&r.id, &r.spec)).collect();
    let after: BTreeMap<&RuleId, &RuleSpec> = b.rules.iter().map(|r| (&r.id, &r.spec)).collect();
    for r in &a.rules {
        if !after.contains_key(&r.id) {
            out.push(Change::new(Op::Remove, Kind::Rule, &r.id, rule_text(&r.spec)).in_group(b));
        }
    }
    for r in &b.rules {
        match before.get(&r.id) {
            None => {
                out.push(Change::new(Op::Add, Kind::Rule, &r.id, rule_text(&r.spec)).in_group(b));
            }
            Some(old) if **old != r.spec => out.push(
                Change::new(Op::Change, Kind::Rule, &r.id, rule_changes(old, &r.spec)).in_group(b),
            ),
            Some(_) => {}
        }
    }
    let kept = |g: &SecurityGroup, other: &BTreeMap<&RuleId, &RuleSpec>| -> Vec<String> {
        g.rules
            .iter()
            .filter(|r| other.contains_key(&r.id))
            .map(|r| r.id.to_string())
            .collect()
    };
    let (x, y) = (kept(a, &after), kept(b, &before));
    if x != y {
        out.push(
            Change::new(
                Op::Change,
                Kind::RuleOrder,
                &b.id,
                format!("{} -> {}", x.join(", "), y.join(", ")),
            )
            .in_group(b),
        );
    }
}

/// Changes of a list's entries, keyed by `key`: added, removed, description
/// changed, reordered.
fn entry_changes<E, K: Ord + fmt::Display>(
    a: &[E],
    b: &[E],
    key: impl Fn(&E) -> K,
    description: impl Fn(&E) -> &str,
) -> Vec<String> {
    let before: BTreeMap<K, &E> = a.iter().map(|e| (key(e), e)).collect();
    let after: BTreeMap<K, &E> = b.iter().map(|e| (key(e), e)).collect();
    let mut parts = Vec::new();
    for e in a {
        if !after.contains_key(&key(e)) {
            parts.push(format!("- entry {}", key(e)));
        }
    }
    for e in b {
        match before.get(&key(e)) {
            None => parts.push(format!("+ entry {}", key(e))),
            Some(old) if description(old) != description(e) => parts.push(format!(
                "entry {} description {:?} -> {:?}",
                key(e),
                description(old),
                description(e)
            )),
            Some(_) => {}
        }
    }
    let order = |v: &[E], other: &BTreeMap<K, &E>| -> Vec<K> {
        v.iter()
            .map(&key)
            .filter(|k| other.contains_key(k))
            .collect()
    };
    // Entries are unique in a valid list; a duplicate makes the keyed view
    // lossy, so compare the raw count too.
    if order(a, &after) != order(b, &before) || a.len() != before.len() || b.len() != after.len() {
        parts.push("entries reordered".to_owned());
    }
    parts
}

fn header_changes(
    parts: &mut Vec<String>,
    (name_a, name_b): (&str, &str),
    (desc_a, desc_b): (&str, &str),
    (max_a, max_b): (u32, u32),
) {
    if name_a != name_b {
        parts.push(format!("name {name_a:?} -> {name_b:?}"));
    }
    if desc_a != desc_b {
        parts.push(format!("description {desc_a:?} -> {desc_b:?}"));
    }
    if max_a != max_b {
        parts.push(format!("max_entries {max_a} -> {max_b}"));
    }
}

fn prefix_list_text(l: &PrefixList) -> String {
    let entries: Vec<String> = l.entries.iter().map(|e| e.cidr.to_string()).collect();
    format!(
        "{}, max_entries {}, entries [{}]",
        l.family,
        l.max_entries,
        entries.join(", ")
    )
}

fn prefix_list_changes(a: &PrefixList, b: &PrefixList) -> String {
    let mut parts = Vec::new();
    header_changes(
        &mut parts,
        (&a.name, &b.name),
        (&a.description, &b.description),
        (a.max_entries, b.max_entries),
    );
    if a.family != b.family {
        parts.push(format!("family {} -> {}", a.family, b.family));
    }
    parts.extend(entry_changes(
        &a.entries,
        &b.entries,
        |e| e.cidr,
        |e| e.description.as_str(),
    ));
    parts.join("; ")
}

fn port_list_text(l: &PortList) -> String {
    let entries: Vec<String> = l.entries.iter().map(|e| e.range.to_string()).collect();
    format!(
        "max_entries {}, entries [{}]",
        l.max_entries,
        entries.join(", ")
    )
}

fn port_list_changes(a: &PortList, b: &PortList) -> String {
    let mut parts = Vec::new();
    header_changes(
        &mut parts,
        (&a.name, &b.name),
        (&a.description, &b.description),
        (a.max_entries, b.max_entries),
    );
    parts.extend(entry_changes(
        &a.entries,
        &b.entries,
        |e| e.range,
        |e| e.description.as_str(),
    ));
    parts.join("; ")
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn anti_spoof_text(v: Option<bool>) -> &'static str {
    match v {
        None => "default",
        Some(true) => "on",
        Some(false) => "off",
    }
}

fn nic_text(n: &NicBinding) -> String {
    let mut s = format!(
        "{}; addresses {}; groups {}",
        mode_text(n.mode),
        list(&n.addresses),
        list(&n.groups)
    );
    if !n.extra_allowed.is_empty() {
        let _ = write!(s, "; extra_allowed {}", list(&n.extra_allowed));
    }
    if n.anti_spoof.is_some() {
        let _ = write!(s, "; anti_spoof {}", anti_spoof_text(n.anti_spoof));
    }
    s
}

fn nic_changes(a: &NicBinding, b: &NicBinding) -> String {
    let mut parts = Vec::new();
    if a.mode != b.mode {
        parts.push(format!(
            "mode {} -> {}",
            mode_text(a.mode),
            mode_text(b.mode)
        ));
    }
    if a.addresses != b.addresses {
        parts.push(format!(
            "addresses {} -> {}",
            list(&a.addresses),
            list(&b.addresses)
        ));
    }
    if a.extra_allowed != b.extra_allowed {
        parts.push(format!(
            "extra_allowed {} -> {}",
            list(&a.extra_allowed),
            list(&b.extra_allowed)
        ));
    }
    if a.anti_spoof != b.anti_spoof {
        parts.push(format!(
            "anti_spoof {} -> {}",
            anti_spoof_text(a.anti_spoof),
            anti_spoof_text(b.anti_spoof)
        ));
    }
    if a.groups != b.groups {
        parts.push(format!("groups {} -> {}", list(&a.groups), list(&b.groups)));
    }
    parts.join("; ")
}

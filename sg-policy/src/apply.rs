//! Declarative apply: a whole desired state from one YAML or JSON document,
//! and the difference between two states.
//!
//! `sg-agent apply -f FILE` sends a [`Document`]; the daemon computes the new
//! [`State`] with [`desired`] in one transaction (all or nothing) and shows
//! [`diff`]. [`document_of`] is the way back (`export`): applying the export of
//! a state changes nothing.
//!
//! # The document
//!
//! The same structure in YAML and JSON ([`parse`]); an unknown field anywhere
//! is an error. A document without content (blank, only comments, only
//! `---`, a YAML null) is refused: the empty state is only ever the explicit
//! `{}`. Every text field is read with the model's own parsers
//! ([`Protocol::parse`], [`parse_port_spec`], [`Peer::parse`], [`Cidr::parse`],
//! [`parse_priority`] …), so normalisation and messages are the API's, and
//! every error names its place in the document (`groups[1].rules[3].port_range`).
//!
//! ```yaml
//! settings: {block_port_25: true}   # optional: absent keeps the current settings
//! prefix_lists:
//!   - {id: pl-1, name: office, family: ipv4, max_entries: 10,
//!      entries: [{cidr: 10.0.0.0/8, description: ""}]}
//! port_lists:
//!   - {name: web-ports, max_entries: 5, entries: [{range: 80/80}]}
//! groups:
//!   - name: web
//!     type: basic                      # basic (default) | enterprise | advanced
//!     inner_access_policy: Accept      # basic groups only; default Accept
//!     deletion_protection: false
//!     tags: {env: prod}
//!     rules:
//!       - {direction: ingress, policy: Accept, priority: 1, protocol: TCP,
//!          port_range: web-ports, peer: office}
//! nics:
//!   - {name: veth0, mode: local, addresses: [10.0.0.2], groups: [web]}
//! ```
//!
//! A rule's `port_range` is `a/b`, `-1/-1` (the default), a port list id or the
//! name of a port list of the document; its `peer` an address or CIDR, a group
//! or prefix list id, or the name of a group or prefix list of the document;
//! a NIC's `groups` are ids or names of groups of the document. Ids and
//! addresses win over names; a name must be unique among the document's
//! objects it could name (else it is refused as ambiguous).
//!
//! # What [`desired`] decides
//!
//! The document is the whole desired state: what it leaves out is deleted.
//! - Identity: an object with an `id` is that object. A group or list without
//!   one is the current object of the same name when exactly one has that name
//!   (and no other entry of the document claims it by id); otherwise it is new.
//!   A rule without an id keeps the id of a rule of the same group with an
//!   equal spec (description included; first come, first served); otherwise it
//!   is new. NICs are identified by name. New objects get fresh ids from the
//!   state's generator, never one in use or named by the document.
//! - Refused: any difference to a `managed` group (its absence included: the
//!   document has no `managed` field, so managed groups come only from the
//!   current state); deleting a group whose deletion protection is on in the
//!   current state; everything [`validate_change`](super::validate::validate_change) refuses.
//! - **Decided**: a group's type, and a rule's direction, may change: the
//!   document says what should be, and validation checks the result as a whole
//!   (NICs of one type, enterprise restrictions). The API's single operations
//!   offer no such change because they have no way to change the NICs and the
//!   rules around it at the same time.
//!
//! # Sweeps
//!
//! An apply whose result binds no NIC while the current state binds one, or
//! holds no group while the current state holds one, is a [`Sweep`]: the
//! daemon shows its `!` lines ([`Sweep::lines`]) at the top of the diff and
//! refuses it ([`check_sweep`]) unless the request says `allow_delete_all`.
//!
//! # Changes
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
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    fmt::{self, Write as _},
    net::IpAddr,
};

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, Visitor},
};
use serde_json::Value;

use super::{
    addr::{Cidr, Family},
    error::{DeleteBlocker, Labels, PolicyError},
    ids::{GroupId, IdGen, PortListId, PrefixListId, RuleId},
    model::{
        Action, BindingMode, Direction, GroupType, InnerPolicy, NicBinding, Peer, PortList,
        PortListEntry, PortRange, PortSpec, PrefixList, PrefixListEntry, Protocol, Rule, RuleSpec,
        SecurityGroup, Settings, State, parse_port_spec, parse_priority,
    },
    ops::ENTERPRISE_INNER_POLICY,
    validate::validate_change,
};

// ---- the document -----------------------------------------------------------

/// A whole desired state, as written in an `apply` file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Absent: keep the current settings; present: exactly these (missing
    /// fields take their defaults).
    #[serde(
        default,
        deserialize_with = "strict_settings",
        skip_serializing_if = "Option::is_none"
    )]
    pub settings: Option<Settings>,
    #[serde(default)]
    pub prefix_lists: Vec<PrefixListDoc>,
    #[serde(default)]
    pub port_lists: Vec<PortListDoc>,
    #[serde(default)]
    pub groups: Vec<GroupDoc>,
    #[serde(default)]
    pub nics: Vec<NicDoc>,
}

/// A prefix list of a [`Document`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixListDoc {
    /// `pl-…`; absent: matched by name, or new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `ipv4` or `ipv6` (any case).
    pub family: String,
    pub max_entries: u32,
    #[serde(default)]
    pub entries: Vec<PrefixEntryDoc>,
}

/// One entry of a [`PrefixListDoc`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixEntryDoc {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A port list of a [`Document`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortListDoc {
    /// `prl-…`; absent: matched by name, or new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub max_entries: u32,
    #[serde(default)]
    pub entries: Vec<PortEntryDoc>,
}

/// One entry of a [`PortListDoc`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortEntryDoc {
    /// `a/b`.
    pub range: Scalar,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A security group of a [`Document`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDoc {
    /// `sg-…`; absent: matched by name, or new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `basic` (the default), `enterprise` or `advanced`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `Accept` or `Drop`, basic groups only; absent: `Accept`. An
    /// enterprise group has none (it always isolates its members): giving
    /// one is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner_access_policy: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub deletion_protection: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// In order.
    #[serde(default)]
    pub rules: Vec<RuleDoc>,
}

/// A rule of a [`GroupDoc`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    /// `sgr-…`; absent: the id of an equal rule of the group, or new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `ingress` or `egress`.
    pub direction: String,
    /// `Accept` (the default) or `Drop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// 1..=100; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Scalar>,
    /// `TCP`, `UDP`, `ICMP`, `ICMPv6`, `GRE`, `ALL` or a number.
    pub protocol: Scalar,
    /// `a/b`, `-1/-1` (the default), a port list id or a port list's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range: Option<Scalar>,
    /// An address or CIDR, a group or prefix list id, or a group's or prefix
    /// list's name.
    pub peer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port_range: Option<Scalar>,
    /// The local address (ingress destination, egress source) as a CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A NIC binding of a [`Document`], identified by its interface name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicDoc {
    pub name: String,
    /// `local` or `port`.
    pub mode: String,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_allowed: Vec<String>,
    /// Absent: the mode's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_spoof: Option<bool>,
    /// Ids or names of groups of the document, in order.
    pub groups: Vec<String>,
}

/// A value written as a string or a number (`priority: 5` and `priority: "5"`
/// alike); read as text by the model's parsers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scalar {
    Number(i64),
    Text(String),
}

impl Default for Scalar {
    fn default() -> Self {
        Self::Text(String::new())
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

impl From<&str> for Scalar {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<i64> for Scalar {
    fn from(n: i64) -> Self {
        Self::Number(n)
    }
}

impl Serialize for Scalar {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Number(n) => s.serialize_i64(*n),
            Self::Text(t) => s.serialize_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(i64::try_from(v).map_or_else(|_| Scalar::Text(v.to_string()), Scalar::Number))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
        }
        d.deserialize_any(ScalarVisitor)
    }
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_false(b: &bool) -> bool {
    !*b
}

/// Settings through their own serde, plus what `Settings` does not do itself:
/// refusing unknown fields (found by comparing with what the parsed settings
/// serialise to, so no field list is written twice).
fn strict_settings<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Settings>, D::Error> {
    let value = Value::deserialize(d)?;
    if value.is_null() {
        return Ok(None);
    }
    let settings: Settings = serde_json::from_value(value.clone())
        .map_err(|e| de::Error::custom(format!("settings: {e}")))?;
    let known = serde_json::to_value(&settings).map_err(de::Error::custom)?;
    if let Some(path) = unknown_key(&value, &known, "settings") {
        return Err(de::Error::custom(format!("{path}: unknown field")));
    }
    Ok(Some(settings))
}

/// The first key of `given` that `known` lacks (recursively), as a path.
fn unknown_key(given: &Value, known: &Value, path: &str) -> Option<String> {
    let (Value::Object(g), Value::Object(k)) = (given, known) else {
        return None;
    };
    g.iter().find_map(|(key, v)| match k.get(key) {
        // A null may stand for a field that serialises to nothing.
        None if v.is_null() => None,
        None => Some(format!("{path}.{key}")),
        Some(kv) => unknown_key(v, kv, &format!("{path}.{key}")),
    })
}

/// Reads a document: JSON when its first non-blank character is `{`, YAML
/// otherwise. Only the shape is checked here; [`desired`] checks the values.
///
/// A document that says nothing — blank, only comments, only `---`, or a
/// YAML null (`null`, `~`) — is refused: read as a state it would be the
/// empty one, and applying it would delete everything. The empty state is
/// only ever the explicit `{}`.
pub fn parse(text: &str) -> Result<Document, PolicyError> {
    let body = text.trim_start_matches('\u{feff}').trim_start();
    if body.starts_with('{') {
        return serde_json::from_str(body).map_err(|e| PolicyError::Document {
            format: "JSON",
            reason: e.to_string(),
        });
    }
    // YAML reads a document without content as null: `Option` tells it
    // apart from a mapping, `{}` included.
    let doc: Option<Document> = if body.is_empty() {
        None
    } else {
        serde_norway::from_str(body).map_err(|e| PolicyError::Document {
            format: "YAML",
            reason: e.to_string(),
        })?
    };
    doc.ok_or_else(|| PolicyError::Document {
        format: "YAML",
        reason: EMPTY_DOCUMENT.to_owned(),
    })
}

/// Why a document without content is refused, and what to write instead.
pub const EMPTY_DOCUMENT: &str = "the document is empty (nothing but blanks, comments, `---` \
     or null), so nothing was applied; an empty state (no groups, lists or NICs) is written \
     `{}`, and applying it over a state that binds NICs or holds groups also needs \
     allow_delete_all (`sg-agent apply --allow-delete-all`)";

// ---- from a state -------------------------------------------------------------

/// The state as a document, ids included, settings included: applying it to
/// the same state changes nothing.
pub fn document_of(state: &State) -> Document {
    Document {
        settings: Some(state.settings.clone()),
        prefix_lists: state
            .prefix_lists
            .values()
            .map(|l| PrefixListDoc {
                id: Some(l.id.to_string()),
                name: l.name.clone(),
                description: l.description.clone(),
                family: l.family.to_string(),
                max_entries: l.max_entries,
                entries: l
                    .entries
                    .iter()
                    .map(|e| PrefixEntryDoc {
                        cidr: e.cidr.to_string(),
                        description: e.description.clone(),
                    })
                    .collect(),
            })
            .collect(),
        port_lists: state
            .port_lists
            .values()
            .map(|l| PortListDoc {
                id: Some(l.id.to_string()),
                name: l.name.clone(),
                description: l.description.clone(),
                max_entries: l.max_entries,
                entries: l
                    .entries
                    .iter()
                    .map(|e| PortEntryDoc {
                        range: Scalar::Text(e.range.to_string()),
                        description: e.description.clone(),
                    })
                    .collect(),
            })
            .collect(),
        groups: state.groups.values().map(group_doc).collect(),
        nics: state
            .nics
            .values()
            .map(|n| NicDoc {
                name: n.name.clone(),
                mode: mode_text(n.mode).to_owned(),
                addresses: n.addresses.iter().map(ToString::to_string).collect(),
                extra_allowed: n.extra_allowed.iter().map(ToString::to_string).collect(),
                anti_spoof: n.anti_spoof,
                groups: n.groups.iter().map(ToString::to_string).collect(),
            })
            .collect(),
    }
}

fn group_doc(g: &SecurityGroup) -> GroupDoc {
    GroupDoc {
        id: Some(g.id.to_string()),
        name: g.name.clone(),
        description: g.description.clone(),
        kind: Some(g.kind.to_string()),
        // Enterprise groups have none (SPEC §1): a document giving one is
        // refused, so the export leaves it out.
        inner_access_policy: (g.kind == GroupType::Basic)
            .then(|| inner_text(g.inner_policy).to_owned()),
        deletion_protection: g.deletion_protection,
        tags: g.tags.clone(),
        rules: g
            .rules
            .iter()
            .map(|r| {
                let s = &r.spec;
                let protocol = s.protocol.to_string();
                RuleDoc {
                    id: Some(r.id.to_string()),
                    direction: s.direction.to_string(),
                    policy: Some(s.action.to_string()),
                    priority: Some(Scalar::Number(i64::from(s.priority))),
                    protocol: protocol
                        .parse::<i64>()
                        .map_or(Scalar::Text(protocol), Scalar::Number),
                    port_range: Some(Scalar::Text(ports_text(&s.ports))),
                    peer: s.peer.to_string(),
                    source_port_range: s.source_ports.map(|p| Scalar::Text(p.to_string())),
                    local: s.local.map(|c| c.to_string()),
                    description: s.description.clone(),
                }
            })
            .collect(),
    }
}

fn mode_text(mode: BindingMode) -> &'static str {
    match mode {
        BindingMode::Local => "local",
        BindingMode::Port => "port",
    }
}

fn inner_text(policy: InnerPolicy) -> &'static str {
    match policy {
        InnerPolicy::Accept => "Accept",
        InnerPolicy::Drop => "Drop",
    }
}

fn ports_text(ports: &PortSpec) -> String {
    match ports {
        PortSpec::Any => "-1/-1".to_owned(),
        PortSpec::Range(r) => r.to_string(),
        PortSpec::List(id) => id.to_string(),
    }
}

// ---- small parsers ------------------------------------------------------------

fn parse_family(field: &str, text: &str) -> Result<Family, PolicyError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "ipv4" => Ok(Family::Ipv4),
        "ipv6" => Ok(Family::Ipv6),
        _ => Err(PolicyError::invalid(field, text, "expected ipv4 or ipv6")),
    }
}

fn parse_kind(field: &str, text: &str) -> Result<GroupType, PolicyError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "basic" => Ok(GroupType::Basic),
        "enterprise" | "advanced" => Ok(GroupType::Enterprise),
        _ => Err(PolicyError::invalid(
            field,
            text,
            "expected basic or enterprise (advanced)",
        )),
    }
}

fn parse_mode(field: &str, text: &str) -> Result<BindingMode, PolicyError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "local" => Ok(BindingMode::Local),
        "port" => Ok(BindingMode::Port),
        _ => Err(PolicyError::invalid(field, text, "expected local or port")),
    }
}

/// A NIC address: an address (or a host CIDR), read by [`Cidr::parse`].
fn parse_address(field: &str, text: &str) -> Result<IpAddr, PolicyError> {
    let cidr = Cidr::parse(field, text)?;
    if cidr.is_host() {
        Ok(cidr.addr())
    } else {
        Err(PolicyError::invalid(
            field,
            text,
            "a NIC address is one address, not a network (extra_allowed takes networks)",
        ))
    }
}

/// Whether a text that is neither a value nor a known name was meant as a
/// value (then the value parser's message is the useful one).
fn looks_like_value(text: &str) -> bool {
    let t = text.trim();
    t.starts_with(|c: char| c.is_ascii_digit() || c == '-') || t.contains([':', '/'])
}

// ---- identity ------------------------------------------------------------------

/// The id generator and every id it must not hand out: those of the current
/// state and those the document names.
struct Fresh {
    gen_: IdGen,
    used: BTreeSet<String>,
}

impl Fresh {
    fn new(current: &State) -> Self {
        let mut used = BTreeSet::new();
        used.extend(current.groups.keys().map(ToString::to_string));
        used.extend(current.prefix_lists.keys().map(ToString::to_string));
        used.extend(current.port_lists.keys().map(ToString::to_string));
        used.extend(current.all_rules().map(|(_, r)| r.id.to_string()));
        Self {
            gen_: current.ids.clone(),
            used,
        }
    }

    fn next<T: ToString>(&mut self, make: fn(&str) -> T) -> T {
        loop {
            let id = make(&self.gen_.next_suffix());
            if self.used.insert(id.to_string()) {
                return id;
            }
        }
    }
}

/// Parses the ids a document gives, refusing one given twice.
fn explicit_ids<'a, T: Ord + Clone + fmt::Display>(
    items: impl Iterator<Item = (String, Option<&'a str>)>,
    parse: fn(&str, &str) -> Result<T, PolicyError>,
    fresh: &mut Fresh,
) -> Result<Vec<Option<T>>, PolicyError> {
    let mut seen: BTreeMap<T, String> = BTreeMap::new();
    let mut out = Vec::new();
    for (path, text) in items {
        let Some(text) = text else {
            out.push(None);
            continue;
        };
        let field = format!("{path}.id");
        let id = parse(&field, text)?;
        if let Some(first) = seen.get(&id) {
            return Err(PolicyError::invalid(
                field,
                text,
                format!("the document gives this id twice (also {first})"),
            ));
        }
        seen.insert(id.clone(), path);
        fresh.used.insert(id.to_string());
        out.push(Some(id));
    }
    Ok(out)
}

/// The ids of a document's groups or lists: given, else the one current object
/// of that name not claimed otherwise, else fresh.
fn assign_ids<T: Ord + Clone>(
    given: Vec<Option<T>>,
    names: &[&str],
    current: &[(&T, &str)],
    mut fresh: impl FnMut() -> T,
) -> Vec<T> {
    let claimed: BTreeSet<T> = given.iter().flatten().cloned().collect();
    let mut taken = BTreeSet::new();
    given
        .into_iter()
        .zip(names)
        .map(|(id, name)| {
            if let Some(id) = id {
                return id;
            }
            let mut same = current.iter().filter(|(_, n)| n == name);
            match (same.next(), same.next()) {
                (Some((id, _)), None) if !claimed.contains(*id) && taken.insert((*id).clone()) => {
                    (*id).clone()
                }
                _ => fresh(),
            }
        })
        .collect()
}

/// What a name of the document stands for.
struct Names<T> {
    ids: BTreeSet<T>,
    by_name: BTreeMap<String, Vec<T>>,
}

impl<T: Ord + Clone> Names<T> {
    fn new<'a>(pairs: impl Iterator<Item = (&'a T, &'a str)>) -> Self
    where
        T: 'a,
    {
        let mut ids = BTreeSet::new();
        let mut by_name: BTreeMap<String, Vec<T>> = BTreeMap::new();
        for (id, name) in pairs {
            ids.insert(id.clone());
            by_name.entry(name.to_owned()).or_default().push(id.clone());
        }
        Self { ids, by_name }
    }

    fn named(&self, name: &str) -> &[T] {
        self.by_name
            .get(name)
            .or_else(|| self.by_name.get(name.trim()))
            .map_or(&[], Vec::as_slice)
    }
}

fn ambiguous(field: &str, name: &str, what: &str, count: usize) -> PolicyError {
    PolicyError::invalid(
        field,
        name,
        format!("ambiguous: {count} {what} of this document have this name; refer to one by id"),
    )
}

/// Resolves the references a document makes by name.
struct Refs {
    groups: Names<GroupId>,
    prefix_lists: Names<PrefixListId>,
    port_lists: Names<PortListId>,
}

impl Refs {
    fn peer(&self, field: &str, text: &str) -> Result<Peer, PolicyError> {
        let parsed = Peer::parse(field, text);
        match &parsed {
            Ok(Peer::Cidr(_)) => return parsed,
            Ok(Peer::Group(id)) if self.groups.ids.contains(id) => return parsed,
            Ok(Peer::PrefixList(id)) if self.prefix_lists.ids.contains(id) => return parsed,
            _ => {}
        }
        let groups = self.groups.named(text);
        let lists = self.prefix_lists.named(text);
        match (groups, lists) {
            ([g], []) => Ok(Peer::Group(g.clone())),
            ([], [l]) => Ok(Peer::PrefixList(l.clone())),
            ([], []) => match parsed {
                Ok(Peer::Group(id)) => Err(PolicyError::not_found(field, GroupId::KIND, id)),
                Ok(Peer::PrefixList(id)) => {
                    Err(PolicyError::not_found(field, PrefixListId::KIND, id))
                }
                Ok(peer) => Ok(peer),
                Err(e) if looks_like_value(text) => Err(e),
                Err(_) => Err(PolicyError::invalid(
                    field,
                    text,
                    "neither an address or CIDR, a security group or prefix list id, nor the \
                     name of a security group or prefix list of this document",
                )),
            },
            (g, l) => Err(ambiguous(
                field,
                text,
                "security groups and prefix lists",
                g.len() + l.len(),
            )),
        }
    }

    fn ports(&self, field: &str, text: &str) -> Result<PortSpec, PolicyError> {
        let parsed = parse_port_spec(field, text);
        match &parsed {
            Ok(PortSpec::Any | PortSpec::Range(_)) => return parsed,
            Ok(PortSpec::List(id)) if self.port_lists.ids.contains(id) => return parsed,
            _ => {}
        }
        match (self.port_lists.named(text), parsed) {
            ([l], _) => Ok(PortSpec::List(l.clone())),
            ([], Ok(PortSpec::List(id))) => {
                Err(PolicyError::not_found(field, PortListId::KIND, id))
            }
            ([], Ok(spec)) => Ok(spec),
            ([], Err(e)) if looks_like_value(text) => Err(e),
            ([], Err(_)) => Err(PolicyError::invalid(
                field,
                text,
                "neither a port range a/b, -1/-1, a port list id, nor the name of a port list \
                 of this document",
            )),
            (l, _) => Err(ambiguous(field, text, "port lists", l.len())),
        }
    }

    fn group(&self, field: &str, text: &str) -> Result<GroupId, PolicyError> {
        let parsed = GroupId::parse(field, text.trim());
        if let Ok(id) = &parsed
            && self.groups.ids.contains(id)
        {
            return parsed;
        }
        match self.groups.named(text) {
            [g] => Ok(g.clone()),
            [] => Err(PolicyError::not_found(field, GroupId::KIND, text)),
            many => Err(ambiguous(field, text, "security groups", many.len())),
        }
    }
}

// ---- desired ---------------------------------------------------------------------

/// The state the document describes, computed from `current` (which is not
/// touched): see the module documentation for identity and refusals. The
/// result passes [`validate_change`] from `current`; its id generator is advanced past every
/// id handed out.
pub fn desired(current: &State, doc: &Document) -> Result<State, PolicyError> {
    let mut fresh = Fresh::new(current);
    let ids = identities(current, doc, &mut fresh)?;
    let prefix_lists = prefix_lists(doc, &ids.prefix_lists)?;
    let port_lists = port_lists(doc, &ids.port_lists)?;
    let refs = Refs {
        groups: Names::new(
            ids.groups
                .iter()
                .zip(doc.groups.iter().map(|g| g.name.as_str())),
        ),
        prefix_lists: Names::new(
            ids.prefix_lists
                .iter()
                .zip(doc.prefix_lists.iter().map(|l| l.name.as_str())),
        ),
        port_lists: Names::new(
            ids.port_lists
                .iter()
                .zip(doc.port_lists.iter().map(|l| l.name.as_str())),
        ),
    };
    let groups = groups(current, doc, &ids, &refs, &mut fresh)?;
    let labels = labels(current, doc, &ids, &groups);
    check_refusals(current, &groups).map_err(|e| labels.apply(e))?;
    let nics = nics(doc, &refs)?;

    let next = State {
        settings: doc
            .settings
            .clone()
            .unwrap_or_else(|| current.settings.clone()),
        groups,
        prefix_lists,
        port_lists,
        nics,
        ids: fresh.gen_,
    };
    validate_change(current, &next).map_err(|e| labels.apply(e))?;
    Ok(next)
}

/// The ids of a document's objects, in document order; rules only where the
/// document gives them (the others are matched once their spec is known).
struct Identities {
    prefix_lists: Vec<PrefixListId>,
    port_lists: Vec<PortListId>,
    groups: Vec<GroupId>,
    /// Every rule of the document, group after group.
    rules: Vec<Option<RuleId>>,
}

fn identities(
    current: &State,
    doc: &Document,
    fresh: &mut Fresh,
) -> Result<Identities, PolicyError> {
    // Every given id first, so that no fresh id can take one of them.
    let given_prefix = explicit_ids(
        doc.prefix_lists
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("prefix_lists[{i}]"), l.id.as_deref())),
        PrefixListId::parse,
        fresh,
    )?;
    let given_port = explicit_ids(
        doc.port_lists
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("port_lists[{i}]"), l.id.as_deref())),
        PortListId::parse,
        fresh,
    )?;
    let given_group = explicit_ids(
        doc.groups
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("groups[{i}]"), g.id.as_deref())),
        GroupId::parse,
        fresh,
    )?;
    let rules = explicit_ids(
        doc.groups.iter().enumerate().flat_map(|(i, g)| {
            g.rules
                .iter()
                .enumerate()
                .map(move |(j, r)| (format!("groups[{i}].rules[{j}]"), r.id.as_deref()))
        }),
        RuleId::parse,
        fresh,
    )?;
    Ok(Identities {
        prefix_lists: assign_ids(
            given_prefix,
            &doc.prefix_lists
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>(),
            &current
                .prefix_lists
                .values()
                .map(|l| (&l.id, l.name.as_str()))
                .collect::<Vec<_>>(),
            || fresh.next(PrefixListId::from_suffix),
        ),
        port_lists: assign_ids(
            given_port,
            &doc.port_lists
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>(),
            &current
                .port_lists
                .values()
                .map(|l| (&l.id, l.name.as_str()))
                .collect::<Vec<_>>(),
            || fresh.next(PortListId::from_suffix),
        ),
        groups: assign_ids(
            given_group,
            &doc.groups
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>(),
            &current
                .groups
                .values()
                .map(|g| (&g.id, g.name.as_str()))
                .collect::<Vec<_>>(),
            || fresh.next(GroupId::from_suffix),
        ),
        rules,
    })
}

fn prefix_lists(
    doc: &Document,
    ids: &[PrefixListId],
) -> Result<BTreeMap<PrefixListId, PrefixList>, PolicyError> {
    let mut out = BTreeMap::new();
    for (i, (l, id)) in doc.prefix_lists.iter().zip(ids).enumerate() {
        let f = format!("prefix_lists[{i}]");
        let entries = l
            .entries
            .iter()
            .enumerate()
            .map(|(j, e)| {
                Ok(PrefixListEntry {
                    cidr: Cidr::parse(&format!("{f}.entries[{j}].cidr"), &e.cidr)?,
                    description: e.description.clone(),
                })
            })
            .collect::<Result<_, PolicyError>>()?;
        out.insert(
            id.clone(),
            PrefixList {
                id: id.clone(),
                name: l.name.clone(),
                description: l.description.clone(),
                family: parse_family(&format!("{f}.family"), &l.family)?,
                max_entries: l.max_entries,
                entries,
            },
        );
    }
    Ok(out)
}

fn port_lists(
    doc: &Document,
    ids: &[PortListId],
) -> Result<BTreeMap<PortListId, PortList>, PolicyError> {
    let mut out = BTreeMap::new();
    for (i, (l, id)) in doc.port_lists.iter().zip(ids).enumerate() {
        let f = format!("port_lists[{i}]");
        let entries = l
            .entries
            .iter()
            .enumerate()
            .map(|(j, e)| {
                Ok(PortListEntry {
                    range: PortRange::parse(
                        &format!("{f}.entries[{j}].range"),
                        &e.range.to_string(),
                    )?,
                    description: e.description.clone(),
                })
            })
            .collect::<Result<_, PolicyError>>()?;
        out.insert(
            id.clone(),
            PortList {
                id: id.clone(),
                name: l.name.clone(),
                description: l.description.clone(),
                max_entries: l.max_entries,
                entries,
            },
        );
    }
    Ok(out)
}

fn rule_spec(refs: &Refs, path: &str, r: &RuleDoc) -> Result<RuleSpec, PolicyError> {
    let f = |name: &str| format!("{path}.{name}");
    Ok(RuleSpec {
        direction: Direction::parse(&f("direction"), &r.direction)?,
        action: match &r.policy {
            None => Action::Accept,
            Some(p) => Action::parse(&f("policy"), p)?,
        },
        priority: match &r.priority {
            None => 1,
            Some(p) => parse_priority(&f("priority"), &p.to_string())?,
        },
        protocol: Protocol::parse(&f("protocol"), &r.protocol.to_string())?,
        ports: match &r.port_range {
            None => PortSpec::Any,
            Some(p) => refs.ports(&f("port_range"), &p.to_string())?,
        },
        peer: refs.peer(&f("peer"), &r.peer)?,
        source_ports: r
            .source_port_range
            .as_ref()
            .map(|p| PortRange::parse(&f("source_port_range"), &p.to_string()))
            .transpose()?,
        local: r
            .local
            .as_deref()
            .map(|l| Cidr::parse(&f("local"), l))
            .transpose()?,
        description: r.description.clone(),
    })
}

fn groups(
    current: &State,
    doc: &Document,
    ids: &Identities,
    refs: &Refs,
    fresh: &mut Fresh,
) -> Result<BTreeMap<GroupId, SecurityGroup>, PolicyError> {
    let claimed: BTreeSet<&RuleId> = ids.rules.iter().flatten().collect();
    let mut given = ids.rules.iter();
    let mut out = BTreeMap::new();
    for (i, (g, id)) in doc.groups.iter().zip(&ids.groups).enumerate() {
        let f = format!("groups[{i}]");
        let kind = match &g.kind {
            None => GroupType::Basic,
            Some(k) => parse_kind(&format!("{f}.type"), k)?,
        };
        let inner_field = format!("{f}.inner_access_policy");
        let inner_policy = match (kind, &g.inner_access_policy) {
            (GroupType::Basic, None) => InnerPolicy::Accept,
            (GroupType::Enterprise, None) => InnerPolicy::Drop,
            (GroupType::Basic, Some(text)) => match Action::parse(&inner_field, text)? {
                Action::Drop => InnerPolicy::Drop,
                Action::Accept => InnerPolicy::Accept,
            },
            (GroupType::Enterprise, Some(text)) => {
                return Err(PolicyError::Enterprise {
                    field: inner_field,
                    value: text.clone(),
                    reason: ENTERPRISE_INNER_POLICY,
                });
            }
        };
        let now = current.groups.get(id);
        // The current rules no id in the document claims, by spec, in order:
        // a rule without id takes the first one of its spec (one lookup, not
        // a scan of the group per rule).
        let mut unclaimed: HashMap<&RuleSpec, VecDeque<&RuleId>> = HashMap::new();
        for cr in now.iter().flat_map(|c| &c.rules) {
            if !claimed.contains(&cr.id) {
                unclaimed.entry(&cr.spec).or_default().push_back(&cr.id);
            }
        }
        let mut matched = BTreeSet::new();
        let mut rules = Vec::new();
        for (j, r) in g.rules.iter().enumerate() {
            let spec = rule_spec(refs, &format!("{f}.rules[{j}]"), r)?;
            let rule_id = if let Some(rid) = given.next().cloned().flatten() {
                rid
            } else {
                let same = unclaimed.get_mut(&spec);
                let taken = same.and_then(|q| {
                    std::iter::from_fn(|| q.pop_front()).find(|id| !matched.contains(*id))
                });
                taken.map_or_else(|| fresh.next(RuleId::from_suffix), Clone::clone)
            };
            matched.insert(rule_id.clone());
            rules.push(Rule { id: rule_id, spec });
        }
        out.insert(
            id.clone(),
            SecurityGroup {
                id: id.clone(),
                name: g.name.clone(),
                description: g.description.clone(),
                kind,
                inner_policy,
                deletion_protection: g.deletion_protection,
                managed: now.is_some_and(|c| c.managed),
                tags: g.tags.clone(),
                rules,
            },
        );
    }
    Ok(out)
}

/// Managed groups stay exactly as they are; groups under deletion protection
/// stay.
fn check_refusals(
    current: &State,
    next: &BTreeMap<GroupId, SecurityGroup>,
) -> Result<(), PolicyError> {
    for (id, now) in &current.groups {
        let Some(new) = next.get(id) else {
            let mut blockers = Vec::new();
            if now.deletion_protection {
                blockers.push(DeleteBlocker::DeletionProtection);
            }
            if now.managed {
                blockers.push(DeleteBlocker::Managed);
            }
            if blockers.is_empty() {
                continue;
            }
            return Err(PolicyError::DeleteRefused {
                group: id.to_string(),
                blockers,
            });
        };
        if now.managed && new != now {
            let operation = if new.name != now.name {
                "rename"
            } else if new.description != now.description {
                "change description"
            } else if new.kind != now.kind {
                "change type"
            } else if new.inner_policy != now.inner_policy {
                "change intra-group policy"
            } else if new.deletion_protection != now.deletion_protection {
                "change deletion protection"
            } else if new.tags != now.tags {
                "change tags"
            } else {
                "change rules"
            };
            return Err(PolicyError::Managed {
                group: id.to_string(),
                operation,
            });
        }
    }
    Ok(())
}

fn nics(doc: &Document, refs: &Refs) -> Result<BTreeMap<String, NicBinding>, PolicyError> {
    let mut out: BTreeMap<String, NicBinding> = BTreeMap::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, n) in doc.nics.iter().enumerate() {
        let f = format!("nics[{i}]");
        if let Some(first) = seen.insert(&n.name, i) {
            return Err(PolicyError::invalid(
                format!("{f}.name"),
                &n.name,
                format!("the document binds this NIC twice (also nics[{first}])"),
            ));
        }
        let binding = NicBinding {
            name: n.name.clone(),
            mode: parse_mode(&format!("{f}.mode"), &n.mode)?,
            addresses: n
                .addresses
                .iter()
                .enumerate()
                .map(|(j, a)| parse_address(&format!("{f}.addresses[{j}]"), a))
                .collect::<Result<_, _>>()?,
            extra_allowed: n
                .extra_allowed
                .iter()
                .enumerate()
                .map(|(j, c)| Cidr::parse(&format!("{f}.extra_allowed[{j}]"), c))
                .collect::<Result<_, _>>()?,
            anti_spoof: n.anti_spoof,
            groups: n
                .groups
                .iter()
                .enumerate()
                .map(|(j, g)| refs.group(&format!("{f}.groups[{j}]"), g))
                .collect::<Result<_, _>>()?,
        };
        out.insert(n.name.clone(), binding);
    }
    Ok(out)
}

/// How errors name the document's objects: state paths (`groups[sg-…].rules[3]`)
/// become the document's (`groups[1].rules[3]`), and the ids this apply
/// made, which the user never saw, become places in the document
/// (`groups[1] (web)`, `groups[1].rules[0]`). Ids of the current state stay:
/// the user can look them up.
fn labels(
    current: &State,
    doc: &Document,
    ids: &Identities,
    groups: &BTreeMap<GroupId, SecurityGroup>,
) -> Labels {
    let mut l = Labels::default();
    for (i, (id, g)) in ids.groups.iter().zip(&doc.groups).enumerate() {
        l.path(format!("groups[{id}]"), format!("groups[{i}]"));
        if !current.groups.contains_key(id) {
            l.id(id, format!("groups[{i}] ({})", g.name));
        }
        for (j, r) in groups.get(id).iter().flat_map(|g| &g.rules).enumerate() {
            if current.find_rule(&r.id).is_none() {
                l.id(&r.id, format!("groups[{i}].rules[{j}]"));
            }
        }
    }
    for (i, (id, p)) in ids.prefix_lists.iter().zip(&doc.prefix_lists).enumerate() {
        l.path(format!("prefix_lists[{id}]"), format!("prefix_lists[{i}]"));
        if !current.prefix_lists.contains_key(id) {
            l.id(id, format!("prefix_lists[{i}] ({})", p.name));
        }
    }
    for (i, (id, p)) in ids.port_lists.iter().zip(&doc.port_lists).enumerate() {
        l.path(format!("port_lists[{id}]"), format!("port_lists[{i}]"));
        if !current.port_lists.contains_key(id) {
            l.id(id, format!("port_lists[{i}] ({})", p.name));
        }
    }
    for (i, n) in doc.nics.iter().enumerate() {
        l.path(format!("nics[{}]", n.name), format!("nics[{i}]"));
    }
    l
}

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
        diff_group(old.groups.get(id), new.groups.get(id), &mut out);
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

// ---- sweeping changes --------------------------------------------------------------

/// At most this many names in a [`Sweep`]'s text; the others are counted.
const SWEEP_NAMES: usize = 10;

/// What an apply would take away wholesale: every NIC binding (the current
/// state binds at least one, the result none) or every security group
/// (likewise). A NIC left unbound is no longer enforced: it passes every
/// packet. [`check_sweep`] refuses such an apply unless it is asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    /// The NICs the current state binds, when the result binds none.
    pub unbound: Vec<String>,
    /// The current groups as `id (name)`, when the result has none.
    pub deleted: Vec<String>,
}

impl Sweep {
    /// The sweep from `old` to `new`, `None` when nothing is swept away.
    pub fn of(old: &State, new: &State) -> Option<Self> {
        let mut sweep = Self::default();
        if !old.nics.is_empty() && new.nics.is_empty() {
            sweep.unbound = old.nics.keys().cloned().collect();
        }
        if !old.groups.is_empty() && new.groups.is_empty() {
            sweep.deleted = old
                .groups
                .values()
                .map(|g| format!("{} ({})", g.id, g.name))
                .collect();
        }
        (sweep != Self::default()).then_some(sweep)
    }

    /// One line per kind swept away, each starting with `!`: what a diff
    /// shows first.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.unbound.is_empty() {
            out.push(format!(
                "! unbinds every NIC (an unbound NIC passes every packet): {} (needs allow_delete_all)",
                few(&self.unbound)
            ));
        }
        if !self.deleted.is_empty() {
            out.push(format!(
                "! deletes every security group: {} (needs allow_delete_all)",
                few(&self.deleted)
            ));
        }
        out
    }

    fn what(&self) -> String {
        let mut parts = Vec::new();
        if !self.unbound.is_empty() {
            parts.push(format!(
                "it would unbind every NIC ({}), which would then pass every packet",
                few(&self.unbound)
            ));
        }
        if !self.deleted.is_empty() {
            parts.push(format!(
                "it would delete every security group ({})",
                few(&self.deleted)
            ));
        }
        parts.join(" and ")
    }
}

/// The first [`SWEEP_NAMES`] items, joined, and how many more there are.
fn few(items: &[String]) -> String {
    let mut text = items
        .iter()
        .take(SWEEP_NAMES)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SWEEP_NAMES {
        let _ = write!(text, " and {} more", items.len() - SWEEP_NAMES);
    }
    text
}

/// Refuses going from `old` to `new` when it sweeps away every NIC binding
/// or every group, unless `allow` (`allow_delete_all`) says it is meant.
/// Returns the sweep when allowed, for the diff to show.
pub fn check_sweep(old: &State, new: &State, allow: bool) -> Result<Option<Sweep>, PolicyError> {
    match Sweep::of(old, new) {
        Some(sweep) if !allow => Err(PolicyError::Sweeping { what: sweep.what() }),
        sweep => Ok(sweep),
    }
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

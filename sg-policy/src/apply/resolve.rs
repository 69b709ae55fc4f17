//! From a document to the desired [`State`]: identity, references, refusals.
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

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    fmt::{self},
};

use crate::{
    addr::{Cidr, Family},
    error::{DeleteBlocker, Labels, PolicyError},
    ids::{GroupId, IdGen, PortListId, PrefixListId, RuleId},
    model::{
        Action, BindingMode, Direction, GroupType, InnerPolicy, NicBinding, Peer, PortList,
        PortListEntry, PortRange, PortSpec, PrefixList, PrefixListEntry, Protocol, Rule, RuleSpec,
        SecurityGroup, State, parse_port_spec, parse_priority,
    },
    ops::ENTERPRISE_INNER_POLICY,
    validate::validate_change,
};

use super::document::{Document, RuleDoc};

// ---- small parsers ------------------------------------------------------------

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

    // A group the document leaves as it is stays shared with `current`.
    let groups = groups
        .into_iter()
        .map(|(id, g)| {
            let shared = current.groups.get(&id).filter(|c| ***c == g).cloned();
            (id, shared.unwrap_or_else(|| std::sync::Arc::new(g)))
        })
        .collect();
    let next = State {
        settings: doc
            .settings
            .clone()
            .unwrap_or_else(|| current.settings.clone()),
        groups,
        prefix_lists,
        port_lists,
        nics,
        // Another host's bindings are that host's to change.
        remote: current.remote.clone(),
        census: current.census.clone(),
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
                family: Family::parse(&format!("{f}.family"), &l.family)?,
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
            Some(k) => GroupType::parse(&format!("{f}.type"), k)?,
        };
        let inner_field = format!("{f}.inner_access_policy");
        let inner_policy = match (kind, &g.inner_access_policy) {
            (GroupType::Basic, None) => InnerPolicy::Accept,
            (GroupType::Enterprise, None) => InnerPolicy::Drop,
            (GroupType::Basic, Some(text)) => InnerPolicy::parse(&inner_field, text)?,
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
        if now.managed && new != &**now {
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
            mode: BindingMode::parse(&format!("{f}.mode"), &n.mode)?,
            addresses: n
                .addresses
                .iter()
                .enumerate()
                .map(|(j, a)| NicBinding::parse_address(&format!("{f}.addresses[{j}]"), a))
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

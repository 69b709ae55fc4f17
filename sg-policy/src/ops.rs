//! The operations of SPEC §5 (sessions and snapshots aside) as methods on
//! [`State`].
//!
//! Every operation is a transaction: it works on a copy, runs
//! [`validate_change`] from the state before on the result, and only then
//! replaces the state. A refused operation leaves the state exactly as it
//! was. Its errors name what the request gave, not ids it made ([`Labels`]).

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use super::{
    addr::{Cidr, Family},
    error::{DeleteBlocker, Labels, PolicyError},
    ids::{GroupId, PortListId, PrefixListId, RuleId},
    model::{
        GroupType, InnerPolicy, NicBinding, Peer, PortList, PortListEntry, PortSpec, PrefixList,
        PrefixListEntry, Rule, RuleSpec, SecurityGroup, Settings, State,
    },
    validate::{PRIORITY_MAX, check_rule, check_text, validate_change},
};

/// Why an enterprise group takes no intra-group policy (SPEC §1).
pub(crate) const ENTERPRISE_INNER_POLICY: &str = "only basic groups have an intra-group policy; \
     an enterprise group always isolates its members (leave the policy out)";

/// What a new group looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    pub name: String,
    pub description: String,
    pub kind: GroupType,
    /// `None`: `Accept` for basic groups, `Drop` (isolation) for enterprise ones.
    pub inner_policy: Option<InnerPolicy>,
    pub deletion_protection: bool,
    pub managed: bool,
    pub tags: BTreeMap<String, String>,
}

impl GroupSpec {
    /// A basic group with the default intra-group policy (`Accept`).
    pub fn basic(name: &str) -> Self {
        Self::of_type(name, GroupType::Basic)
    }

    /// An enterprise group.
    pub fn enterprise(name: &str) -> Self {
        Self::of_type(name, GroupType::Enterprise)
    }

    fn of_type(name: &str, kind: GroupType) -> Self {
        Self {
            name: name.to_owned(),
            description: String::new(),
            kind,
            inner_policy: None,
            deletion_protection: false,
            managed: false,
            tags: BTreeMap::new(),
        }
    }
}

/// A change to a group's attributes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupChange {
    pub name: Option<String>,
    pub description: Option<String>,
    pub deletion_protection: Option<bool>,
    pub tags: Option<BTreeMap<String, String>>,
}

/// What a prefix list holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixListSpec {
    pub name: String,
    pub description: String,
    pub family: Family,
    pub max_entries: u32,
    pub entries: Vec<PrefixListEntry>,
}

/// What a port list holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortListSpec {
    pub name: String,
    pub description: String,
    pub max_entries: u32,
    pub entries: Vec<PortListEntry>,
}

/// How to clone a group (seed 000, "Clone security groups").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneOptions {
    /// The clone's name; `None` = the source's name.
    pub name: Option<String>,
    /// Keep the rules (with new ids; priorities above 100 become 100).
    pub keep_rules: bool,
    /// Copy the tags.
    pub copy_tags: bool,
}

impl State {
    /// Runs `change` on a copy of the state, validates the result, and commits it.
    fn transact<T>(
        &mut self,
        change: impl FnOnce(&mut State) -> Result<T, PolicyError>,
    ) -> Result<T, PolicyError> {
        self.transact_labelled(|s, _| change(s))
    }

    /// [`State::transact`] for a change that makes objects: `change` labels
    /// their new ids with what the request gave (see [`Labels`]), and every
    /// error, its own and validation's, names those instead.
    pub(crate) fn transact_labelled<T>(
        &mut self,
        change: impl FnOnce(&mut State, &mut Labels) -> Result<T, PolicyError>,
    ) -> Result<T, PolicyError> {
        let mut next = self.clone();
        let mut labels = Labels::default();
        let out = change(&mut next, &mut labels).map_err(|e| labels.apply(e))?;
        validate_change(self, &next).map_err(|e| labels.apply(e))?;
        *self = next;
        Ok(out)
    }

    fn writable_group(
        &mut self,
        id: &GroupId,
        operation: &'static str,
    ) -> Result<&mut SecurityGroup, PolicyError> {
        let group = self
            .groups
            .get_mut(id)
            .ok_or_else(|| PolicyError::not_found("group", GroupId::KIND, id))?;
        if group.managed {
            return Err(PolicyError::Managed {
                group: id.to_string(),
                operation,
            });
        }
        // Copied here if another state still shares it.
        Ok(Arc::make_mut(group))
    }

    /// Replaces the agent settings (platform addresses, port-25 block).
    pub fn set_settings(&mut self, settings: Settings) -> Result<(), PolicyError> {
        self.transact(|s| {
            s.settings = settings;
            Ok(())
        })
    }

    // ---- groups ----------------------------------------------------------

    /// Creates a group; returns its new id.
    pub fn create_group(&mut self, spec: GroupSpec) -> Result<GroupId, PolicyError> {
        self.transact_labelled(|s, labels| s.new_group(spec, labels))
    }

    /// Adds a group (the body of [`State::create_group`]), its id labelled
    /// `group`; not validated.
    pub(crate) fn new_group(
        &mut self,
        spec: GroupSpec,
        labels: &mut Labels,
    ) -> Result<GroupId, PolicyError> {
        // SPEC §1: only basic groups have an intra-group policy. An
        // enterprise group given one, even `Drop`, is refused: the
        // request means something this group cannot have.
        let inner_policy = match (spec.kind, spec.inner_policy) {
            (GroupType::Basic, p) => p.unwrap_or(InnerPolicy::Accept),
            (GroupType::Enterprise, None) => InnerPolicy::Drop,
            (GroupType::Enterprise, Some(p)) => {
                return Err(PolicyError::Enterprise {
                    field: "group.inner_policy".to_owned(),
                    value: format!("{p:?}"),
                    reason: ENTERPRISE_INNER_POLICY,
                });
            }
        };
        let id = self.fresh_group_id();
        labels.path(format!("groups[{id}]"), "group");
        labels.id(&id, format!("the new group {:?}", spec.name));
        self.groups.insert(
            id.clone(),
            Arc::new(SecurityGroup {
                id: id.clone(),
                name: spec.name,
                description: spec.description,
                kind: spec.kind,
                inner_policy,
                deletion_protection: spec.deletion_protection,
                managed: spec.managed,
                tags: spec.tags,
                rules: Vec::new(),
            }),
        );
        Ok(id)
    }

    /// The group with id `id`.
    pub fn describe_group(&self, id: &GroupId) -> Result<&SecurityGroup, PolicyError> {
        self.group("group", id)
    }

    /// Changes a group's name, description, deletion protection or tags.
    pub fn modify_group(&mut self, id: &GroupId, change: GroupChange) -> Result<(), PolicyError> {
        self.transact(|s| {
            let g = s.writable_group(id, "modify group")?;
            if let Some(v) = change.name {
                g.name = v;
            }
            if let Some(v) = change.description {
                g.description = v;
            }
            if let Some(v) = change.deletion_protection {
                g.deletion_protection = v;
            }
            if let Some(v) = change.tags {
                g.tags = v;
            }
            Ok(())
        })
    }

    /// Why `id` cannot be deleted now (empty: it can).
    pub fn delete_blockers(&self, id: &GroupId) -> Result<Vec<DeleteBlocker>, PolicyError> {
        let group = self.group("group", id)?;
        let mut blockers: Vec<DeleteBlocker> = self
            .member_names(id)
            .into_iter()
            .map(|n| DeleteBlocker::UsedByNic(n.to_owned()))
            .collect();
        blockers.extend(
            self.all_rules()
                .filter(|(g, r)| &g.id != id && r.spec.peer == Peer::Group(id.clone()))
                .map(|(g, r)| DeleteBlocker::ReferencedByRule {
                    group: g.id.to_string(),
                    rule: r.id.to_string(),
                }),
        );
        if group.deletion_protection {
            blockers.push(DeleteBlocker::DeletionProtection);
        }
        if group.managed {
            blockers.push(DeleteBlocker::Managed);
        }
        Ok(blockers)
    }

    /// Deletes a group and its rules; refused, naming every reason, while a NIC
    /// uses it, another group's rule names it, deletion protection is on, or it
    /// is managed (SPEC §5).
    pub fn delete_group(&mut self, id: &GroupId) -> Result<SecurityGroup, PolicyError> {
        let blockers = self.delete_blockers(id)?;
        if !blockers.is_empty() {
            return Err(PolicyError::DeleteRefused {
                group: id.to_string(),
                blockers,
            });
        }
        self.transact(|s| {
            s.groups
                .remove(id)
                .map(Arc::unwrap_or_clone)
                .ok_or_else(|| PolicyError::not_found("group", GroupId::KIND, id))
        })
    }

    /// Changes the intra-group policy of a basic group (`ModifySecurityGroupPolicy`).
    pub fn set_inner_policy(
        &mut self,
        id: &GroupId,
        policy: InnerPolicy,
    ) -> Result<(), PolicyError> {
        self.transact(|s| {
            let g = s.writable_group(id, "change intra-group policy")?;
            if g.kind == GroupType::Enterprise {
                return Err(PolicyError::Enterprise {
                    field: format!("groups[{id}].inner_policy"),
                    value: format!("{policy:?}"),
                    reason: ENTERPRISE_INNER_POLICY,
                });
            }
            g.inner_policy = policy;
            Ok(())
        })
    }

    /// Clones a group (not its members). Rules naming the source group itself
    /// name the clone (**decided**: "current security group" stays itself).
    pub fn clone_group(
        &mut self,
        id: &GroupId,
        options: &CloneOptions,
    ) -> Result<GroupId, PolicyError> {
        let source = self.group("group", id)?.clone();
        self.transact_labelled(|s, labels| {
            let new_id = s.fresh_group_id();
            labels.path(format!("groups[{new_id}]"), "clone");
            labels.id(&new_id, format!("the clone of {id}"));
            let mut rules = Vec::new();
            if options.keep_rules {
                for (i, rule) in source.rules.iter().enumerate() {
                    let mut spec = rule.spec.clone();
                    spec.priority = spec.priority.min(PRIORITY_MAX);
                    if spec.peer == Peer::Group(id.clone()) {
                        spec.peer = Peer::Group(new_id.clone());
                    }
                    let rule_id = s.fresh_rule_id();
                    labels.id(
                        &rule_id,
                        format!("clone.rules[{i}] (a copy of {})", rule.id),
                    );
                    rules.push(Rule { id: rule_id, spec });
                }
            }
            s.groups.insert(
                new_id.clone(),
                Arc::new(SecurityGroup {
                    id: new_id.clone(),
                    name: options.name.clone().unwrap_or(source.name.clone()),
                    description: source.description.clone(),
                    kind: source.kind,
                    inner_policy: source.inner_policy,
                    deletion_protection: false,
                    managed: false,
                    tags: if options.copy_tags {
                        source.tags.clone()
                    } else {
                        BTreeMap::new()
                    },
                    rules,
                }),
            );
            Ok(new_id)
        })
    }

    // ---- rules -----------------------------------------------------------

    /// Adds rules to a group, with given ids where `Some` (import),
    /// atomically. `field` names the rules in errors: `rule` for one rule
    /// (`single`), else `{field}[i]`.
    pub(crate) fn insert_rules(
        &mut self,
        group: &GroupId,
        rules: Vec<(Option<RuleId>, RuleSpec)>,
        field: &str,
        single: bool,
    ) -> Result<Vec<RuleId>, PolicyError> {
        self.transact_labelled(|s, labels| s.add_rules(group, rules, field, single, labels))
    }

    /// The body of [`State::insert_rules`]: each rule's id labelled with its
    /// place in the request, so that a later rule duplicating it names
    /// `rules[0]`, not an id the user never saw; not validated.
    pub(crate) fn add_rules(
        &mut self,
        group: &GroupId,
        rules: Vec<(Option<RuleId>, RuleSpec)>,
        field: &str,
        single: bool,
        labels: &mut Labels,
    ) -> Result<Vec<RuleId>, PolicyError> {
        let s = self;
        let mut ids = Vec::new();
        for (i, (wanted, spec)) in rules.into_iter().enumerate() {
            let f = if single {
                field.to_owned()
            } else {
                format!("{field}[{i}]")
            };
            let owner = s.writable_group(group, "authorize rule")?.clone();
            check_rule(s, &owner, &f, &spec)?;
            // New text, named by its place in the request (validation
            // would name its place in the group).
            check_text(&format!("{f}.description"), &spec.description)?;
            if let Some(dup) = owner.rules.iter().find(|r| r.spec.same_match(&spec)) {
                return Err(PolicyError::DuplicateRule {
                    field: f,
                    group: group.to_string(),
                    existing: dup.id.to_string(),
                });
            }
            let id = match wanted {
                Some(id) if s.find_rule(&id).is_none() => id,
                _ => s.fresh_rule_id(),
            };
            labels.id(&id, format!("{f} of this request"));
            s.writable_group(group, "authorize rule")?.rules.push(Rule {
                id: id.clone(),
                spec,
            });
            ids.push(id);
        }
        Ok(ids)
    }

    /// Adds one rule (`AuthorizeSecurityGroup` / `AuthorizeSecurityGroupEgress`).
    pub fn authorize(&mut self, group: &GroupId, spec: RuleSpec) -> Result<RuleId, PolicyError> {
        self.insert_rules(group, vec![(None, spec)], "rule", true)
            .map(|mut v| v.remove(0))
    }

    /// Adds several rules at once: all or none. Errors name each rule by
    /// its place in `specs` (`rules[2]`).
    pub fn authorize_all(
        &mut self,
        group: &GroupId,
        specs: Vec<RuleSpec>,
    ) -> Result<Vec<RuleId>, PolicyError> {
        self.insert_rules(
            group,
            specs.into_iter().map(|s| (None, s)).collect(),
            "rules",
            false,
        )
    }

    /// Removes a rule (`RevokeSecurityGroup` / `RevokeSecurityGroupEgress`).
    pub fn revoke(&mut self, group: &GroupId, rule: &RuleId) -> Result<Rule, PolicyError> {
        let mut gone = self.revoke_all(group, std::slice::from_ref(rule))?;
        Ok(gone.remove(0))
    }

    /// Removes rules of one group, all or none, in one transaction (one
    /// validation, not one per rule: 1,000 rules in milliseconds). A rule
    /// named twice is not found the second time, as in two calls.
    pub fn revoke_all(
        &mut self,
        group: &GroupId,
        rules: &[RuleId],
    ) -> Result<Vec<Rule>, PolicyError> {
        self.transact(|s| {
            let g = s.writable_group(group, "revoke rule")?;
            let held: std::collections::HashSet<&RuleId> = g.rules.iter().map(|r| &r.id).collect();
            let mut wanted: std::collections::HashMap<RuleId, usize> =
                std::collections::HashMap::with_capacity(rules.len());
            for (i, rule) in rules.iter().enumerate() {
                if !held.contains(rule) || wanted.insert(rule.clone(), i).is_some() {
                    return Err(PolicyError::not_found("rule", RuleId::KIND, rule));
                }
            }
            let mut gone: Vec<Option<Rule>> = vec![None; rules.len()];
            g.rules.retain(|r| match wanted.get(&r.id) {
                Some(&i) => {
                    gone[i] = Some(r.clone());
                    false
                }
                None => true,
            });
            Ok(gone.into_iter().flatten().collect())
        })
    }

    /// Replaces a rule's fields, keeping its id and place
    /// (`ModifySecurityGroupRule` / `ModifySecurityGroupEgressRule`). The direction
    /// cannot change (**decided**: the documents' API has one call per direction).
    pub fn modify_rule(
        &mut self,
        group: &GroupId,
        rule: &RuleId,
        spec: RuleSpec,
    ) -> Result<(), PolicyError> {
        self.transact(|s| {
            let owner = s.writable_group(group, "modify rule")?.clone();
            let current = owner
                .rules
                .iter()
                .find(|r| &r.id == rule)
                .ok_or_else(|| PolicyError::not_found("rule", RuleId::KIND, rule))?;
            if current.spec.direction != spec.direction {
                return Err(PolicyError::invalid(
                    "rule.direction",
                    spec.direction,
                    format!(
                        "rule {rule} is {}; a rule's direction cannot change",
                        current.spec.direction
                    ),
                ));
            }
            check_rule(s, &owner, "rule", &spec)?;
            if current.spec.description != spec.description {
                check_text("rule.description", &spec.description)?;
            }
            if let Some(dup) = owner
                .rules
                .iter()
                .find(|r| &r.id != rule && r.spec.same_match(&spec))
            {
                return Err(PolicyError::DuplicateRule {
                    field: "rule".to_owned(),
                    group: group.to_string(),
                    existing: dup.id.to_string(),
                });
            }
            let g = s.writable_group(group, "modify rule")?;
            if let Some(r) = g.rules.iter_mut().find(|r| &r.id == rule) {
                r.spec = spec;
            }
            Ok(())
        })
    }

    // ---- NICs --------------------------------------------------------------

    /// Binds a NIC (its addresses, mode and groups).
    pub fn bind_nic(&mut self, binding: NicBinding) -> Result<(), PolicyError> {
        self.transact(|s| {
            if s.nics.contains_key(&binding.name) {
                return Err(PolicyError::AlreadyExists {
                    field: "nic.name".to_owned(),
                    kind: "NIC binding",
                    id: binding.name.clone(),
                });
            }
            s.nics.insert(binding.name.clone(), binding);
            Ok(())
        })
    }

    /// Forgets a NIC binding.
    pub fn unbind_nic(&mut self, name: &str) -> Result<NicBinding, PolicyError> {
        self.transact(|s| {
            s.nics
                .remove(name)
                .ok_or_else(|| PolicyError::not_found("nic", "NIC binding", name))
        })
    }

    fn nic_mut(&mut self, name: &str) -> Result<&mut NicBinding, PolicyError> {
        self.nics
            .get_mut(name)
            .ok_or_else(|| PolicyError::not_found("nic", "NIC binding", name))
    }

    /// Replaces a NIC's addresses and extra allowed addresses.
    pub fn set_nic_addresses(
        &mut self,
        name: &str,
        addresses: Vec<IpAddr>,
        extra_allowed: Vec<Cidr>,
    ) -> Result<(), PolicyError> {
        self.transact(|s| {
            let n = s.nic_mut(name)?;
            n.addresses = addresses;
            n.extra_allowed = extra_allowed;
            Ok(())
        })
    }

    /// Sets a NIC's anti-spoofing switch (`None` = its mode's default).
    pub fn set_anti_spoof(&mut self, name: &str, on: Option<bool>) -> Result<(), PolicyError> {
        self.transact(|s| {
            s.nic_mut(name)?.anti_spoof = on;
            Ok(())
        })
    }

    /// Adds a group to a NIC's list (`JoinSecurityGroup`). Joining a managed group
    /// is allowed (**decided**): membership is the NIC's attribute, not the group's.
    pub fn join(&mut self, nic: &str, group: &GroupId) -> Result<(), PolicyError> {
        self.transact(|s| {
            s.group("group", group)?;
            let n = s.nic_mut(nic)?;
            if n.groups.contains(group) {
                return Err(PolicyError::AlreadyExists {
                    field: format!("nics[{nic}].groups"),
                    kind: "membership of security group",
                    id: group.to_string(),
                });
            }
            n.groups.push(group.clone());
            Ok(())
        })
    }

    /// Removes a group from a NIC's list (`LeaveSecurityGroup`); a NIC keeps at
    /// least one group.
    pub fn leave(&mut self, nic: &str, group: &GroupId) -> Result<(), PolicyError> {
        self.transact(|s| {
            let n = s.nic_mut(nic)?;
            let pos = n.groups.iter().position(|g| g == group).ok_or_else(|| {
                PolicyError::not_found(format!("nics[{nic}].groups"), GroupId::KIND, group)
            })?;
            n.groups.remove(pos);
            Ok(())
        })
    }

    /// Sets a NIC's whole ordered group list at once.
    pub fn set_nic_groups(&mut self, nic: &str, groups: Vec<GroupId>) -> Result<(), PolicyError> {
        self.transact(|s| {
            s.nic_mut(nic)?.groups = groups;
            Ok(())
        })
    }

    // ---- prefix lists and port lists -------------------------------------

    /// Creates a prefix list (`CreatePrefixList`).
    pub fn create_prefix_list(
        &mut self,
        spec: PrefixListSpec,
    ) -> Result<PrefixListId, PolicyError> {
        self.transact_labelled(|s, labels| {
            let id = s.fresh_prefix_list_id();
            labels.path(format!("prefix_lists[{id}]"), "prefix_list");
            labels.id(&id, format!("the new prefix list {:?}", spec.name));
            s.prefix_lists.insert(
                id.clone(),
                PrefixList {
                    id: id.clone(),
                    name: spec.name,
                    description: spec.description,
                    family: spec.family,
                    max_entries: spec.max_entries,
                    entries: spec.entries,
                },
            );
            Ok(id)
        })
    }

    /// Replaces a prefix list's contents; refused when the new max entries would
    /// break a NIC's quota or the new family a rule's local address.
    pub fn modify_prefix_list(
        &mut self,
        id: &PrefixListId,
        spec: PrefixListSpec,
    ) -> Result<(), PolicyError> {
        self.transact(|s| {
            let l = s
                .prefix_lists
                .get_mut(id)
                .ok_or_else(|| PolicyError::not_found("prefix_list", PrefixListId::KIND, id))?;
            l.name = spec.name;
            l.description = spec.description;
            l.family = spec.family;
            l.max_entries = spec.max_entries;
            l.entries = spec.entries;
            Ok(())
        })
    }

    /// Deletes a prefix list no rule references.
    pub fn delete_prefix_list(&mut self, id: &PrefixListId) -> Result<PrefixList, PolicyError> {
        if let Some((g, r)) = self
            .all_rules()
            .find(|(_, r)| r.spec.peer == Peer::PrefixList(id.clone()))
        {
            return Err(PolicyError::InUse {
                kind: PrefixListId::KIND,
                id: id.to_string(),
                group: g.id.to_string(),
                rule: r.id.to_string(),
            });
        }
        self.transact(|s| {
            s.prefix_lists
                .remove(id)
                .ok_or_else(|| PolicyError::not_found("prefix_list", PrefixListId::KIND, id))
        })
    }

    /// Creates a port list (`CreatePortRangeList`).
    pub fn create_port_list(&mut self, spec: PortListSpec) -> Result<PortListId, PolicyError> {
        self.transact_labelled(|s, labels| {
            let id = s.fresh_port_list_id();
            labels.path(format!("port_lists[{id}]"), "port_list");
            labels.id(&id, format!("the new port list {:?}", spec.name));
            s.port_lists.insert(
                id.clone(),
                PortList {
                    id: id.clone(),
                    name: spec.name,
                    description: spec.description,
                    max_entries: spec.max_entries,
                    entries: spec.entries,
                },
            );
            Ok(id)
        })
    }

    /// Replaces a port list's contents; refused when the new max entries would
    /// break a NIC's quota.
    pub fn modify_port_list(
        &mut self,
        id: &PortListId,
        spec: PortListSpec,
    ) -> Result<(), PolicyError> {
        self.transact(|s| {
            let l = s
                .port_lists
                .get_mut(id)
                .ok_or_else(|| PolicyError::not_found("port_list", PortListId::KIND, id))?;
            l.name = spec.name;
            l.description = spec.description;
            l.max_entries = spec.max_entries;
            l.entries = spec.entries;
            Ok(())
        })
    }

    /// Deletes a port list no rule references.
    pub fn delete_port_list(&mut self, id: &PortListId) -> Result<PortList, PolicyError> {
        if let Some((g, r)) = self
            .all_rules()
            .find(|(_, r)| r.spec.ports == PortSpec::List(id.clone()))
        {
            return Err(PolicyError::InUse {
                kind: PortListId::KIND,
                id: id.to_string(),
                group: g.id.to_string(),
                rule: r.id.to_string(),
            });
        }
        self.transact(|s| {
            s.port_lists
                .remove(id)
                .ok_or_else(|| PolicyError::not_found("port_list", PortListId::KIND, id))
        })
    }
}

//! Merge and sort (SPEC §3 step 5): a NIC's rules of one direction, taken from
//! all its groups, resolved to plain match sets and put in decision order.
//!
//! This is the shape the eBPF compiler consumes: the index in the returned vector
//! is the rule's rank (0 = strongest), and every reference (prefix list, port
//! list, group peer) is already expanded to addresses and port ranges.

use std::cmp::Ordering;

use super::{
    addr::{Cidr, merge_intervals},
    error::PolicyError,
    ids::{GroupId, RuleId},
    model::{Action, Direction, GroupType, InnerPolicy, Peer, PortSpec, Rule, RuleSpec, State},
};

/// Which ports a rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortMatch {
    /// Ports do not restrict the match (`-1/-1`, or no source range set).
    Any,
    /// Inclusive ranges, sorted and merged. May be empty (a port list with no
    /// entries): then the rule matches no packet.
    Ranges(Vec<(u16, u16)>),
}

impl PortMatch {
    /// Whether `port` is matched.
    pub fn contains(&self, port: u16) -> bool {
        match self {
            Self::Any => true,
            Self::Ranges(v) => v.iter().any(|&(a, b)| a <= port && port <= b),
        }
    }

    /// Whether every port `other` matches, `self` matches too.
    pub fn covers(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Any, _) => true,
            (Self::Ranges(_), Self::Any) => false,
            (Self::Ranges(outer), Self::Ranges(inner)) => inner
                .iter()
                .all(|&(lo, hi)| outer.iter().any(|&(a, b)| a <= lo && hi <= b)),
        }
    }

    fn ranges(mut v: Vec<(u16, u16)>) -> Self {
        merge_intervals(&mut v);
        Self::Ranges(v)
    }
}

/// One rule with every reference resolved: what the data plane matches on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRule {
    pub id: RuleId,
    /// The group the rule belongs to.
    pub group: GroupId,
    pub direction: Direction,
    pub action: Action,
    pub priority: u8,
    /// `None` = ALL.
    pub protocol: Option<u8>,
    /// Destination ports (TCP/UDP rules); `Any` for every other protocol.
    pub dst_ports: PortMatch,
    /// Source ports (quintuple rules); `Any` when none are set.
    pub src_ports: PortMatch,
    /// The peer address set, sorted, IPv4 and IPv6 alike. Empty = matches no
    /// packet (a group without members, an empty prefix list).
    pub peers: Vec<Cidr>,
    /// The local address (ingress destination / egress source), when set.
    pub local: Option<Cidr>,
}

/// The decision order: priority ascending, `Drop` before `Accept`, then rule id.
pub fn decision_order(a: (u8, Action, &RuleId), b: (u8, Action, &RuleId)) -> Ordering {
    a.cmp(&b)
}

/// The addresses a group-id peer matches: the own addresses (SPEC §3 step 0:
/// addresses and extra allowed addresses) of every NIC bound to the group.
pub fn group_member_cidrs(state: &State, group: &GroupId) -> Vec<Cidr> {
    let mut v: Vec<Cidr> = state
        .members(group)
        .flat_map(super::model::NicBinding::own_cidrs)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The peer address set of a rule.
pub fn peer_cidrs(state: &State, peer: &Peer) -> Vec<Cidr> {
    let mut v = match peer {
        Peer::Cidr(c) => vec![*c],
        Peer::Group(g) => group_member_cidrs(state, g),
        Peer::PrefixList(id) => state
            .prefix_lists
            .get(id)
            .map(|l| l.entries.iter().map(|e| e.cidr).collect())
            .unwrap_or_default(),
    };
    v.sort_unstable();
    v.dedup();
    v
}

/// The destination ports of a rule.
pub fn dst_port_match(state: &State, spec: &RuleSpec) -> PortMatch {
    match &spec.ports {
        PortSpec::Any => PortMatch::Any,
        PortSpec::Range(r) => PortMatch::ranges(vec![(r.from, r.to)]),
        PortSpec::List(id) => PortMatch::ranges(
            state
                .port_lists
                .get(id)
                .map(|l| {
                    l.entries
                        .iter()
                        .map(|e| (e.range.from, e.range.to))
                        .collect()
                })
                .unwrap_or_default(),
        ),
    }
}

/// Resolves one rule of `group`.
pub fn resolve(state: &State, group: &GroupId, rule: &Rule) -> ResolvedRule {
    let s = &rule.spec;
    ResolvedRule {
        id: rule.id.clone(),
        group: group.clone(),
        direction: s.direction,
        action: s.action,
        priority: s.priority,
        protocol: s.protocol.number(),
        dst_ports: dst_port_match(state, s),
        src_ports: s
            .source_ports
            .map_or(PortMatch::Any, |r| PortMatch::ranges(vec![(r.from, r.to)])),
        peers: peer_cidrs(state, &s.peer),
        local: s.local,
    }
}

/// The rules of direction `direction` from all groups of NIC `nic`, resolved and
/// sorted in decision order (SPEC §3 step 5).
pub fn merged_rules(
    state: &State,
    nic: &str,
    direction: Direction,
) -> Result<Vec<ResolvedRule>, PolicyError> {
    let binding = state.nic(nic)?;
    let mut out = Vec::new();
    for gid in &binding.groups {
        let group = state.group(&format!("nics[{nic}].groups"), gid)?;
        out.extend(
            group
                .rules
                .iter()
                .filter(|r| r.spec.direction == direction)
                .map(|r| resolve(state, gid, r)),
        );
    }
    out.sort_by(|a, b| {
        decision_order((a.priority, a.action, &a.id), (b.priority, b.action, &b.id))
    });
    Ok(out)
}

/// What SPEC §3 step 6 decides for a NIC when no rule matched, in the shape the
/// compiler needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicDefaults {
    /// Ingress: a source in one of these groups' member addresses is accepted,
    /// reported as the first such group (NIC's group order); anything else drops.
    /// Only the NIC's basic groups whose intra-group policy is `Accept` appear.
    pub ingress_intra_group: Vec<(GroupId, Vec<Cidr>)>,
    /// Egress: `Accept` for basic groups, `Drop` for enterprise ones.
    pub egress: Action,
}

/// The defaults of NIC `nic` (SPEC §3 step 6).
pub fn nic_defaults(state: &State, nic: &str) -> Result<NicDefaults, PolicyError> {
    let binding = state.nic(nic)?;
    let mut ingress_intra_group = Vec::new();
    let mut enterprise = false;
    for gid in &binding.groups {
        let g = state.group(&format!("nics[{nic}].groups"), gid)?;
        enterprise |= g.kind == GroupType::Enterprise;
        if g.kind == GroupType::Basic && g.inner_policy == InnerPolicy::Accept {
            ingress_intra_group.push((gid.clone(), group_member_cidrs(state, gid)));
        }
    }
    Ok(NicDefaults {
        ingress_intra_group,
        egress: if enterprise {
            Action::Drop
        } else {
            Action::Accept
        },
    })
}

//! The health check (SPEC §5): redundant rules of one group.
//!
//! A rule R is redundant when another rule C of the same group and direction
//! matches every packet R matches and comes before R in decision order
//! (priority, `Drop` before `Accept`, rule id). Then R never decides anything on
//! any NIC: wherever R applies, C applies too and is tried first. This is the
//! seeds' "covered by a rule of equal or higher priority", made exact:
//! - an `Accept` rule covering a `Drop` rule of the same priority does not make
//!   it redundant (the `Drop` rule is tried first and decides);
//! - of two identical rules, only the later one (by id) is reported;
//! - R is reported with the first such C in decision order, which is never itself
//!   reported, so removing every reported rule at once is safe too.
//!
//! Prefix lists and port lists are compared by their current entries. A group
//! peer is covered only by a rule naming the same group (**decided**): its
//! members come and go, so no address set covers it for good.

use super::{
    addr::union_covers,
    error::PolicyError,
    ids::{GroupId, RuleId},
    merge::{PortMatch, ResolvedRule, decision_order, resolve},
    model::{Peer, State},
};

/// A redundant rule and the rule that covers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redundancy {
    pub rule: RuleId,
    pub covered_by: RuleId,
}

/// Lists the redundant rules of `group` in decision order.
pub fn health_check(state: &State, group: &GroupId) -> Result<Vec<Redundancy>, PolicyError> {
    let g = state.group("group", group)?;
    let mut rules: Vec<(ResolvedRule, &Peer)> = g
        .rules
        .iter()
        .map(|r| (resolve(state, group, r), &r.spec.peer))
        .collect();
    rules.sort_by(|(a, _), (b, _)| {
        decision_order((a.priority, a.action, &a.id), (b.priority, b.action, &b.id))
    });
    let mut out = Vec::new();
    for (i, (r, r_peer)) in rules.iter().enumerate() {
        if let Some((c, _)) = rules[..i]
            .iter()
            .find(|(c, c_peer)| covers(c, c_peer, r, r_peer))
        {
            out.push(Redundancy {
                rule: r.id.clone(),
                covered_by: c.id.clone(),
            });
        }
    }
    Ok(out)
}

/// Whether `c` matches every packet `r` matches.
fn covers(c: &ResolvedRule, c_peer: &Peer, r: &ResolvedRule, r_peer: &Peer) -> bool {
    let peers = match (c_peer, r_peer) {
        (Peer::Group(a), Peer::Group(b)) => a == b,
        (_, Peer::Group(_)) | (Peer::Group(_), _) => false,
        _ => union_covers(&c.peers, &r.peers),
    };
    c.direction == r.direction
        && (c.protocol.is_none() || c.protocol == r.protocol)
        && port_cover(c, r)
        && peers
        && match (c.local, r.local) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(cl), Some(rl)) => cl.contains_cidr(&rl),
        }
}

fn port_cover(c: &ResolvedRule, r: &ResolvedRule) -> bool {
    // A port-less rule (C's ports Any) covers whatever R's ports; a TCP/UDP rule
    // only covers rules of its own protocol (checked above), port sets compared.
    c.dst_ports.covers(&r.dst_ports)
        && (c.src_ports == PortMatch::Any || c.src_ports.covers(&r.src_ports))
}

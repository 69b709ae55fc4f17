//! Security group snapshots (SPEC §5, seed 000): when they are due, how one is
//! restored, and how long they are kept. Pure: the agent's store keeps them,
//! the daemon supplies the clock.
//!
//! A snapshot backs up one group's rules. One is taken after a rule change;
//! several changes within one 5-minute window make only one snapshot, holding the
//! rules in effect before the window's first change. Snapshots are kept
//! `settings.snapshot_retention_days` (1..=30) days. Restoring overwrites all the
//! group's rules at once and is itself a change, snapshotted like any other.

use serde::{Deserialize, Serialize};

use crate::{
    GroupId, PolicyError, Rule, State, validate::check_platform_addresses, validate_state,
};

/// The length of a snapshot window: 5 minutes.
pub const WINDOW_SECS: u64 = 300;

/// Seconds in a day, for the retention period.
pub const DAY_SECS: u64 = 86_400;

/// A backup of one security group's rules (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// 0 until stored; the store assigns it.
    pub id: u64,
    /// The group whose rules these are.
    pub group: GroupId,
    /// The group's name when the snapshot was taken.
    pub group_name: String,
    /// The start of the 5-minute window the snapshot belongs to (unix seconds).
    pub window_start: u64,
    /// When the snapshot was taken (unix seconds).
    pub taken_at: u64,
    /// The group's rules, in order, with their ids.
    pub rules: Vec<Rule>,
}

impl Snapshot {
    /// The snapshot without its rules, as listings show it.
    pub fn info(&self) -> SnapshotInfo {
        SnapshotInfo {
            id: self.id,
            group: self.group.clone(),
            group_name: self.group_name.clone(),
            window_start: self.window_start,
            taken_at: self.taken_at,
            rules: self.rules.len(),
        }
    }
}

/// A snapshot as listed: everything but the rules, which are counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub id: u64,
    pub group: GroupId,
    pub group_name: String,
    /// The start of the 5-minute window (unix seconds).
    pub window_start: u64,
    /// When the snapshot was taken (unix seconds).
    pub taken_at: u64,
    /// How many rules the snapshot holds.
    pub rules: usize,
}

/// The start of the window holding `now` (unix seconds): windows are aligned to
/// multiples of [`WINDOW_SECS`] since the epoch, so every host and every restart
/// agrees on them.
pub fn window_start(now: u64) -> u64 {
    now - now % WINDOW_SECS
}

/// The snapshots a change from `old` to `new` at `now` makes due: for each group
/// of `old` whose rules differ in `new` (changed, added, removed, reordered, or
/// the group deleted) and that has no snapshot for the current window yet
/// (`exists(group, window_start)`), a snapshot of its rules in `old`, i.e. the
/// rules in effect before the window's first change. Groups that `new` adds get
/// none: they had no rules before. Ordered by group id.
pub fn due<E>(
    old: &State,
    new: &State,
    now: u64,
    mut exists: impl FnMut(&GroupId, u64) -> Result<bool, E>,
) -> Result<Vec<Snapshot>, E> {
    let window = window_start(now);
    let mut out = Vec::new();
    // `groups` is a BTreeMap: iteration is by group id.
    for (id, group) in &old.groups {
        let changed = new.groups.get(id).is_none_or(|g| g.rules != group.rules);
        if !changed || exists(id, window)? {
            continue;
        }
        out.push(Snapshot {
            id: 0,
            group: id.clone(),
            group_name: group.name.clone(),
            window_start: window,
            taken_at: now,
            rules: group.rules.clone(),
        });
    }
    Ok(out)
}

/// Restores a snapshot: the group's rules become the snapshot's (same ids, same
/// order), and the result is validated as a whole.
///
/// Refused, leaving `state` as it was, when the group no longer exists, when it
/// is managed (read-only), or when the result fails validation: a rule names a
/// group, prefix list or port list that no longer exists, a limit would be
/// exceeded (a NIC's rule quota, group-peer rules), or a rule id is now taken.
pub fn restore(state: &mut State, snapshot: &Snapshot) -> Result<(), PolicyError> {
    let mut next = state.clone();
    let group = next
        .groups
        .get_mut(&snapshot.group)
        .ok_or_else(|| PolicyError::NotFound {
            field: "snapshot.group".to_owned(),
            kind: GroupId::KIND,
            id: snapshot.group.to_string(),
        })?;
    // The same refusal as every other change to a managed group (ops.rs).
    if group.managed {
        return Err(PolicyError::Managed {
            group: snapshot.group.to_string(),
            operation: "restore snapshot",
        });
    }
    std::sync::Arc::make_mut(group)
        .rules
        .clone_from(&snapshot.rules);
    // A snapshot holds rules this agent (or an older one) stored: their
    // descriptions are not new input, so not checked again as text
    // (`validate_change`); everything else of a change is.
    validate_state(&next)?;
    check_platform_addresses(&next.settings)?;
    *state = next;
    Ok(())
}

/// The time before which snapshots have outlived a retention of `days` days:
/// `now - days × 86,400`, or 0 when that would lie before the epoch.
pub fn retention_cutoff(now: u64, days: u32) -> u64 {
    now.saturating_sub(u64::from(days).saturating_mul(DAY_SECS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_aligned_to_five_minutes() {
        assert_eq!(window_start(0), 0);
        assert_eq!(window_start(299), 0);
        assert_eq!(window_start(300), 300);
        assert_eq!(window_start(1_700_000_123), 1_700_000_100);
        assert_eq!(window_start(u64::MAX) % WINDOW_SECS, 0);
    }

    #[test]
    fn cutoff_saturates_before_the_epoch() {
        assert_eq!(retention_cutoff(100, 1), 0);
        assert_eq!(retention_cutoff(3 * DAY_SECS + 5, 2), DAY_SECS + 5);
        assert_eq!(retention_cutoff(u64::MAX, 30), u64::MAX - 30 * DAY_SECS);
    }
}

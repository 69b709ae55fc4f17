//! Applies that would leave a host with nothing: refused unless asked for.
//!
//! An apply whose result binds no NIC while the current state binds one, or
//! holds no group while the current state holds one, is a [`Sweep`]: the
//! daemon shows its `!` lines ([`Sweep::lines`]) at the top of the diff and
//! refuses it ([`check_sweep`]) unless the request says `allow_delete_all`.

use std::fmt::Write as _;

use crate::{error::PolicyError, model::State};

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

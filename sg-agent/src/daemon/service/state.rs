//! Requests on the state as a whole: settings, declarative apply, snapshots.

use std::time::Instant;

use crate::api::{Request, StateRequest};
use sg_policy::snapshot;

use super::input::{cidrs, group_id};
use super::{Answer, Service, err, to_value, unavailable};
use crate::api::reply;
use crate::api::{ApiError, ErrorKind, SnapshotRequest};

impl Service {
    pub(super) fn state_request(&mut self, request: StateRequest) -> Answer {
        match request {
            r @ (StateRequest::SettingsShow | StateRequest::Export) => {
                self.read(&Request::State(r))
            }
            StateRequest::SettingsSet {
                block_port_25,
                platform_addresses,
                snapshot_retention_days,
                tcp_handshake_secs,
                tcp_established_secs,
                tcp_closing_secs,
                other_secs,
                fragment_timeout_secs,
            } => {
                let mut s = self.state.settings.clone();
                if let Some(b) = block_port_25 {
                    s.block_port_25 = b;
                }
                if let Some(p) = platform_addresses {
                    s.platform_addresses = cidrs("settings.platform_addresses", &p).map_err(err)?;
                }
                if let Some(d) = snapshot_retention_days {
                    s.snapshot_retention_days = d;
                }
                if let Some(f) = fragment_timeout_secs {
                    s.fragment_timeout_secs = f;
                }
                let t = &mut s.session_timeouts;
                for (v, slot) in [
                    (tcp_handshake_secs, &mut t.tcp_handshake_secs),
                    (tcp_established_secs, &mut t.tcp_established_secs),
                    (tcp_closing_secs, &mut t.tcp_closing_secs),
                    (other_secs, &mut t.other_secs),
                ] {
                    if let Some(v) = v {
                        *slot = v;
                    }
                }
                self.change(|st| st.set_settings(s.clone()))?;
                Ok(to_value(&self.state.settings))
            }
            StateRequest::Apply {
                document,
                dry_run,
                allow_delete_all,
            } => {
                let started = Instant::now();
                let doc = sg_policy::apply::parse(&document).map_err(err)?;
                let parsed = started.elapsed();
                let next = sg_policy::apply::desired(&self.state, &doc).map_err(err)?;
                let built = started.elapsed();
                let diff = sg_policy::apply::diff(&self.state, &next);
                // A sweep (every NIC unbound, every group deleted) heads the
                // diff, dry run or not, and is refused without the flag.
                let sweep = sg_policy::apply::Sweep::of(&self.state, &next);
                let warnings = sweep
                    .as_ref()
                    .map(sg_policy::apply::Sweep::lines)
                    .unwrap_or_default();
                let changes: Vec<String> = warnings
                    .iter()
                    .cloned()
                    .chain(diff.iter().map(ToString::to_string))
                    .collect();
                log::debug!(
                    "apply: parsed {parsed:?}, desired state {built:?}, diff {:?}",
                    started.elapsed()
                );
                if !dry_run {
                    sg_policy::apply::check_sweep(&self.state, &next, allow_delete_all)
                        .map_err(err)?;
                    if let Some(s) = &sweep {
                        log::warn!("apply with allow_delete_all: {}", s.lines().join("; "));
                    }
                    self.commit(next)?;
                }
                Ok(to_value(&reply::Applied {
                    applied: !dry_run && !diff.is_empty(),
                    changes,
                    warnings,
                }))
            }
        }
    }

    pub(super) fn snapshot_request(&mut self, request: SnapshotRequest) -> Answer {
        match request {
            SnapshotRequest::List { group } => {
                let gid = group
                    .as_deref()
                    .map(|g| group_id("group", g))
                    .transpose()
                    .map_err(err)?;
                Ok(to_value(
                    &self.store.snapshots(gid.as_ref()).map_err(unavailable)?,
                ))
            }
            SnapshotRequest::Show { id } => match self.store.snapshot(id).map_err(unavailable)? {
                Some(s) => Ok(to_value(&s)),
                None => Err(snapshot_absent(id)),
            },
            SnapshotRequest::Restore { id } => {
                let snap = self
                    .store
                    .snapshot(id)
                    .map_err(unavailable)?
                    .ok_or_else(|| snapshot_absent(id))?;
                self.change(|s| snapshot::restore(s, &snap))?;
                Ok(to_value(&reply::Restored {
                    group: snap.group.to_string(),
                    rules: snap.rules.len() as u64,
                }))
            }
        }
    }
}

fn snapshot_absent(id: u64) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        Some("id"),
        format!("snapshot: {id} does not exist"),
    )
}

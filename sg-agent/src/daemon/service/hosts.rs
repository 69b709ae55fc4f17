//! The handlers of the fleet's hosts: listing them, and removing one that
//! is gone for good.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Answer, Service, to_value};
use crate::api::{ApiError, ErrorKind, HostRequest, reply};

impl Service {
    pub(super) fn host_request(&mut self, request: HostRequest) -> Answer {
        match request {
            HostRequest::List => Ok(self.host_list()),
            HostRequest::Remove { host, force } => self.host_remove(&host, force),
        }
    }

    /// This host, every host with bindings, every live host.
    fn host_list(&self) -> Value {
        let health = self.store.health();
        let live: BTreeMap<String, crate::store::HostStatus> = self
            .store
            .hosts()
            .into_iter()
            .map(|h| (h.host.clone(), h))
            .collect();
        let mut nics: BTreeMap<String, usize> = self
            .state
            .remote
            .iter()
            .map(|(h, n)| (h.clone(), n.len()))
            .collect();
        for (h, n) in self.state.census.hosts() {
            *nics.entry(h.to_owned()).or_default() += n;
        }
        if let Some(me) = &health.host {
            nics.insert(me.clone(), self.state.nics.len());
        }
        let mut names: Vec<&String> = nics.keys().chain(live.keys()).collect();
        names.sort();
        names.dedup();
        Value::Array(
            names
                .into_iter()
                .map(|h| {
                    let status = live.get(h);
                    to_value(&reply::HostRow {
                        host: h.clone(),
                        this: health.host.as_ref() == Some(h),
                        live: status.is_some(),
                        nics: nics.get(h).copied().unwrap_or(0) as u64,
                        revision: status.map(|s| s.revision),
                        behind: status.map(|s| (health.revision - s.revision).max(0)),
                    })
                })
                .collect(),
        )
    }

    fn host_remove(&mut self, host: &str, force: bool) -> Answer {
        let health = self.store.health();
        let Some(me) = health.host else {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                Some("host"),
                "host: this agent's store is not a fleet's: it has no other hosts",
            ));
        };
        if host == me {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                Some("host"),
                format!("host: {host} is this host: unbind its NICs here (nic unbind) instead"),
            ));
        }
        if let Some(s) = self.store.hosts().iter().find(|s| s.host == host)
            && !force
        {
            return Err(ApiError::new(
                ErrorKind::InUse,
                Some("host"),
                format!(
                    "host: {host} is live (its agent has revision {} in force): stop its agent first, or give --force",
                    s.revision
                ),
            ));
        }
        let removed = self.change(|s| {
            let whole = s.remote.remove(host).map_or(0, |n| n.len());
            let counted = if s.census.hosts().any(|(h, _)| h == host) {
                std::sync::Arc::make_mut(&mut s.census).remove_host(host)
            } else {
                0
            };
            Ok(whole + counted)
        })?;
        if removed == 0 {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                Some("host"),
                format!("host: {host} binds no NIC in the fleet"),
            ));
        }
        Ok(to_value(&crate::api::reply::HostRemoved {
            host: host.to_owned(),
            unbound: removed as u64,
        }))
    }
}

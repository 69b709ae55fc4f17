//! Requests that bind NICs and change their groups and addresses; a NIC's data-plane view.

use std::collections::BTreeMap;

use crate::api::{NicRequest, Request};
use sg_policy::{BindingMode, NicBinding};

use super::input::{addresses, cidrs, group_id, group_ids};
use super::{Answer, Service, err, to_value};
use crate::api::reply;

impl Service {
    pub(super) fn nic_request(&mut self, request: NicRequest) -> Answer {
        match request {
            r @ (NicRequest::List | NicRequest::Show { .. }) => self.read(&Request::Nic(r)),
            NicRequest::Bind {
                name,
                mode,
                addresses: addrs,
                extra_allowed,
                anti_spoof,
                groups,
            } => {
                let binding = NicBinding {
                    name: name.clone(),
                    mode: BindingMode::parse("nic.mode", &mode).map_err(err)?,
                    addresses: addresses("nic.addresses", &addrs).map_err(err)?,
                    extra_allowed: cidrs("nic.extra_allowed", &extra_allowed).map_err(err)?,
                    anti_spoof,
                    groups: group_ids("nic.groups", &groups).map_err(err)?,
                };
                self.change(|s| s.bind_nic(binding.clone()))?;
                Ok(to_value(&reply::NicChanged { nic: name }))
            }
            NicRequest::Unbind { name } => {
                self.change(|s| s.unbind_nic(&name))?;
                Ok(to_value(&reply::NicChanged { nic: name }))
            }
            NicRequest::Join { name, group } => {
                let gid = group_id("group", &group).map_err(err)?;
                self.change(|s| s.join(&name, &gid))?;
                Ok(to_value(&reply::NicChanged { nic: name }))
            }
            NicRequest::Leave { name, group } => {
                let gid = group_id("group", &group).map_err(err)?;
                self.change(|s| s.leave(&name, &gid))?;
                Ok(to_value(&reply::NicChanged { nic: name }))
            }
            NicRequest::SetGroups { name, groups } => {
                let gids = group_ids("nic.groups", &groups).map_err(err)?;
                self.change(|s| s.set_nic_groups(&name, gids.clone()))?;
                Ok(to_value(&reply::NicChanged { nic: name }))
            }
            NicRequest::SetAddresses {
                name,
                addresses: addrs,
                extra_allowed,
            } => {
                let a = addresses("nic.addresses", &addrs).map_err(err)?;
                let e = cidrs("nic.extra_allowed", &extra_allowed).map_err(err)?;
                self.change(|s| s.set_nic_addresses(&name, a.clone(), e.clone()))?;
                Ok(to_value(&reply::NicChanged { nic: name }))
            }
        }
    }

    /// NIC id → name, for the data plane's views.
    pub(super) fn nic_names(&mut self) -> BTreeMap<u32, String> {
        let names: Vec<String> = self.state.nics.keys().cloned().collect();
        let dp = self.reconciler.dataplane();
        names
            .into_iter()
            .filter_map(|n| dp.nic_id(&n).map(|id| (id, n)))
            .collect()
    }

    /// NIC `name` as the data plane holds it, if it is bound.
    pub(super) fn nic_shown(&mut self, name: &str) -> Option<reply::NicShown> {
        let binding = self.state.nics.get(name).cloned()?;
        let ifindex = crate::iface::index(name);
        let degraded = self.reconciler.degraded().get(name).cloned();
        let dp = self.reconciler.dataplane();
        Some(reply::NicShown {
            binding,
            ifindex,
            attached: dp.is_attached(name),
            version: dp.version(name).map(u64::from),
            closed: dp.is_closed(name),
            degraded,
        })
    }
}

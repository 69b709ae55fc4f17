//! Requests that bind NICs and change their groups and addresses; a NIC's data-plane view.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::api::Request;
use sg_policy::{BindingMode, NicBinding};

use super::input::{addresses, cidrs, group_id, group_ids};
use super::{Answer, Service, err};

impl Service {
    pub(super) fn nic_request(&mut self, request: Request) -> Answer {
        match request {
            Request::NicBind {
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
                Ok(json!({ "nic": name }))
            }
            Request::NicUnbind { name } => {
                self.change(|s| s.unbind_nic(&name))?;
                Ok(json!({ "nic": name }))
            }
            Request::NicJoin { name, group } => {
                let gid = group_id("group", &group).map_err(err)?;
                self.change(|s| s.join(&name, &gid))?;
                Ok(json!({ "nic": name }))
            }
            Request::NicLeave { name, group } => {
                let gid = group_id("group", &group).map_err(err)?;
                self.change(|s| s.leave(&name, &gid))?;
                Ok(json!({ "nic": name }))
            }
            Request::NicSetGroups { name, groups } => {
                let gids = group_ids("nic.groups", &groups).map_err(err)?;
                self.change(|s| s.set_nic_groups(&name, gids.clone()))?;
                Ok(json!({ "nic": name }))
            }
            Request::NicSetAddresses {
                name,
                addresses: addrs,
                extra_allowed,
            } => {
                let a = addresses("nic.addresses", &addrs).map_err(err)?;
                let e = cidrs("nic.extra_allowed", &extra_allowed).map_err(err)?;
                self.change(|s| s.set_nic_addresses(&name, a.clone(), e.clone()))?;
                Ok(json!({ "nic": name }))
            }
            _ => unreachable!("handle dispatches only these here"),
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

    pub(super) fn nic_view(&mut self, name: &str) -> Value {
        let binding = self.state.nics.get(name).cloned();
        let ifindex = crate::iface::index(name);
        let degraded = self.reconciler.degraded().get(name).cloned();
        let dp = self.reconciler.dataplane();
        json!({
            "binding": binding,
            "ifindex": ifindex,
            "attached": dp.is_attached(name),
            "version": dp.version(name),
            "closed": dp.is_closed(name),
            "degraded": degraded,
        })
    }
}

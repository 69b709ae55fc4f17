//! Requests that change prefix lists and port lists.

use crate::api::{PortListRequest, PrefixListRequest, Request};
use sg_policy::{
    self, Family, PolicyError, PortListId, PortListSpec, PrefixListId, PrefixListSpec,
};

use super::input::{port_entries, prefix_entries};
use super::{Answer, Service, err, to_value};
use crate::api::reply;

impl Service {
    pub(super) fn prefix_list_request(&mut self, request: PrefixListRequest) -> Answer {
        match request {
            r @ (PrefixListRequest::List | PrefixListRequest::Show { .. }) => {
                self.read(&Request::PrefixList(r))
            }
            PrefixListRequest::Create {
                name,
                description,
                family: fam,
                max_entries,
                entries,
            } => {
                let spec = PrefixListSpec {
                    name,
                    description,
                    family: Family::parse("prefix_list.family", &fam).map_err(err)?,
                    max_entries,
                    entries: prefix_entries(&entries).map_err(err)?,
                };
                let id = self.change(|s| s.create_prefix_list(spec.clone()))?;
                Ok(to_value(&reply::Changed { id: id.to_string() }))
            }
            PrefixListRequest::Modify {
                id,
                name,
                description,
                max_entries,
                entries,
            } => {
                let pid = PrefixListId::parse("prefix_list", &id).map_err(err)?;
                let cur = self.state.prefix_lists.get(&pid).ok_or_else(|| {
                    err(PolicyError::not_found(
                        "prefix_list",
                        PrefixListId::KIND,
                        &pid,
                    ))
                })?;
                let spec = PrefixListSpec {
                    name: name.unwrap_or_else(|| cur.name.clone()),
                    description: description.unwrap_or_else(|| cur.description.clone()),
                    family: cur.family,
                    max_entries: max_entries.unwrap_or(cur.max_entries),
                    entries: match entries {
                        Some(e) => prefix_entries(&e).map_err(err)?,
                        None => cur.entries.clone(),
                    },
                };
                self.change(|s| s.modify_prefix_list(&pid, spec.clone()))?;
                Ok(to_value(&reply::Changed {
                    id: pid.to_string(),
                }))
            }
            PrefixListRequest::Delete { id } => {
                let pid = PrefixListId::parse("prefix_list", &id).map_err(err)?;
                self.change(|s| s.delete_prefix_list(&pid))?;
                Ok(to_value(&reply::Deleted {
                    deleted: pid.to_string(),
                }))
            }
        }
    }

    pub(super) fn port_list_request(&mut self, request: PortListRequest) -> Answer {
        match request {
            r @ (PortListRequest::List | PortListRequest::Show { .. }) => {
                self.read(&Request::PortList(r))
            }
            PortListRequest::Create {
                name,
                description,
                max_entries,
                entries,
            } => {
                let spec = PortListSpec {
                    name,
                    description,
                    max_entries,
                    entries: port_entries(&entries).map_err(err)?,
                };
                let id = self.change(|s| s.create_port_list(spec.clone()))?;
                Ok(to_value(&reply::Changed { id: id.to_string() }))
            }
            PortListRequest::Modify {
                id,
                name,
                description,
                max_entries,
                entries,
            } => {
                let pid = PortListId::parse("port_list", &id).map_err(err)?;
                let cur = self.state.port_lists.get(&pid).ok_or_else(|| {
                    err(PolicyError::not_found("port_list", PortListId::KIND, &pid))
                })?;
                let spec = PortListSpec {
                    name: name.unwrap_or_else(|| cur.name.clone()),
                    description: description.unwrap_or_else(|| cur.description.clone()),
                    max_entries: max_entries.unwrap_or(cur.max_entries),
                    entries: match entries {
                        Some(e) => port_entries(&e).map_err(err)?,
                        None => cur.entries.clone(),
                    },
                };
                self.change(|s| s.modify_port_list(&pid, spec.clone()))?;
                Ok(to_value(&reply::Changed {
                    id: pid.to_string(),
                }))
            }
            PortListRequest::Delete { id } => {
                let pid = PortListId::parse("port_list", &id).map_err(err)?;
                self.change(|s| s.delete_port_list(&pid))?;
                Ok(to_value(&reply::Deleted {
                    deleted: pid.to_string(),
                }))
            }
        }
    }
}

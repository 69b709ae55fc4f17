//! Requests that change security groups: create (also from a template or a clone), modify, inner policy, delete.

use crate::api::{GroupCreate, GroupRequest, Request};
use sg_policy::{
    self, CloneOptions, GroupChange, GroupSpec, GroupType, InnerPolicy, PolicyError, Template,
};

use super::input::group_id;
use super::{Answer, Service, err, to_value};
use crate::api::reply;

impl Service {
    pub(super) fn group_request(&mut self, request: GroupRequest) -> Answer {
        match request {
            r @ (GroupRequest::List | GroupRequest::Show { .. } | GroupRequest::Health { .. }) => {
                self.read(&Request::Group(r))
            }
            GroupRequest::Create(c) => self.create_group(c),
            GroupRequest::Modify {
                id,
                name,
                description,
                deletion_protection,
                tags,
            } => {
                let gid = group_id("group", &id).map_err(err)?;
                let change = GroupChange {
                    name,
                    description,
                    deletion_protection,
                    tags,
                };
                self.change(|s| s.modify_group(&gid, change.clone()))?;
                Ok(to_value(&reply::Changed {
                    id: gid.to_string(),
                }))
            }
            GroupRequest::SetInnerPolicy { id, policy } => {
                let gid = group_id("group", &id).map_err(err)?;
                let p = InnerPolicy::parse("group.inner_policy", &policy).map_err(err)?;
                self.change(|s| s.set_inner_policy(&gid, p))?;
                Ok(to_value(&reply::Changed {
                    id: gid.to_string(),
                }))
            }
            GroupRequest::Delete { id } => {
                let gid = group_id("group", &id).map_err(err)?;
                self.change(|s| s.delete_group(&gid))?;
                Ok(to_value(&reply::Deleted {
                    deleted: gid.to_string(),
                }))
            }
            GroupRequest::Clone {
                id,
                name,
                keep_rules,
                copy_tags,
            } => {
                let gid = group_id("group", &id).map_err(err)?;
                let options = CloneOptions {
                    name,
                    keep_rules,
                    copy_tags,
                };
                let new = self.change(|s| s.clone_group(&gid, &options))?;
                Ok(to_value(&reply::Changed {
                    id: new.to_string(),
                }))
            }
        }
    }

    pub(super) fn create_group(&mut self, request: GroupCreate) -> Answer {
        let GroupCreate {
            name,
            description,
            kind,
            inner_policy: inner,
            deletion_protection,
            tags,
            template,
        } = request;
        let id = if let Some(t) = template {
            let t = Template::by_name(&t).ok_or_else(|| {
                err(PolicyError::invalid(
                    "group.template",
                    &t,
                    "must be one of default, Sys-WebServer, Sys-FullAccess",
                ))
            })?;
            self.change(|s| s.create_from_template(t, Some(&name)))?
        } else {
            let spec = GroupSpec {
                name,
                description,
                kind: kind
                    .as_deref()
                    .map(|t| GroupType::parse("group.type", t))
                    .transpose()
                    .map_err(err)?
                    .unwrap_or(GroupType::Basic),
                inner_policy: inner
                    .as_deref()
                    .map(|t| InnerPolicy::parse("group.inner_policy", t))
                    .transpose()
                    .map_err(err)?,
                deletion_protection,
                managed: false,
                tags,
            };
            self.change(|s| s.create_group(spec.clone()))?
        };
        Ok(to_value(&reply::Changed { id: id.to_string() }))
    }
}

//! Requests that change a group's rules: authorize, revoke, modify, import.

use crate::api::{Request, RuleRequest};
use sg_policy::{PolicyError, RuleId};

use super::input::{group_id, rule_spec};
use super::{Answer, Service, err, to_value, within};
use crate::api::reply;

impl Service {
    pub(super) fn rule_request(&mut self, request: RuleRequest) -> Answer {
        match request {
            r @ (RuleRequest::List { .. } | RuleRequest::Export { .. }) => {
                self.read(&Request::Rule(r))
            }
            RuleRequest::Authorize { group, rules } => {
                let gid = group_id("group", &group).map_err(err)?;
                let specs = rules
                    .iter()
                    .enumerate()
                    .map(|(i, r)| rule_spec(r).map_err(|e| within(&format!("rules[{i}]"), e)))
                    .collect::<Result<Vec<_>, _>>()?;
                let ids = self.change(|s| s.authorize_all(&gid, specs.clone()))?;
                Ok(to_value(&reply::RuleIds {
                    ids: ids.iter().map(ToString::to_string).collect(),
                }))
            }
            RuleRequest::Revoke { group, rules } => {
                let gid = group_id("group", &group).map_err(err)?;
                let ids = rules
                    .iter()
                    .enumerate()
                    .map(|(i, r)| RuleId::parse(&format!("rules[{i}]"), r))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err)?;
                self.change(|s| s.revoke_all(&gid, &ids).map(drop))?;
                Ok(to_value(&reply::Revoked {
                    revoked: ids.iter().map(ToString::to_string).collect(),
                }))
            }
            RuleRequest::Modify { group, rule, spec } => {
                let gid = group_id("group", &group).map_err(err)?;
                let rid = RuleId::parse("rule", &rule).map_err(err)?;
                let spec = rule_spec(&spec).map_err(err)?;
                self.change(|s| s.modify_rule(&gid, &rid, spec.clone()))?;
                Ok(to_value(&reply::Changed {
                    id: rid.to_string(),
                }))
            }
            RuleRequest::Import {
                group,
                format,
                text,
            } => {
                let gid = group_id("group", &group).map_err(err)?;
                let csv = match format.to_ascii_lowercase().as_str() {
                    "json" => false,
                    "csv" => true,
                    _ => {
                        return Err(err(PolicyError::invalid(
                            "format",
                            &format,
                            "must be json or csv",
                        )));
                    }
                };
                let report = self.change(|s| {
                    if csv {
                        sg_policy::import_csv(s, &gid, &text)
                    } else {
                        sg_policy::import_json(s, &gid, &text)
                    }
                })?;
                Ok(to_value(&reply::Imported {
                    imported: report.imported.iter().map(|r| r.id.to_string()).collect(),
                    skipped: report
                        .skipped
                        .iter()
                        .map(|s| reply::Skipped {
                            index: s.index as u64,
                            rule_id: s.rule_id.clone(),
                            reason: s.reason.to_string(),
                        })
                        .collect(),
                }))
            }
        }
    }
}

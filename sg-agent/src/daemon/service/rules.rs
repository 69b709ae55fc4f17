//! Requests that change a group's rules: authorize, revoke, modify, import.

use serde_json::{Value, json};

use crate::api::{Request, RuleRequest};
use sg_policy::{PolicyError, RuleId};

use super::input::{group_id, rule_spec};
use super::{Answer, Service, err, within};

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
                Ok(json!({ "ids": ids }))
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
                Ok(json!({ "revoked": ids }))
            }
            RuleRequest::Modify { group, rule, spec } => {
                let gid = group_id("group", &group).map_err(err)?;
                let rid = RuleId::parse("rule", &rule).map_err(err)?;
                let spec = rule_spec(&spec).map_err(err)?;
                self.change(|s| s.modify_rule(&gid, &rid, spec.clone()))?;
                Ok(json!({ "id": rid }))
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
                let imported: Vec<&RuleId> = report.imported.iter().map(|r| &r.id).collect();
                let skipped: Vec<Value> = report
                    .skipped
                    .iter()
                    .map(|s| json!({ "index": s.index, "rule_id": s.rule_id, "reason": s.reason.to_string() }))
                    .collect();
                Ok(json!({ "imported": imported, "skipped": skipped }))
            }
        }
    }
}

//! JSON import and export (SPEC §5): `{"SecurityGroupId": …, "Permissions": [ … ]}`,
//! file name `ecs_${region}_${groupId}.json`.

use serde_json::{Map, Value};

use super::{
    error::PolicyError,
    ids::GroupId,
    model::State,
    rule_record::{
        FIELDS, ImportReport, RULE_FIELDS, RuleRecord, check_extra_field, check_region,
        export_records, import_records,
    },
};

/// The export file name: `ecs_${region}_${groupId}.json`.
pub fn json_file_name(region: &str, group: &GroupId) -> Result<String, PolicyError> {
    check_region(region)?;
    Ok(format!("ecs_{region}_{group}.json"))
}

/// Exports a group's rules as a JSON document (every field present, "" when absent).
pub fn export_json(state: &State, group: &GroupId) -> Result<String, PolicyError> {
    let permissions: Vec<Value> = export_records(state, group)?
        .iter()
        .map(|r| {
            let mut m = Map::new();
            for (name, value) in FIELDS[..RULE_FIELDS].iter().zip(r.values()) {
                if *name == "Priority" {
                    m.insert(
                        (*name).to_owned(),
                        Value::from(value.parse::<u64>().unwrap_or(0)),
                    );
                } else {
                    m.insert((*name).to_owned(), Value::from(value.as_str()));
                }
            }
            Value::Object(m)
        })
        .collect();
    let mut doc = Map::new();
    doc.insert("SecurityGroupId".to_owned(), Value::from(group.as_str()));
    doc.insert("Permissions".to_owned(), Value::Array(permissions));
    serde_json::to_string_pretty(&Value::Object(doc)).map_err(|e| PolicyError::Document {
        format: "JSON",
        reason: e.to_string(),
    })
}

/// Imports a JSON document into `group`: an object with `Permissions` (and
/// optionally `SecurityGroupId`, which every rule inherits), or a bare array of
/// rules. Each rule is imported or skipped on its own; see [`ImportReport`].
pub fn import_json(
    state: &mut State,
    group: &GroupId,
    text: &str,
) -> Result<ImportReport, PolicyError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| PolicyError::Document {
        format: "JSON",
        reason: e.to_string(),
    })?;
    let (source_group, permissions) = match doc {
        Value::Array(v) => (String::new(), v),
        Value::Object(mut m) => {
            if let Some(key) = m
                .keys()
                .find(|k| !matches!(k.as_str(), "SecurityGroupId" | "Permissions"))
            {
                return Err(PolicyError::Document {
                    format: "JSON",
                    reason: format!(
                        "unknown field {key:?}: a document holds \"SecurityGroupId\" and \"Permissions\""
                    ),
                });
            }
            let source = match m.get("SecurityGroupId") {
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            };
            match m.remove("Permissions") {
                Some(Value::Array(v)) => (source, v),
                _ => {
                    return Err(PolicyError::Document {
                        format: "JSON",
                        reason: "expected a \"Permissions\" array".to_owned(),
                    });
                }
            }
        }
        _ => {
            return Err(PolicyError::Document {
                format: "JSON",
                reason: "expected an object with \"Permissions\" or an array of rules".to_owned(),
            });
        }
    };
    let records = permissions
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let prefix = format!("Permissions[{i}]");
            let record = to_record(&prefix, &source_group, v);
            (prefix, record)
        })
        .collect();
    import_records(state, group, records, "Permissions")
}

fn to_record(prefix: &str, source_group: &str, value: Value) -> Result<RuleRecord, PolicyError> {
    let Value::Object(m) = value else {
        return Err(PolicyError::invalid(
            prefix,
            value,
            "a rule is a JSON object",
        ));
    };
    let mut r = RuleRecord::default();
    r.set("SecurityGroupId", source_group.to_owned());
    for (name, value) in &m {
        let text = match value {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(PolicyError::invalid(
                    format!("{prefix}.{name}"),
                    other,
                    "expected a string or a number",
                ));
            }
        };
        if FIELDS[..RULE_FIELDS].contains(&name.as_str()) {
            if !text.is_empty() {
                r.set(name, text);
            }
        } else {
            check_extra_field(prefix, name, &text)?;
        }
    }
    Ok(r)
}

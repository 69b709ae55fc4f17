//! CSV import and export (SPEC §5): a header row of the documents' field names,
//! one rule per row; file name `ecs_sgRule_${groupId}_${region}_${date}.csv`.

use super::{
    error::PolicyError,
    ids::GroupId,
    model::State,
    rule_record::{
        EXTRA_FIELDS, FIELDS, ImportReport, RULE_FIELDS, RuleRecord, check_extra_field,
        check_region, export_records, import_records, unknown_field,
    },
};

/// The export file name: `ecs_sgRule_${groupId}_${region}_${date}.csv`, with
/// `date` written `YYYY-MM-DD`.
pub fn csv_file_name(group: &GroupId, region: &str, date: &str) -> Result<String, PolicyError> {
    check_region(region)?;
    let b = date.as_bytes();
    let shape = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    let month = date
        .get(5..7)
        .and_then(|m| m.parse::<u8>().ok())
        .unwrap_or(0);
    let day = date
        .get(8..10)
        .and_then(|d| d.parse::<u8>().ok())
        .unwrap_or(0);
    if !shape || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(PolicyError::invalid("date", date, "expected YYYY-MM-DD"));
    }
    Ok(format!("ecs_sgRule_{group}_{region}_{date}.csv"))
}

fn csv_error(e: &csv::Error) -> PolicyError {
    PolicyError::Document {
        format: "CSV",
        reason: e.to_string(),
    }
}

/// Exports a group's rules as CSV: header, then one row per rule.
pub fn export_csv(state: &State, group: &GroupId) -> Result<String, PolicyError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&FIELDS[..RULE_FIELDS])
        .map_err(|e| csv_error(&e))?;
    for r in export_records(state, group)? {
        w.write_record(r.values()).map_err(|e| csv_error(&e))?;
    }
    let bytes = w.into_inner().map_err(|e| PolicyError::Document {
        format: "CSV",
        reason: e.to_string(),
    })?;
    String::from_utf8(bytes).map_err(|e| PolicyError::Document {
        format: "CSV",
        reason: e.to_string(),
    })
}

/// Imports CSV into `group`. Columns are found by header name, in any order;
/// an unknown column refuses the document. Each row is imported or skipped
/// on its own.
pub fn import_csv(
    state: &mut State,
    group: &GroupId,
    text: &str,
) -> Result<ImportReport, PolicyError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(&e))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_owned())
        .collect();
    if !headers.iter().any(|h| h == "Direction") {
        return Err(PolicyError::Document {
            format: "CSV",
            reason: format!(
                "the header row has no Direction column (expected the fields {})",
                FIELDS[..RULE_FIELDS].join(",")
            ),
        });
    }
    // A column that is none of the fields would be read as absent: refuse
    // the document, naming it (see `record.rs`). A column given twice
    // would leave one of its values unread.
    for (i, h) in headers.iter().enumerate() {
        let known =
            FIELDS[..RULE_FIELDS].contains(&h.as_str()) || EXTRA_FIELDS.contains(&h.as_str());
        if !known {
            return Err(PolicyError::Document {
                format: "CSV",
                reason: unknown_field("the header row", h).to_string(),
            });
        }
        if headers[..i].contains(h) {
            return Err(PolicyError::Document {
                format: "CSV",
                reason: format!("the header row has the column {h:?} twice"),
            });
        }
    }
    let records = reader
        .records()
        .enumerate()
        .map(|(i, row)| {
            let prefix = format!("rows[{i}]");
            let record = row
                .map_err(|e| PolicyError::invalid(prefix.clone(), "", e.to_string()))
                .and_then(|row| {
                    let mut r = RuleRecord::default();
                    for (name, value) in headers.iter().zip(row.iter()) {
                        if FIELDS[..RULE_FIELDS].contains(&name.as_str()) {
                            r.set(name, value.to_owned());
                        } else {
                            check_extra_field(&prefix, name, value)?;
                        }
                    }
                    Ok(r)
                });
            (prefix, record)
        })
        .collect();
    import_records(state, group, records, "rows")
}

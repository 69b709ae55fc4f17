//! The requests' JSON schemas (schemars, from the types): each op's
//! fields, for typing path and query values and for the OpenAPI document.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::{ApiError, Request};

/// Where the schemas of the types a request names live in the document.
pub const COMPONENTS: &str = "/components/schemas";

/// The schemas of every request type and of [`ApiError`], as the
/// document's `components/schemas`.
pub fn components() -> Map<String, Value> {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = COMPONENTS.into();
            s.meta_schema = None;
        })
        .for_deserialize()
        .into_generator();
    let mut defs = Map::new();
    let request = generator.subschema_for::<Request>().to_value();
    let error = generator.subschema_for::<ApiError>().to_value();
    let replies = super::reply::schemas(&mut generator);
    defs.extend(generator.take_definitions(true));
    let named = [("Request", request), ("ApiError", error)]
        .into_iter()
        .chain(replies);
    for (name, schema) in named {
        if !defs.contains_key(name) {
            defs.insert(name.to_owned(), schema);
        }
    }
    defs
}

/// `schema` with a top-level `$ref` and `allOf` folded in: the properties
/// and required fields of everything it is made of.
fn resolve(schema: &Value, defs: &Map<String, Value>) -> Value {
    let mut properties = Map::new();
    let mut required: Vec<Value> = Vec::new();
    let mut parts = vec![schema.clone()];
    while let Some(part) = parts.pop() {
        if let Some(name) = part
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix(&format!("#{COMPONENTS}/")))
            && let Some(def) = defs.get(name)
        {
            parts.push(def.clone());
        }
        if let Some(all) = part.get("allOf").and_then(Value::as_array) {
            parts.extend(all.iter().cloned());
        }
        if let Some(p) = part.get("properties").and_then(Value::as_object) {
            for (k, v) in p {
                properties.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        if let Some(r) = part.get("required").and_then(Value::as_array) {
            required.extend(
                r.iter()
                    .filter(|x| !required.contains(x))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
        }
    }
    let mut out = Map::new();
    if let Some(d) = schema.get("description") {
        out.insert("description".into(), d.clone());
    }
    out.insert("type".into(), json!("object"));
    out.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        out.insert("required".into(), Value::Array(required));
    }
    Value::Object(out)
}

/// The `op` a variant's schema is tagged with.
fn tag(schema: &Value) -> Option<String> {
    let op = schema.get("properties")?.get("op")?;
    op.get("const")
        .or_else(|| op.get("enum").and_then(|e| e.get(0)))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Every op and the schema of its fields (the `op` itself left out), in
/// the order the families declare them.
pub fn op_schemas() -> Vec<(String, Value)> {
    let defs = components();
    let mut out = Vec::new();
    let families = defs
        .get("Request")
        .and_then(|r| r.get("anyOf"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for family in families {
        let family = resolve_ref(&family, &defs);
        for variant in family
            .get("oneOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mut schema = resolve(variant, &defs);
            let Some(op) = tag(&schema) else { continue };
            if let Some(p) = schema.get_mut("properties").and_then(Value::as_object_mut) {
                p.remove("op");
            }
            if let Some(r) = schema.get_mut("required").and_then(Value::as_array_mut) {
                r.retain(|x| x != "op");
            }
            out.push((op, schema));
        }
    }
    out
}

fn resolve_ref(schema: &Value, defs: &Map<String, Value>) -> Value {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(&format!("#{COMPONENTS}/")))
        .and_then(|name| defs.get(name))
        .cloned()
        .unwrap_or_else(|| schema.clone())
}

//! The OpenAPI 3.1 description of the API, made from the request types'
//! schemas and the route table, so it cannot say something the daemon does
//! not do. `docs/openapi.json` is this document; a test checks they agree
//! (`cargo run -- generate openapi > docs/openapi.json` writes it again).

use serde_json::{Map, Value, json};

use super::{
    routes,
    schema::{COMPONENTS, components, op_schemas},
};

/// The parameters and the body of one route of `op`, whose fields are
/// `schema`.
fn operation(route: &routes::Route, schema: &Value, id: &str) -> Value {
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let in_path: Vec<&str> = routes::params(route.path).collect();
    let mut parameters: Vec<Value> = in_path
        .iter()
        .map(|p| json!({"name": p, "in": "path", "required": true, "schema": properties.get(*p).cloned().unwrap_or(json!({"type": "string"}))}))
        .collect();
    let rest: Map<String, Value> = properties
        .iter()
        .filter(|(k, _)| !in_path.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut op = Map::new();
    op.insert("operationId".into(), json!(id));
    op.insert("summary".into(), json!(route.summary));
    if route.method.takes_query() {
        parameters.extend(rest.iter().map(|(k, v)| {
            json!({"name": k, "in": "query", "required": required.contains(&k.as_str()), "schema": v})
        }));
    } else {
        let required: Vec<&str> = required
            .iter()
            .filter(|r| !in_path.contains(r))
            .copied()
            .collect();
        let mut body = json!({"type": "object", "additionalProperties": false, "properties": rest});
        if !required.is_empty() {
            body["required"] = json!(required);
        }
        op.insert(
            "requestBody".into(),
            json!({"required": true, "content": {"application/json": {"schema": body}}}),
        );
    }
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    let reply = super::reply::REPLIES
        .iter()
        .find(|(op, _)| *op == route.op)
        .map_or_else(|| json!({}), |(_, name)| reply_schema(name));
    let ok = if route.op == "session_list" {
        json!({"description": "One session per line", "content": {routes::NDJSON: {"schema": reply}}})
    } else {
        json!({
            "description": "The result; a read answered while the fleet store is unreachable carries the x-sg-stale header",
            "content": {"application/json": {"schema": reply}}
        })
    };
    let error = json!({"description": "Refused: the kind says why (400 invalid, 404 not found, 405 method, 409 conflict or in use, 413 too large, 423 managed, 403 protected or read-only socket)", "content": {"application/json": {"schema": {"$ref": format!("#{COMPONENTS}/ApiError")}}}});
    let unavailable = json!({"description": "The store or the data plane cannot take it now, or the agent failed", "content": {"application/json": {"schema": {"$ref": format!("#{COMPONENTS}/ApiError")}}}});
    op.insert(
        "responses".into(),
        json!({"200": ok, "4XX": error, "5XX": unavailable}),
    );
    Value::Object(op)
}

/// The schema a [`super::reply::REPLIES`] entry names: `Name`, `[Name]`
/// (an array), or `A|B` (one of them).
pub fn reply_schema(name: &str) -> Value {
    if name.contains('|') {
        let one_of: Vec<Value> = name.split('|').map(reply_schema).collect();
        return json!({ "oneOf": one_of });
    }
    match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(item) => json!({"type": "array", "items": reply_schema(item)}),
        None => json!({"$ref": format!("#{COMPONENTS}/{name}")}),
    }
}

/// The whole document.
pub fn document() -> Value {
    let schemas = op_schemas();
    let mut paths = Map::new();
    let mut ids = std::collections::HashSet::new();
    for (path, routes) in routes::by_path() {
        let mut item = Map::new();
        for route in routes {
            let schema = schemas
                .iter()
                .find(|(op, _)| op == route.op)
                .map_or(json!({}), |(_, s)| s.clone());
            let mut id = route.op.to_owned();
            if !ids.insert(id.clone()) {
                id = format!(
                    "{}_by_{}",
                    route.op,
                    routes::params(route.path).next().unwrap_or("path")
                );
                ids.insert(id.clone());
            }
            item.insert(
                route.method.as_str().to_ascii_lowercase(),
                operation(route, &schema, &id),
            );
        }
        paths.insert(path.to_owned(), Value::Object(item));
    }
    let mut components = components();
    components.remove("Request");
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "sg-agent",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The API of sg-agent on its Unix socket (default /run/sg-agent/api.sock): HTTP/1.1 with JSON bodies. Every error has the body {kind, field, message}."
        },
        "paths": paths,
        "components": {"schemas": components},
    })
}

/// [`document`] as the text of `docs/openapi.json`.
pub fn text() -> String {
    let mut out = serde_json::to_string_pretty(&document()).unwrap_or_default();
    out.push('\n');
    out
}

//! The routes of the API: which method and path carry which request. The
//! table is the one router: the daemon decodes a request with it, the CLI
//! encodes one with it, and the OpenAPI document is made from it.
//!
//! A path parameter (`{id}`) is the request field of the same name; the
//! other fields travel in the query string (`GET`, `DELETE`) or as a JSON
//! object in the body. Values in a path or a query are typed by the
//! request's schema, so `?force=true` is a boolean and `/v1/snapshots/7`
//! an integer.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::OnceLock,
};

use serde_json::{Map, Value};

use super::{ApiError, ErrorKind, Request};

/// An HTTP method the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Get, Self::Post, Self::Put, Self::Patch, Self::Delete]
            .into_iter()
            .find(|m| m.as_str() == s)
    }

    /// Whether the request's fields other than the path's travel in the
    /// query string (else in a JSON body).
    pub fn takes_query(self) -> bool {
        matches!(self, Self::Get | Self::Delete)
    }
}

/// One route: a method and a path template, the request `op` it carries.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub op: &'static str,
    pub summary: &'static str,
}

const fn r(method: Method, path: &'static str, op: &'static str, summary: &'static str) -> Route {
    Route {
        method,
        path,
        op,
        summary,
    }
}

use Method::{Delete, Get, Patch, Post, Put};

/// Every route. An op with several routes (the rules of a group, or of a
/// NIC) is sent on the first whose parameters the request gives.
pub const ROUTES: &[Route] = &[
    r(Get, "/v1/status", "status", "The daemon's own state"),
    r(Get, "/v1/groups", "group_list", "Every security group"),
    r(
        Post,
        "/v1/groups",
        "group_create",
        "Create a security group",
    ),
    r(
        Get,
        "/v1/groups/{id}",
        "group_show",
        "A group and its member NICs",
    ),
    r(
        Patch,
        "/v1/groups/{id}",
        "group_modify",
        "Change a group's name, description, protection or tags",
    ),
    r(
        Delete,
        "/v1/groups/{id}",
        "group_delete",
        "Delete a security group",
    ),
    r(
        Put,
        "/v1/groups/{id}/inner-policy",
        "group_set_inner_policy",
        "Set the intra-group policy",
    ),
    r(
        Post,
        "/v1/groups/{id}/clone",
        "group_clone",
        "Clone a security group",
    ),
    r(
        Get,
        "/v1/group-health",
        "group_health",
        "Redundant rules of a group, or of every group",
    ),
    r(
        Get,
        "/v1/groups/{group}/rules",
        "rule_list",
        "A group's rules",
    ),
    r(
        Get,
        "/v1/nics/{nic}/rules",
        "rule_list",
        "A NIC's merged, sorted rules",
    ),
    r(
        Post,
        "/v1/groups/{group}/rules",
        "rule_authorize",
        "Add rules to a group, all or none",
    ),
    r(
        Post,
        "/v1/groups/{group}/rules/revoke",
        "rule_revoke",
        "Remove rules from a group, all or none",
    ),
    r(
        Put,
        "/v1/groups/{group}/rules/{rule}",
        "rule_modify",
        "Replace a rule's fields, keeping its id and place",
    ),
    r(
        Post,
        "/v1/groups/{group}/rules/import",
        "rule_import",
        "Import rules in the documents' JSON or CSV",
    ),
    r(
        Get,
        "/v1/groups/{group}/rules/export",
        "rule_export",
        "Export a group's rules as JSON or CSV",
    ),
    r(Get, "/v1/nics", "nic_list", "Every bound NIC"),
    r(
        Put,
        "/v1/nics/{name}",
        "nic_bind",
        "Bind a NIC to security groups",
    ),
    r(
        Get,
        "/v1/nics/{name}",
        "nic_show",
        "A bound NIC, as the data plane holds it",
    ),
    r(Delete, "/v1/nics/{name}", "nic_unbind", "Unbind a NIC"),
    r(
        Post,
        "/v1/nics/{name}/groups",
        "nic_join",
        "Add a group to a NIC",
    ),
    r(
        Delete,
        "/v1/nics/{name}/groups/{group}",
        "nic_leave",
        "Remove a group from a NIC",
    ),
    r(
        Put,
        "/v1/nics/{name}/groups",
        "nic_set_groups",
        "Replace a NIC's groups",
    ),
    r(
        Put,
        "/v1/nics/{name}/addresses",
        "nic_set_addresses",
        "Replace a NIC's addresses",
    ),
    r(
        Get,
        "/v1/prefix-lists",
        "prefix_list_list",
        "Every prefix list",
    ),
    r(
        Post,
        "/v1/prefix-lists",
        "prefix_list_create",
        "Create a prefix list",
    ),
    r(
        Get,
        "/v1/prefix-lists/{id}",
        "prefix_list_show",
        "A prefix list",
    ),
    r(
        Patch,
        "/v1/prefix-lists/{id}",
        "prefix_list_modify",
        "Change a prefix list",
    ),
    r(
        Delete,
        "/v1/prefix-lists/{id}",
        "prefix_list_delete",
        "Delete a prefix list",
    ),
    r(Get, "/v1/port-lists", "port_list_list", "Every port list"),
    r(
        Post,
        "/v1/port-lists",
        "port_list_create",
        "Create a port list",
    ),
    r(Get, "/v1/port-lists/{id}", "port_list_show", "A port list"),
    r(
        Patch,
        "/v1/port-lists/{id}",
        "port_list_modify",
        "Change a port list",
    ),
    r(
        Delete,
        "/v1/port-lists/{id}",
        "port_list_delete",
        "Delete a port list",
    ),
    r(Get, "/v1/hosts", "host_list", "The hosts of the fleet"),
    r(
        Delete,
        "/v1/hosts/{host}",
        "host_remove",
        "Remove a host gone for good from the fleet",
    ),
    r(Get, "/v1/settings", "settings_show", "The agent settings"),
    r(
        Patch,
        "/v1/settings",
        "settings_set",
        "Change agent settings",
    ),
    r(
        Post,
        "/v1/apply",
        "apply",
        "Set the whole desired state from a document, all or nothing",
    ),
    r(
        Get,
        "/v1/export",
        "export",
        "The whole state as an apply document",
    ),
    r(Get, "/v1/snapshots", "snapshot_list", "Group snapshots"),
    r(Get, "/v1/snapshots/{id}", "snapshot_show", "One snapshot"),
    r(
        Post,
        "/v1/snapshots/{id}/restore",
        "snapshot_restore",
        "Restore a group from a snapshot",
    ),
    r(
        Post,
        "/v1/verify",
        "verify",
        "Compare the kernel's maps with the compiled policy; repair",
    ),
    r(
        Post,
        "/v1/trace",
        "trace",
        "Explain the verdict for one packet",
    ),
    r(
        Get,
        "/v1/stats",
        "stats",
        "Packet counters, rule hits, decisions by reason",
    ),
    r(
        Get,
        "/v1/sessions",
        "session_list",
        "Sessions, streamed as NDJSON",
    ),
    r(Delete, "/v1/sessions", "session_flush", "Remove sessions"),
];

/// Whether the read-only socket serves `route`: every `GET`, and the
/// trace, which changes nothing (the verify repairs, so it is not one).
pub fn is_read(route: &Route) -> bool {
    matches!(route.method, Method::Get) || route.op == "trace"
}

/// The media type of a streamed listing: one JSON value per line.
pub const NDJSON: &str = "application/x-ndjson";

/// The names of a path template's parameters, in order.
pub fn params(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

/// The parameters of `path` if it matches `template`, else `None`.
fn matches(template: &'static str, path: &str) -> Option<Vec<(&'static str, String)>> {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut out = Vec::new();
    for (t, p) in t.iter().zip(&p) {
        match t.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) if !p.is_empty() => out.push((name, unescape(p, false)?)),
            None if t == p => {}
            _ => return None,
        }
    }
    Some(out)
}

/// A path's parameters: each name and its (decoded) value.
pub type Params = Vec<(&'static str, String)>;

/// The route of `method` and `path`: its parameters, or the error a client
/// gets (404 for a path no route has, 405 for a method the path lacks).
pub fn find(method: &str, path: &str) -> Result<(&'static Route, Params), ApiError> {
    let mut allowed = Vec::new();
    for route in ROUTES {
        if let Some(params) = matches(route.path, path) {
            if Method::parse(method) == Some(route.method) {
                return Ok((route, params));
            }
            allowed.push(route.method.as_str());
        }
    }
    if allowed.is_empty() {
        Err(ApiError::new(
            ErrorKind::NotFound,
            None,
            format!("no route {path} (the routes are in docs/openapi.json)"),
        ))
    } else {
        Err(ApiError::new(
            ErrorKind::MethodNotAllowed,
            None,
            format!(
                "{method} {path}: the methods of this path are {}",
                allowed.join(", ")
            ),
        ))
    }
}

/// The request a client sent: the route's `op`, the path's parameters, the
/// query's fields and the body's (a JSON object, or nothing).
pub fn decode(
    route: &Route,
    path_params: Params,
    query: Option<&str>,
    body: &[u8],
) -> Result<Request, ApiError> {
    let mut fields = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(ApiError::invalid("body", "the body must be a JSON object")),
            Err(e) => return Err(ApiError::invalid("body", format!("not JSON: {e}"))),
        }
    };
    if fields.contains_key("op") {
        return Err(ApiError::invalid(
            "op",
            "the op is the route's; the body gives none",
        ));
    }
    let mut given = |name: &str, text: String, from: &str| {
        if fields.contains_key(name) {
            return Err(ApiError::invalid(
                name,
                format!("given twice (in the {from} and the body)"),
            ));
        }
        fields.insert(name.to_owned(), typed(route.op, name, text)?);
        Ok(())
    };
    for (name, value) in path_params {
        given(name, value, "path")?;
    }
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k =
            unescape(k, true).ok_or_else(|| ApiError::invalid("query", "bad percent-encoding"))?;
        let v = unescape(v, true).ok_or_else(|| ApiError::invalid(&k, "bad percent-encoding"))?;
        given(&k, v, "query")?;
    }
    fields.insert("op".to_owned(), Value::String(route.op.to_owned()));
    serde_json::from_value(Value::Object(fields)).map_err(|e| {
        let message = e.to_string();
        ApiError::new(
            ErrorKind::Invalid,
            blamed(&message),
            format!("request: {message}"),
        )
    })
}

/// The field a serde message blames: the first name in backticks after
/// "field".
fn blamed(message: &str) -> Option<&str> {
    let rest = &message[message.find("field `")? + 7..];
    rest.split('`').next()
}

/// `text` from a path or query as the JSON value field `name` of `op`
/// takes: a number, a boolean (`true`, `false`, `1`, `0`, or nothing) or
/// the text as it is.
fn typed(op: &str, name: &str, text: String) -> Result<Value, ApiError> {
    match kinds().get(op).and_then(|k| k.get(name)).copied() {
        Some(Kind::Integer) => text
            .parse::<u64>()
            .map(Value::from)
            .map_err(|_| ApiError::invalid(name, format!("{text:?} is not a whole number"))),
        Some(Kind::Boolean) => match text.as_str() {
            "" | "true" | "1" => Ok(Value::Bool(true)),
            "false" | "0" => Ok(Value::Bool(false)),
            _ => Err(ApiError::invalid(
                name,
                format!("{text:?} is not true or false"),
            )),
        },
        Some(Kind::Structured) => Err(ApiError::invalid(
            name,
            "a list or object goes in a JSON body, not in the path or query",
        )),
        Some(Kind::Text) | None => Ok(Value::String(text)),
    }
}

/// What a field's schema says it holds, as far as a path or query cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Integer,
    Boolean,
    Structured,
}

/// The kind of every field of every op, from the requests' schema.
fn kinds() -> &'static HashMap<String, HashMap<String, Kind>> {
    static KINDS: OnceLock<HashMap<String, HashMap<String, Kind>>> = OnceLock::new();
    KINDS.get_or_init(|| {
        let mut out = HashMap::new();
        for (op, schema) in super::schema::op_schemas() {
            let fields = schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.iter().map(|(k, v)| (k.clone(), kind_of(v))).collect())
                .unwrap_or_default();
            out.insert(op, fields);
        }
        out
    })
}

fn kind_of(schema: &Value) -> Kind {
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.contains(&"integer") {
        Kind::Integer
    } else if types.contains(&"boolean") {
        Kind::Boolean
    } else if types.contains(&"array") || types.contains(&"object") || schema.get("$ref").is_some()
    {
        Kind::Structured
    } else {
        Kind::Text
    }
}

/// How a client sends `request`: the method, the path with its query, and
/// the JSON body (for methods that take one).
pub fn encode(request: &Request) -> Result<(Method, String, Option<Vec<u8>>), String> {
    let Value::Object(mut fields) = serde_json::to_value(request).map_err(|e| e.to_string())?
    else {
        return Err("a request serialises to an object".to_owned());
    };
    let Some(Value::String(op)) = fields.remove("op") else {
        return Err("a request has an op".to_owned());
    };
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let route = ROUTES
        .iter()
        .filter(|r| r.op == op)
        .find(|r| params(r.path).all(|p| fields.get(p).and_then(scalar).is_some()))
        .ok_or_else(|| format!("no route sends {op} with the fields it has"))?;
    let mut path = String::new();
    for segment in route.path.split('/').skip(1) {
        path.push('/');
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => {
                let v = fields
                    .remove(name)
                    .and_then(|v| scalar(&v))
                    .unwrap_or_default();
                path.push_str(&encode_component(&v));
            }
            None => path.push_str(segment),
        }
    }
    if !route.method.takes_query() {
        let body = serde_json::to_vec(&Value::Object(fields)).map_err(|e| e.to_string())?;
        return Ok((route.method, path, Some(body)));
    }
    let mut query = Vec::new();
    for (k, v) in &fields {
        match v {
            Value::Null | Value::Bool(false) => {}
            v => {
                let text = scalar(v).ok_or_else(|| format!("{k}: cannot go in a query"))?;
                query.push(format!(
                    "{}={}",
                    encode_component(k),
                    encode_component(&text)
                ));
            }
        }
    }
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    Ok((route.method, path, None))
}

/// `text` with every byte but the unreserved ones (RFC 3986) as `%XX`.
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `text` with `%XX` decoded (and `+` as a space in a query); `None` when
/// an escape is broken or the result is not UTF-8.
fn unescape(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The routes by path, each path's methods in order: for the OpenAPI
/// document.
pub fn by_path() -> BTreeMap<&'static str, Vec<&'static Route>> {
    let mut out: BTreeMap<&'static str, Vec<&'static Route>> = BTreeMap::new();
    for route in ROUTES {
        out.entry(route.path).or_default().push(route);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{GroupRequest, NicRequest, ObserveRequest, SessionFilter, SessionRequest};

    fn round_trip(request: &Request) -> Request {
        let (method, path, body) = encode(request).expect("encodes");
        let (path, query) = path
            .split_once('?')
            .map_or((path.as_str(), None), |(p, q)| (p, Some(q)));
        let (route, params) = find(method.as_str(), path).expect("a route");
        decode(route, params, query, body.as_deref().unwrap_or_default()).expect("decodes")
    }

    #[test]
    fn requests_survive_the_wire() {
        for request in [
            Request::Group(GroupRequest::Show {
                id: "sg-a b/c".into(),
            }),
            Request::Group(GroupRequest::List),
            Request::Nic(NicRequest::Leave {
                name: "v0".into(),
                group: "sg-1".into(),
            }),
            Request::Observe(ObserveRequest::Stats {
                nic: Some("10".into()),
                dir: Some("egress".into()),
                min_packets: Some(1),
                limit: Some(5),
                after: Some("v0/ingress/sgr-1".into()),
            }),
            Request::Session(SessionRequest::Flush {
                filter: SessionFilter {
                    port: Some(80),
                    address: Some("10.0.0.0/8".into()),
                    ..Default::default()
                },
                all: true,
            }),
        ] {
            assert_eq!(round_trip(&request), request);
        }
    }

    #[test]
    fn a_wrong_method_is_405_and_a_wrong_path_404() {
        assert_eq!(find("POST", "/v1/status").unwrap_err().status(), 405);
        assert_eq!(find("GET", "/v1/nothing").unwrap_err().status(), 404);
        assert_eq!(find("GET", "/v1/groups/").unwrap_err().status(), 404);
    }

    #[test]
    fn query_values_are_typed_by_the_schema() {
        let (route, params) = find("GET", "/v1/snapshots/x").unwrap();
        let e = decode(route, params, None, b"").unwrap_err();
        assert_eq!((e.status(), e.field.as_deref()), (400, Some("id")));
        let (route, params) = find("DELETE", "/v1/hosts/h1").unwrap();
        let r = decode(route, params, Some("force"), b"").unwrap();
        assert_eq!(
            r,
            Request::Host(crate::api::HostRequest::Remove {
                host: "h1".into(),
                force: true
            })
        );
    }

    #[test]
    fn an_unknown_query_field_is_refused_by_name() {
        let (route, params) = find("GET", "/v1/groups").unwrap();
        let e = decode(route, params, Some("colour=red"), b"").unwrap_err();
        assert_eq!((e.status(), e.field.as_deref()), (400, Some("colour")));
    }
}

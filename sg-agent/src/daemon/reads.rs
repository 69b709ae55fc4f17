//! Requests that only read: answered from a [`View`] the owner task
//! publishes after every change, by the connection that asked, without
//! waiting for the owner. So a flood of listings neither delays interface
//! events nor a `status`, and a listing of the whole state is serialised
//! once per view however many clients ask for it (its bytes are shared).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Instant,
};

use serde_json::{Value, json};

use crate::{
    api::{Reply, Request, SessionFilter},
    clock::{self, unix_now},
    dataplane::session_table::{Filter, SessionTable},
};
use sg_policy::{
    self, Cidr, Direction, GroupId, PolicyError, PortListId, PrefixListId, Protocol, State,
};

type Answer = Result<Value, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// What the owner task last published.
pub struct View {
    pub state: State,
    /// `nic show` of every bound NIC, as the owner saw the data plane.
    pub nics: BTreeMap<String, Value>,
    /// The data plane's id of every bound NIC that has one.
    pub nic_ids: BTreeMap<String, u32>,
    /// `status`, but for the uptime (added when read).
    pub status: Value,
    pub started: Instant,
    /// Whole answers (`{"ok": …}` lines) of the requests without arguments,
    /// made once per view.
    lines: Mutex<HashMap<&'static str, Arc<Vec<u8>>>>,
}

impl View {
    pub fn new(
        state: State,
        nics: BTreeMap<String, Value>,
        nic_ids: BTreeMap<String, u32>,
        status: Value,
        started: Instant,
    ) -> Self {
        Self {
            state,
            nics,
            nic_ids,
            status,
            started,
            lines: Mutex::new(HashMap::new()),
        }
    }
}

/// Whether `r` only reads the policy or the published status.
pub fn is_read(r: &Request) -> bool {
    matches!(
        r,
        Request::GroupList
            | Request::GroupShow { .. }
            | Request::GroupHealth { .. }
            | Request::RuleList { .. }
            | Request::RuleExport { .. }
            | Request::NicList
            | Request::NicShow { .. }
            | Request::PrefixListList
            | Request::PrefixListShow { .. }
            | Request::PortListList
            | Request::PortListShow { .. }
            | Request::SettingsShow
            | Request::Export
            | Request::Status
    )
}

/// Why the view may be out of date: the fleet store is unreachable.
fn stale(view: &View) -> Option<String> {
    let fleet = view.status.get("fleet")?;
    if fleet.get("stale")? != &Value::Bool(true) {
        return None;
    }
    Some(format!(
        "the fleet store is unreachable (since {}): this is the policy as of store revision {}, which this host enforces",
        fleet["since"], fleet["revision"]
    ))
}

/// The answer line (`{"ok": …}` or `{"error": …}`, newline-terminated) to a
/// read, shared with every other client that asked this view the same
/// question without arguments.
pub fn line(view: &View, r: &Request) -> Arc<Vec<u8>> {
    let cached = match r {
        Request::GroupList => Some("group_list"),
        Request::NicList => Some("nic_list"),
        Request::PrefixListList => Some("prefix_list_list"),
        Request::PortListList => Some("port_list_list"),
        Request::SettingsShow => Some("settings_show"),
        Request::Export => Some("export"),
        _ => None,
    };
    let make = || {
        let reply = match (answer(view, r), stale(view)) {
            (Ok(value), Some(note)) => Reply::Stale { value, note },
            (Ok(v), None) => Reply::Ok(v),
            (Err(e), _) => Reply::Error(e),
        };
        let mut out = serde_json::to_vec(&reply).unwrap_or_default();
        out.push(b'\n');
        Arc::new(out)
    };
    let Some(key) = cached else {
        return make();
    };
    let mut lines = view.lines.lock().expect("view lock");
    Arc::clone(lines.entry(key).or_insert_with(make))
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Answers a read (see [`is_read`]) from `view`.
pub fn answer(view: &View, r: &Request) -> Answer {
    let state = &view.state;
    match r {
        Request::GroupList => Ok(to_value(&state.groups.values().collect::<Vec<_>>())),
        Request::GroupShow { id } => {
            let id = GroupId::parse("group", id).map_err(err)?;
            let g = state.group("group", &id).map_err(err)?;
            let members = state.member_names(&id);
            Ok(json!({ "group": g, "members": members }))
        }
        Request::GroupHealth { id } => {
            let ids: Vec<GroupId> = match id {
                Some(id) => vec![GroupId::parse("group", id).map_err(err)?],
                None => state.groups.keys().cloned().collect(),
            };
            let mut out = Vec::new();
            for g in ids {
                for r in sg_policy::health_check(state, &g).map_err(err)? {
                    out.push(json!({ "group": g, "rule": r.rule, "covered_by": r.covered_by }));
                }
            }
            Ok(Value::Array(out))
        }
        Request::RuleList { group, nic } => rule_list(state, group.as_deref(), nic.as_deref()),
        Request::RuleExport {
            group,
            format,
            region,
        } => rule_export(state, group, format, region.as_deref()),
        Request::NicList => Ok(Value::Array(view.nics.values().cloned().collect())),
        Request::NicShow { name } => {
            state.nic(name).map_err(err)?;
            Ok(view.nics.get(name).cloned().unwrap_or(Value::Null))
        }
        Request::PrefixListList => Ok(to_value(&state.prefix_lists.values().collect::<Vec<_>>())),
        Request::PrefixListShow { id } => {
            let pid = PrefixListId::parse("prefix_list", id).map_err(err)?;
            state.prefix_lists.get(&pid).map(to_value).ok_or_else(|| {
                err(PolicyError::not_found(
                    "prefix_list",
                    PrefixListId::KIND,
                    &pid,
                ))
            })
        }
        Request::PortListList => Ok(to_value(&state.port_lists.values().collect::<Vec<_>>())),
        Request::PortListShow { id } => {
            let pid = PortListId::parse("port_list", id).map_err(err)?;
            state
                .port_lists
                .get(&pid)
                .map(to_value)
                .ok_or_else(|| err(PolicyError::not_found("port_list", PortListId::KIND, &pid)))
        }
        Request::SettingsShow => Ok(to_value(&state.settings)),
        Request::Export => Ok(to_value(&sg_policy::apply::document_of(state))),
        Request::Status => {
            let mut s = view.status.clone();
            s["uptime_secs"] = json!(view.started.elapsed().as_secs());
            Ok(s)
        }
        _ => Err("not a read".to_owned()),
    }
}

fn rule_list(state: &State, group: Option<&str>, nic: Option<&str>) -> Answer {
    match (group, nic) {
        (Some(g), None) => {
            let gid = GroupId::parse("group", g).map_err(err)?;
            Ok(to_value(&state.group("group", &gid).map_err(err)?.rules))
        }
        (None, Some(n)) => {
            let mut out = Vec::new();
            for dir in [Direction::Ingress, Direction::Egress] {
                for r in sg_policy::merged_rules(state, n, dir).map_err(err)? {
                    let (_, rule) = state.find_rule(&r.id).ok_or("rule vanished")?;
                    let s = &rule.spec;
                    out.push(json!({
                        "direction": s.direction.to_string(),
                        "priority": s.priority,
                        "action": format!("{:?}", s.action),
                        "group": r.group,
                        "rule": r.id,
                        "protocol": s.protocol.to_string(),
                        "ports": port_text(&s.ports),
                        "peer": s.peer.to_string(),
                        "source_ports": s.source_ports.map(|p| p.to_string()),
                        "local": s.local.map(|c| c.to_string()),
                    }));
                }
            }
            Ok(Value::Array(out))
        }
        _ => Err("rule list: give exactly one of group or nic".to_owned()),
    }
}

fn rule_export(state: &State, group: &str, format: &str, region: Option<&str>) -> Answer {
    let gid = GroupId::parse("group", group).map_err(err)?;
    let region = region.unwrap_or("local");
    let (file_name, text) = match format.to_ascii_lowercase().as_str() {
        "json" => (
            sg_policy::json_file_name(region, &gid).map_err(err)?,
            sg_policy::export_json(state, &gid).map_err(err)?,
        ),
        "csv" => (
            sg_policy::csv_file_name(
                &gid,
                region,
                &clock::utc_date(i64::try_from(unix_now()).unwrap_or(0)),
            )
            .map_err(err)?,
            sg_policy::export_csv(state, &gid).map_err(err)?,
        ),
        _ => {
            return Err(err(PolicyError::invalid(
                "format",
                format,
                "must be json or csv",
            )));
        }
    };
    Ok(json!({ "file_name": file_name, "text": text }))
}

fn port_text(p: &sg_policy::PortSpec) -> String {
    match p {
        sg_policy::PortSpec::Any => "-1/-1".to_owned(),
        sg_policy::PortSpec::Range(r) => r.to_string(),
        sg_policy::PortSpec::List(l) => l.to_string(),
    }
}

/// Whether `r` lists or flushes sessions (answered on a connection's own
/// thread: a walk of a full table takes a while).
pub fn is_sessions(r: &Request) -> bool {
    matches!(
        r,
        Request::SessionList { .. } | Request::SessionFlush { .. }
    )
}

/// Lists or flushes the sessions `r` asks for, in `table`, naming NICs as
/// `view` does.
pub fn sessions(view: &View, table: &Mutex<SessionTable>, r: &Request) -> Answer {
    match r {
        Request::SessionList { filter } => {
            let f = session_filter(view, filter)?;
            let names: BTreeMap<u32, &String> = view.nic_ids.iter().map(|(n, i)| (*i, n)).collect();
            let rows = table
                .lock()
                .expect("session table lock")
                .list(&f)
                .map_err(err)?;
            Ok(Value::Array(
                rows.iter()
                    .filter(|s| s.live)
                    .map(|s| {
                        json!({
                            "nic": names.get(&s.nic).map_or_else(|| s.nic.to_string(), |n| (*n).clone()),
                            "protocol": protocol_name(s.protocol),
                            "family": if s.initiator.address.is_ipv4() { 4 } else { 6 },
                            "a": s.initiator.address, "a_port": s.initiator.port,
                            "b": s.responder.address, "b_port": s.responder.port,
                            "direction": s.direction, "state": s.state,
                            "age_secs": s.age.as_secs_f64(), "idle_secs": s.idle.as_secs_f64(),
                            "version": s.policy_version,
                        })
                    })
                    .collect(),
            ))
        }
        Request::SessionFlush { filter, all } => {
            if *filter == SessionFilter::default() && !all {
                return Err(
                    "sessions flush: give a filter (nic, protocol, address, port) or all"
                        .to_owned(),
                );
            }
            let f = session_filter(view, filter)?;
            let n = table.lock().expect("session table lock").flush(&f);
            Ok(json!({ "flushed": n }))
        }
        _ => Err("not a sessions request".to_owned()),
    }
}

fn session_filter(view: &View, f: &SessionFilter) -> Result<Filter, String> {
    let nic = match &f.nic {
        Some(n) => {
            view.state.nic(n).map_err(err)?;
            Some(
                *view
                    .nic_ids
                    .get(n)
                    .ok_or_else(|| format!("nic: {n} is bound but its interface is absent"))?,
            )
        }
        None => None,
    };
    let protocol = f
        .protocol
        .as_deref()
        .map(|p| {
            Protocol::parse("protocol", p).and_then(|p| {
                p.number()
                    .ok_or_else(|| PolicyError::invalid("protocol", "ALL", "name one protocol"))
            })
        })
        .transpose()
        .map_err(err)?;
    let address = f
        .address
        .as_deref()
        .map(|a| Cidr::parse("address", a))
        .transpose()
        .map_err(err)?;
    Ok(Filter {
        nic,
        protocol,
        address,
        port: f.port,
    })
}

/// `tcp`, `udp`, `icmp`, `icmpv6`, `gre`, or the protocol number.
fn protocol_name(p: u8) -> String {
    match p {
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        1 => "icmp".to_owned(),
        58 => "icmpv6".to_owned(),
        47 => "gre".to_owned(),
        n => n.to_string(),
    }
}

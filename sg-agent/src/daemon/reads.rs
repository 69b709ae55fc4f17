//! Requests that only read: answered from a [`View`] the owner task
//! publishes after every change, by the connection that asked, without
//! waiting for the owner. So a flood of listings neither delays interface
//! events nor a `status`, and a listing of the whole state is serialised
//! once per view however many clients ask for it (its bytes are shared).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::Instant,
};

use serde_json::Value;

use crate::{
    api::{
        ApiError, GroupRequest, NicRequest, ObserveRequest, PortListRequest, PrefixListRequest,
        Reply, Request, RuleRequest, SessionFilter, SessionRequest, StateRequest, reply,
    },
    clock::{self, unix_now},
    dataplane::session_table::{Filter, Session, SessionTable},
};
use sg_policy::{
    self, Cidr, Direction, GroupId, PolicyError, PortListId, PrefixListId, Protocol, State,
};

type Answer = Result<Value, ApiError>;

fn err(e: impl Into<ApiError>) -> ApiError {
    e.into()
}

/// What the owner task last published.
pub struct View {
    pub state: State,
    /// `nic show` of every bound NIC, as the owner saw the data plane.
    pub nics: BTreeMap<String, Value>,
    /// The data plane's id of every bound NIC that has one.
    pub nic_ids: BTreeMap<String, u32>,
    /// `status`, but for the uptime (set when read).
    pub status: reply::Status,
    pub started: Instant,
    /// The JSON of the results of the reads without arguments, made once
    /// per view.
    bodies: Mutex<HashMap<&'static str, bytes::Bytes>>,
}

impl View {
    pub fn new(
        state: State,
        nics: BTreeMap<String, Value>,
        nic_ids: BTreeMap<String, u32>,
        status: reply::Status,
        started: Instant,
    ) -> Self {
        Self {
            state,
            nics,
            nic_ids,
            status,
            started,
            bodies: Mutex::new(HashMap::new()),
        }
    }
}

/// Why the view may be out of date: the fleet store is unreachable.
fn stale(view: &View) -> Option<String> {
    let fleet = view.status.fleet.as_ref().filter(|f| f.stale)?;
    Some(format!(
        "the fleet store is unreachable (since {}): this is the policy as of store revision {}, which this host enforces",
        fleet.since, fleet.revision
    ))
}

/// A read's answer: the result's JSON (shared with every other client that
/// asked this view the same question without arguments) or the refusal,
/// and why it may be out of date; `None` for a request that is not a read
/// of the view.
pub fn respond(
    view: &View,
    r: &Request,
) -> Option<Result<(bytes::Bytes, Option<String>), ApiError>> {
    let cached = match r {
        Request::Group(GroupRequest::List) => Some("group_list"),
        Request::Nic(NicRequest::List) => Some("nic_list"),
        Request::PrefixList(PrefixListRequest::List) => Some("prefix_list_list"),
        Request::PortList(PortListRequest::List) => Some("port_list_list"),
        Request::State(StateRequest::SettingsShow) => Some("settings_show"),
        Request::State(StateRequest::Export) => Some("export"),
        _ => None,
    };
    let body = |value: &Value| bytes::Bytes::from(serde_json::to_vec(value).unwrap_or_default());
    let stale = stale(view);
    let Some(key) = cached else {
        return answer(view, r).map(|a| a.map(|v| (body(&v), stale)));
    };
    let mut bodies = view.bodies.lock().expect("view lock");
    if let Some(b) = bodies.get(key) {
        return Some(Ok((b.clone(), stale)));
    }
    let made = answer(view, r)?;
    Some(made.map(|v| {
        let b = body(&v);
        bodies.insert(key, b.clone());
        (b, stale)
    }))
}

/// [`respond`]'s answer as a [`Reply`] (for the owner task, which answers
/// reads too when asked directly).
pub fn reply(view: &View, r: &Request) -> Option<Reply> {
    Some(match (answer(view, r)?, stale(view)) {
        (Ok(value), Some(note)) => Reply::Stale { value, note },
        (Ok(v), None) => Reply::Ok(v),
        (Err(e), _) => Reply::Error(e),
    })
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Answers a read of the view; `None` for any other request.
pub fn answer(view: &View, r: &Request) -> Option<Answer> {
    let state = &view.state;
    Some(match r {
        Request::Group(GroupRequest::List) => {
            Ok(to_value(&state.groups.values().collect::<Vec<_>>()))
        }
        Request::Group(GroupRequest::Show { id }) => group_show(state, id),
        Request::Group(GroupRequest::Health { id }) => group_health(state, id.as_deref()),
        Request::Rule(RuleRequest::List { group, nic }) => {
            rule_list(state, group.as_deref(), nic.as_deref())
        }
        Request::Rule(RuleRequest::Export {
            group,
            format,
            region,
        }) => rule_export(state, group, format, region.as_deref()),
        Request::Nic(NicRequest::List) => Ok(Value::Array(view.nics.values().cloned().collect())),
        Request::Nic(NicRequest::Show { name }) => state
            .nic(name)
            .map_err(err)
            .map(|_| view.nics.get(name).cloned().unwrap_or(Value::Null)),
        Request::PrefixList(PrefixListRequest::List) => {
            Ok(to_value(&state.prefix_lists.values().collect::<Vec<_>>()))
        }
        Request::PrefixList(PrefixListRequest::Show { id }) => prefix_list_show(state, id),
        Request::PortList(PortListRequest::List) => {
            Ok(to_value(&state.port_lists.values().collect::<Vec<_>>()))
        }
        Request::PortList(PortListRequest::Show { id }) => port_list_show(state, id),
        Request::State(StateRequest::SettingsShow) => Ok(to_value(&state.settings)),
        Request::State(StateRequest::Export) => Ok(to_value(&sg_policy::apply::document_of(state))),
        Request::Observe(ObserveRequest::Status) => {
            let mut s = view.status.clone();
            s.uptime_secs = view.started.elapsed().as_secs();
            Ok(to_value(&s))
        }
        _ => return None,
    })
}

fn group_show(state: &State, id: &str) -> Answer {
    let id = GroupId::parse("group", id).map_err(err)?;
    let g = state.group("group", &id).map_err(err)?;
    let members = state.member_names(&id);
    Ok(to_value(&reply::GroupShown {
        group: g.clone(),
        members: members.into_iter().map(str::to_owned).collect(),
    }))
}

fn group_health(state: &State, id: Option<&str>) -> Answer {
    let ids: Vec<GroupId> = match id {
        Some(id) => vec![GroupId::parse("group", id).map_err(err)?],
        None => state.groups.keys().cloned().collect(),
    };
    let mut out = Vec::new();
    for g in ids {
        for r in sg_policy::health_check(state, &g).map_err(err)? {
            out.push(to_value(&reply::Redundant {
                group: g.to_string(),
                rule: r.rule.to_string(),
                covered_by: r.covered_by.to_string(),
            }));
        }
    }
    Ok(Value::Array(out))
}

fn prefix_list_show(state: &State, id: &str) -> Answer {
    let pid = PrefixListId::parse("prefix_list", id).map_err(err)?;
    state.prefix_lists.get(&pid).map(to_value).ok_or_else(|| {
        err(PolicyError::not_found(
            "prefix_list",
            PrefixListId::KIND,
            &pid,
        ))
    })
}

fn port_list_show(state: &State, id: &str) -> Answer {
    let pid = PortListId::parse("port_list", id).map_err(err)?;
    state
        .port_lists
        .get(&pid)
        .map(to_value)
        .ok_or_else(|| err(PolicyError::not_found("port_list", PortListId::KIND, &pid)))
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
                    let (_, rule) = state
                        .find_rule(&r.id)
                        .ok_or_else(|| ApiError::internal(format!("rule {} vanished", r.id)))?;
                    let s = &rule.spec;
                    out.push(to_value(&reply::MergedRule {
                        direction: s.direction.to_string(),
                        priority: s.priority,
                        action: format!("{:?}", s.action),
                        group: r.group.to_string(),
                        rule: r.id.to_string(),
                        protocol: s.protocol.to_string(),
                        ports: port_text(&s.ports),
                        peer: s.peer.to_string(),
                        source_ports: s.source_ports.map(|p| p.to_string()),
                        local: s.local.map(|c| c.to_string()),
                    }));
                }
            }
            Ok(Value::Array(out))
        }
        _ => Err(ApiError::invalid(
            "group",
            "rule list: give exactly one of group or nic",
        )),
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
    Ok(to_value(&reply::Exported { file_name, text }))
}

fn port_text(p: &sg_policy::PortSpec) -> String {
    match p {
        sg_policy::PortSpec::Any => "-1/-1".to_owned(),
        sg_policy::PortSpec::Range(r) => r.to_string(),
        sg_policy::PortSpec::List(l) => l.to_string(),
    }
}

/// The NICs' names by data-plane id, for naming sessions.
pub fn nic_names(view: &View) -> BTreeMap<u32, String> {
    view.nic_ids.iter().map(|(n, i)| (*i, n.clone())).collect()
}

/// One listed session as JSON; `a` sent the first packet.
pub fn session_row(names: &BTreeMap<u32, String>, s: &Session) -> Value {
    to_value(&reply::SessionRow {
        nic: names
            .get(&s.nic)
            .map_or_else(|| s.nic.to_string(), Clone::clone),
        protocol: protocol_name(s.protocol),
        family: if s.initiator.address.is_ipv4() { 4 } else { 6 },
        a: s.initiator.address.to_string(),
        a_port: s.initiator.port,
        b: s.responder.address.to_string(),
        b_port: s.responder.port,
        direction: s.direction.to_owned(),
        state: s.state.to_owned(),
        age_secs: s.age.as_secs_f64(),
        idle_secs: s.idle.as_secs_f64(),
        version: s.policy_version,
    })
}

/// Lists (a bounded answer, for the owner task) or flushes the sessions
/// `r` asks for in `table`, naming NICs as `view` does. A listing on the
/// API is streamed instead (`daemon::http`).
pub fn sessions(view: &View, table: &Mutex<SessionTable>, r: &SessionRequest) -> Answer {
    match r {
        SessionRequest::List { filter, limit } => {
            let f = session_filter(view, filter)?;
            let names = nic_names(view);
            let mut rows = Vec::new();
            let limit = limit.unwrap_or(u64::MAX);
            table
                .lock()
                .expect("session table lock")
                .walk(&f, |s| {
                    if s.live {
                        rows.push(session_row(&names, s));
                    }
                    (rows.len() as u64) < limit
                })
                .map_err(|e| ApiError::unavailable(format!("reading the session table: {e}")))?;
            Ok(Value::Array(rows))
        }
        SessionRequest::Flush { filter, all } => {
            if *filter == SessionFilter::default() && !all {
                return Err(ApiError::invalid(
                    "all",
                    "sessions flush: give a filter (nic, protocol, address, port) or all",
                ));
            }
            let f = session_filter(view, filter)?;
            let n = table.lock().expect("session table lock").flush(&f);
            Ok(to_value(&reply::Flushed { flushed: n as u64 }))
        }
    }
}

/// The data plane's filter for `f`: the NIC by its id, the protocol by number.
pub fn session_filter(view: &View, f: &SessionFilter) -> Result<Filter, ApiError> {
    let nic = match &f.nic {
        Some(n) => {
            view.state.nic(n).map_err(err)?;
            Some(*view.nic_ids.get(n).ok_or_else(|| {
                ApiError::new(
                    crate::api::ErrorKind::NotFound,
                    Some("nic"),
                    format!("nic: {n} is bound but its interface is absent"),
                )
            })?)
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

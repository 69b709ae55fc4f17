//! The HTTP API through the real daemon with `curl --unix-socket`, as an
//! operator's script would use it: every route of the route table, each
//! error status with its `{kind, field, message}` body, the streamed session
//! listing, the body size limit, and the socket's group access for a user
//! that is not root.

use std::{
    cell::RefCell,
    collections::BTreeSet,
    io::Write as _,
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Command, Stdio},
};

use serde_json::{Value, json};
use sg_agent::{
    api::{
        reply,
        routes::{self, ROUTES},
    },
    store::{SqliteStore, Store as _},
};
use sg_policy::{GroupSpec, State};
use sg_tests::{agent::AgentProcess, daemon::Daemon, probe, topology::Pair};

use crate::support::bin;

/// One answer: the status, the headers (lowercase) and the body.
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The error body, checked to be one: its kind and field.
    fn error(&self) -> (String, Option<String>) {
        let e = self.json();
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        (
            e["kind"].as_str().unwrap().to_owned(),
            e["field"].as_str().map(str::to_owned),
        )
    }
}

/// `curl` on `socket`: `method target` with `body` (JSON text) if any.
fn curl_as(
    prefix: &[&str],
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&str>,
) -> Answer {
    let mut cmd = Command::new(prefix.first().copied().unwrap_or("curl"));
    if !prefix.is_empty() {
        cmd.args(&prefix[1..]).arg("curl");
    }
    cmd.args(["-sS", "-D", "-", "--unix-socket"])
        .arg(socket)
        .args(["-X", method, &format!("http://sg{target}")]);
    if body.is_some() {
        cmd.args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            "@-",
        ]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl runs");
    if let Some(b) = body {
        child.stdin.take().unwrap().write_all(b.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        panic!(
            "{method} {target}: no HTTP answer: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

/// The daemon's API, recording which routes were used.
struct Api<'a> {
    d: &'a Daemon,
    used: RefCell<BTreeSet<(String, &'static str)>>,
}

impl Api<'_> {
    /// `method` on the route `template` with its parameters filled in order,
    /// then `query`, with `body`.
    fn call(
        &self,
        method: &str,
        template: &'static str,
        params: &[&str],
        query: &str,
        body: Option<Value>,
    ) -> Answer {
        assert!(
            ROUTES
                .iter()
                .any(|r| r.path == template && r.method.as_str() == method),
            "{method} {template} is no route"
        );
        self.used.borrow_mut().insert((method.to_owned(), template));
        let mut values = params.iter();
        let path: Vec<String> = template
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    routes::encode_component(values.next().expect("a parameter per {…}"))
                } else {
                    s.to_owned()
                }
            })
            .collect();
        let mut target = path.join("/");
        if !query.is_empty() {
            target = format!("{target}?{query}");
        }
        let body = body.map(|b| b.to_string());
        curl_as(&[], &self.d.socket, method, &target, body.as_deref())
    }

    fn ok(
        &self,
        method: &str,
        template: &'static str,
        params: &[&str],
        query: &str,
        body: Option<Value>,
    ) -> Value {
        let a = self.call(method, template, params, query, body);
        assert_eq!(a.status, 200, "{method} {template} {params:?}: {}", a.body);
        if a.headers.contains("application/x-ndjson") {
            return Value::Array(
                a.body
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect(),
            );
        }
        a.json()
    }

    /// Expects a refusal with `status`, `kind` and (if given) `field`.
    fn refused(&self, status: u16, kind: &str, field: Option<&str>, a: &Answer) {
        let _ = self;
        assert_eq!(a.status, status, "{}", a.body);
        let (k, f) = a.error();
        assert_eq!(k, kind, "{}", a.body);
        if let Some(field) = field {
            assert_eq!(f.as_deref(), Some(field), "{}", a.body);
        }
        assert!(
            a.headers.contains("content-type: application/json"),
            "{}",
            a.headers
        );
    }
}

/// A store holding one managed group (managed groups come only from the
/// store: no request makes one).
fn store_with_a_managed_group(path: &Path) -> String {
    let mut state = State::with_seed(0x5eed);
    let mut spec = GroupSpec::basic("platform");
    spec.managed = true;
    let id = state.create_group(spec).unwrap();
    let mut store = SqliteStore::open(path).unwrap();
    store.commit(&state, &[]).unwrap();
    id.to_string()
}

#[test]
fn every_route_answers_through_the_real_daemon_with_its_status() {
    let pair = Pair::new().unwrap();
    let servers = probe::Servers::start(&pair.b.ns).unwrap();
    let dir = std::env::temp_dir().join(format!("sg-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("state.db");
    let managed = store_with_a_managed_group(&db);
    let d = Daemon::start(bin(), pair.b.ns.name(), &["--store", db.to_str().unwrap()]).unwrap();
    let api = Api {
        d: &d,
        used: RefCell::default(),
    };

    let mut w = World {
        nic: pair.b.ifname.clone(),
        port: servers.tcp_port,
        managed,
        web: String::new(),
        clone: String::new(),
        rule: Value::Null,
        rid: String::new(),
        pl: String::new(),
        prl: String::new(),
    };
    assert!(
        api.ok("GET", "/v1/status", &[], "", None)["pid"]
            .as_u64()
            .is_some()
    );
    groups_and_rules(&api, &mut w);
    nics_and_sessions(&api, &pair, &mut w);
    lists(&api, &mut w);
    state_and_observing(&api, &mut w);
    errors(&api, &w);
    refusals_of_state(&api, &mut w);
    store_unavailable(&api, &db);
    teardown(&api, &mut w);
    let used = api.used.borrow();
    let missing: Vec<String> = ROUTES
        .iter()
        .filter(|r| !used.contains(&(r.method.as_str().to_owned(), r.path)))
        .map(|r| format!("{} {}", r.method.as_str(), r.path))
        .collect();
    assert!(missing.is_empty(), "routes never called: {missing:?}");
    std::fs::remove_dir_all(&dir).ok();
}

/// What the phases of the route test make and use.
struct World {
    nic: String,
    port: u16,
    managed: String,
    web: String,
    clone: String,
    rule: Value,
    rid: String,
    pl: String,
    prl: String,
}

/// The group and rule routes.
fn groups_and_rules(api: &Api, w: &mut World) {
    let port = w.port;
    // Groups.
    let web = api.ok("POST", "/v1/groups", &[], "", Some(json!({"name": "web"})))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let groups = api.ok("GET", "/v1/groups", &[], "", None);
    assert_eq!(groups.as_array().unwrap().len(), 2, "{groups}");
    assert_eq!(
        api.ok("GET", "/v1/groups/{id}", &[&web], "", None)["group"]["name"],
        "web"
    );
    api.ok(
        "PATCH",
        "/v1/groups/{id}",
        &[&web],
        "",
        Some(json!({"description": "the web tier"})),
    );
    api.ok(
        "PUT",
        "/v1/groups/{id}/inner-policy",
        &[&web],
        "",
        Some(json!({"policy": "Drop"})),
    );
    let clone = api.ok(
        "POST",
        "/v1/groups/{id}/clone",
        &[&web],
        "",
        Some(json!({"name": "web2"})),
    );
    let clone = clone["id"].as_str().unwrap().to_owned();
    api.ok("GET", "/v1/group-health", &[], &format!("id={web}"), None);
    // Rules.
    let rule = json!({"direction": "ingress", "protocol": "TCP", "port_range": format!("{port}/{port}"), "peer": "10.77.0.0/24"});
    let ids = api.ok(
        "POST",
        "/v1/groups/{group}/rules",
        &[&web],
        "",
        Some(json!({"rules": [rule]})),
    )["ids"]
        .clone();
    let rid = ids[0].as_str().unwrap().to_owned();
    let listed = api.ok("GET", "/v1/groups/{group}/rules", &[&web], "", None);
    assert_eq!(listed[0]["id"], rid.as_str());
    let mut modified = rule.clone();
    modified["description"] = json!("web port");
    api.ok(
        "PUT",
        "/v1/groups/{group}/rules/{rule}",
        &[&web, &rid],
        "",
        Some(json!({"spec": modified})),
    );
    let exported = api.ok(
        "GET",
        "/v1/groups/{group}/rules/export",
        &[&web],
        "format=csv",
        None,
    );
    assert!(
        exported["text"]
            .as_str()
            .unwrap()
            .contains(&port.to_string())
    );
    let import = "[{\"Direction\":\"ingress\",\"Policy\":\"Accept\",\"Priority\":1,\"IpProtocol\":\"UDP\",\"PortRange\":\"53/53\",\"SourceCidrIp\":\"10.0.0.0/8\"}]";
    let imported = api.call(
        "POST",
        "/v1/groups/{group}/rules/import",
        &[&clone],
        "",
        Some(json!({"format": "json", "text": import})),
    );
    assert!(
        imported.status == 200 || imported.status == 400,
        "{}",
        imported.body
    );
    w.web.clone_from(&web);
    w.clone.clone_from(&clone);
    w.rule = rule;
    w.rid = rid;
}

/// The NIC routes, and the sessions of a connection the rules let in.
fn nics_and_sessions(api: &Api, pair: &Pair, w: &mut World) {
    let (nic, port) = (w.nic.clone(), w.port);
    let nic = nic.as_str();
    let _ = port;
    let (web, clone, rid) = (w.web.clone(), w.clone.clone(), w.rid.clone());
    // NICs.
    api.ok(
        "PUT",
        "/v1/nics/{name}",
        &[nic],
        "",
        Some(json!({"mode": "local", "addresses": ["10.77.0.2"], "groups": [web]})),
    );
    assert_eq!(
        api.ok("GET", "/v1/nics", &[], "", None)
            .as_array()
            .unwrap()
            .len(),
        1
    );
    api.ok("GET", "/v1/nics/{name}", &[nic], "", None);
    api.ok(
        "POST",
        "/v1/nics/{name}/groups",
        &[nic],
        "",
        Some(json!({"group": clone})),
    );
    api.ok(
        "DELETE",
        "/v1/nics/{name}/groups/{group}",
        &[nic, &clone],
        "",
        None,
    );
    api.ok(
        "PUT",
        "/v1/nics/{name}/groups",
        &[nic],
        "",
        Some(json!({"groups": [web]})),
    );
    api.ok(
        "PUT",
        "/v1/nics/{name}/addresses",
        &[nic],
        "",
        Some(json!({"addresses": ["10.77.0.2"]})),
    );
    let merged = api.ok("GET", "/v1/nics/{nic}/rules", &[nic], "", None);
    assert_eq!(merged[0]["rule"], rid.as_str(), "{merged}");
    // The rule is in force: a connection opens, and is a session.
    let addr = SocketAddr::new(IpAddr::V4(pair.b.v4), port);
    assert!(
        probe::tcp(&pair.a.ns, addr).allowed(),
        "the allowed port opens"
    );
    let sessions = api.ok(
        "GET",
        "/v1/sessions",
        &[],
        &format!("nic={nic}&protocol=tcp"),
        None,
    );
    assert!(!sessions.as_array().unwrap().is_empty(), "{sessions}");
    assert_eq!(sessions[0]["nic"], nic, "{sessions}");
    let one = api.ok("GET", "/v1/sessions", &[], "limit=1", None);
    assert_eq!(one.as_array().unwrap().len(), 1, "{one}");
}

/// The prefix and port list routes.
fn lists(api: &Api, w: &mut World) {
    // Lists.
    let pl = api.ok("POST", "/v1/prefix-lists", &[], "", Some(json!({"name": "office", "family": "ipv4", "max_entries": 4, "entries": ["192.0.2.0/24"]})))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.ok("GET", "/v1/prefix-lists", &[], "", None);
    api.ok("GET", "/v1/prefix-lists/{id}", &[&pl], "", None);
    api.ok(
        "PATCH",
        "/v1/prefix-lists/{id}",
        &[&pl],
        "",
        Some(json!({"description": "the office"})),
    );
    let prl = api.ok(
        "POST",
        "/v1/port-lists",
        &[],
        "",
        Some(json!({"name": "webports", "max_entries": 4, "entries": ["80/80"]})),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.ok("GET", "/v1/port-lists", &[], "", None);
    api.ok("GET", "/v1/port-lists/{id}", &[&prl], "", None);
    api.ok(
        "PATCH",
        "/v1/port-lists/{id}",
        &[&prl],
        "",
        Some(json!({"entries": ["80/80", "443/443"]})),
    );
    w.pl = pl;
    w.prl = prl;
}

/// Settings, the whole state, snapshots, observing.
fn state_and_observing(api: &Api, w: &mut World) {
    let (nic, port) = (w.nic.clone(), w.port);
    let nic = nic.as_str();
    let _ = port;
    // Settings, state, snapshots, observing.
    api.ok("GET", "/v1/settings", &[], "", None);
    api.ok(
        "PATCH",
        "/v1/settings",
        &[],
        "",
        Some(json!({"other_secs": 90})),
    );
    let document = api.ok("GET", "/v1/export", &[], "", None);
    let dry = api.ok(
        "POST",
        "/v1/apply",
        &[],
        "",
        Some(json!({"document": document.to_string(), "dry_run": true})),
    );
    assert!(dry.is_object(), "{dry}");
    api.ok("GET", "/v1/snapshots", &[], "", None);
    api.ok("POST", "/v1/verify", &[], "", Some(json!({})));
    let trace = api.ok("POST", "/v1/trace", &[], "", Some(json!({"nic": nic, "direction": "ingress", "protocol": "TCP", "source": "10.77.0.1", "destination": "10.77.0.2", "destination_port": port})));
    assert_eq!(trace["verdict"], "accept", "{trace}");
    api.ok("GET", "/v1/stats", &[], &format!("nic={nic}"), None);
    // Three more rules, so that there are pages to walk.
    let more: Vec<Value> = [("ingress", 7001), ("egress", 7002), ("egress", 7003)]
        .iter()
        .map(|(dir, p)| json!({"direction": dir, "protocol": "UDP", "port_range": format!("{p}/{p}"), "peer": "10.78.0.0/24"}))
        .collect();
    api.ok(
        "POST",
        "/v1/groups/{group}/rules",
        &[&w.web],
        "",
        Some(json!({"rules": more})),
    );
    stats_pages(api);
    let status: reply::Status =
        serde_json::from_value(api.ok("GET", "/v1/status", &[], "", None)).unwrap();
    assert!(
        status.nics.iter().any(|n| n.binding.name == nic),
        "{status:?}"
    );
    api.ok("GET", "/v1/hosts", &[], "", None);
    let flushed = api.ok("DELETE", "/v1/sessions", &[], "all=true", None);
    assert!(flushed["flushed"].as_u64().is_some(), "{flushed}");
}

/// The rule hits one row a page, followed by `next`, are those of one page
/// of them all, in the same order; the paging fields are refused by name.
fn stats_pages(api: &Api) {
    let rows = |s: &reply::Stats| -> Vec<(String, String, String)> {
        s.nics
            .iter()
            .flat_map(|(nic, n)| {
                n.rules
                    .iter()
                    .map(|h| (nic.clone(), h.dir.clone(), h.rule.clone()))
            })
            .collect()
    };
    let page = |query: &str| -> reply::Stats {
        serde_json::from_value(api.ok("GET", "/v1/stats", &[], query, None)).unwrap()
    };
    let all = rows(&page("limit=10000"));
    assert!(all.len() >= 4, "{all:?}");
    let (mut walked, mut pages, mut after) = (Vec::new(), 0, None::<String>);
    loop {
        let query = match &after {
            Some(a) => format!("limit=1&after={}", routes::encode_component(a)),
            None => "limit=1".to_owned(),
        };
        let p = page(&query);
        pages += 1;
        walked.extend(rows(&p));
        match p.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(walked, all);
    assert_eq!(pages, all.len());
    let egress = rows(&page("dir=egress"));
    assert!(egress.iter().all(|(_, d, _)| d == "egress"), "{egress:?}");
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("dir=sideways", "dir"),
        ("after=nothing", "after"),
    ] {
        let a = api.call("GET", "/v1/stats", &[], query, None);
        api.refused(400, "invalid", Some(field), &a);
    }
}

/// The refusals of malformed input and of what does not exist, with the
/// kind and the field to blame.
fn errors(api: &Api, w: &World) {
    let web = w.web.clone();
    let d = api.d;
    let bad = json!({"rules": [{"direction": "ingress", "protocol": "TCP", "peer": "10.0.0.0/8", "priority": "101"}]});
    api.refused(
        400,
        "invalid",
        Some("rules[0].rule.priority"),
        &api.call("POST", "/v1/groups/{group}/rules", &[&web], "", Some(bad)),
    );
    api.refused(
        400,
        "invalid",
        Some("colour"),
        &api.call("GET", "/v1/groups", &[], "colour=red", None),
    );
    api.refused(
        400,
        "invalid",
        Some("body"),
        &curl_as(&[], &d.socket, "POST", "/v1/groups", Some("{not json")),
    );
    api.refused(
        400,
        "invalid",
        Some("id"),
        &api.call("GET", "/v1/snapshots/{id}", &["seven"], "", None),
    );
    api.refused(
        404,
        "not_found",
        None,
        &api.call("GET", "/v1/groups/{id}", &["sg-doesnotexist"], "", None),
    );
    api.refused(
        404,
        "not_found",
        Some("id"),
        &api.call("GET", "/v1/snapshots/{id}", &["999999"], "", None),
    );
    api.refused(
        404,
        "not_found",
        None,
        &api.call(
            "POST",
            "/v1/snapshots/{id}/restore",
            &["999999"],
            "",
            Some(json!({})),
        ),
    );
    api.refused(
        404,
        "not_found",
        None,
        &curl_as(&[], &d.socket, "GET", "/v1/nothing", None),
    );
    api.refused(
        405,
        "method_not_allowed",
        None,
        &curl_as(&[], &d.socket, "DELETE", "/v1/status", None),
    );
}

/// The refusals of what the state does not allow: conflicts, things in
/// use, managed and protected groups, a body over the limit.
fn refusals_of_state(api: &Api, w: &mut World) {
    let (web, clone, rule, pl, managed) = (
        w.web.clone(),
        w.clone.clone(),
        w.rule.clone(),
        w.pl.clone(),
        w.managed.clone(),
    );
    let d = api.d;
    api.refused(
        409,
        "conflict",
        None,
        &api.call(
            "POST",
            "/v1/groups/{group}/rules",
            &[&web],
            "",
            Some(json!({"rules": [rule]})),
        ),
    );
    api.refused(
        409,
        "in_use",
        None,
        &api.call("DELETE", "/v1/groups/{id}", &[&web], "", None),
    );
    let uses_pl = json!({"rules": [{"direction": "ingress", "protocol": "UDP", "port_range": "5/5", "peer": pl}]});
    api.ok(
        "POST",
        "/v1/groups/{group}/rules",
        &[&clone],
        "",
        Some(uses_pl),
    );
    api.refused(
        409,
        "in_use",
        None,
        &api.call("DELETE", "/v1/prefix-lists/{id}", &[&pl], "", None),
    );
    api.refused(
        423,
        "managed",
        None,
        &api.call(
            "PATCH",
            "/v1/groups/{id}",
            &[&managed],
            "",
            Some(json!({"description": "mine now"})),
        ),
    );
    api.ok(
        "PATCH",
        "/v1/groups/{id}",
        &[&clone],
        "",
        Some(json!({"deletion_protection": true})),
    );
    api.refused(
        403,
        "protected",
        None,
        &api.call("DELETE", "/v1/groups/{id}", &[&clone], "", None),
    );
    api.refused(
        404,
        "not_found",
        Some("host"),
        &api.call("DELETE", "/v1/hosts/{host}", &["elsewhere"], "", None),
    );
    let huge = format!(
        "{{\"document\": \"{}\"}}",
        "x".repeat(sg_agent::api::MAX_REQUEST_BYTES + 1)
    );
    api.refused(
        413,
        "too_large",
        Some("body"),
        &curl_as(&[], &d.socket, "POST", "/v1/apply", Some(&huge)),
    );
}

/// A store that cannot take a change: 503.
fn store_unavailable(api: &Api, db: &Path) {
    // The store cannot take a change: another process holds its write lock
    // past the agent's wait. Refused with 503, nothing changed.
    let lock = Command::new("python3")
        .args(["-c", "import sqlite3,sys,time\nc=sqlite3.connect(sys.argv[1],isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('locked',flush=True)\ntime.sleep(12)", db.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lock = lock;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(lock.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    let refused = api.call(
        "POST",
        "/v1/groups",
        &[],
        "",
        Some(json!({"name": "while-locked"})),
    );
    lock.kill().ok();
    lock.wait().ok();
    api.refused(503, "unavailable", None, &refused);
    assert!(
        !api.ok("GET", "/v1/groups", &[], "", None)
            .to_string()
            .contains("while-locked"),
        "a refused change left nothing"
    );
}

/// Everything made is removed through the API too.
fn teardown(api: &Api, w: &mut World) {
    let (nic, port) = (w.nic.clone(), w.port);
    let nic = nic.as_str();
    let _ = port;
    let (web, clone, rid, pl, prl) = (
        w.web.clone(),
        w.clone.clone(),
        w.rid.clone(),
        w.pl.clone(),
        w.prl.clone(),
    );
    // Tear down through the API too.
    api.ok(
        "POST",
        "/v1/groups/{group}/rules/revoke",
        &[&web],
        "",
        Some(json!({"rules": [rid]})),
    );
    api.ok("DELETE", "/v1/nics/{name}", &[nic], "", None);
    api.ok(
        "PATCH",
        "/v1/groups/{id}",
        &[&clone],
        "",
        Some(json!({"deletion_protection": false})),
    );
    api.ok("DELETE", "/v1/groups/{id}", &[&clone], "", None);
    api.ok("DELETE", "/v1/groups/{id}", &[&web], "", None);
    api.ok("DELETE", "/v1/prefix-lists/{id}", &[&pl], "", None);
    api.ok("DELETE", "/v1/port-lists/{id}", &[&prl], "", None);
    let snaps = api.ok("GET", "/v1/snapshots", &[], "", None);
    if let Some(s) = snaps.as_array().and_then(|s| s.first()) {
        let id = s["id"].to_string();
        api.ok("GET", "/v1/snapshots/{id}", &[&id], "", None);
    }
}

#[test]
fn the_socket_group_lets_its_members_in_and_nobody_else() {
    let pair = Pair::new().unwrap();
    // A group number no name needs: the member gets it from setpriv.
    let gid = 61_000 + std::process::id() % 1_000;
    let d = Daemon::start(
        bin(),
        pair.b.ns.name(),
        &["--socket-group", &gid.to_string()],
    )
    .unwrap();
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), gid);
    let member = [
        "setpriv", "--reuid", "65534", "--regid", "65534", "--groups",
    ];
    let member: Vec<String> = member
        .iter()
        .map(|s| (*s).to_owned())
        .chain([gid.to_string()])
        .collect();
    let member: Vec<&str> = member.iter().map(String::as_str).collect();
    let a = curl_as(&member, &d.socket, "GET", "/v1/groups", None);
    assert_eq!(a.status, 200, "{}", a.body);
    // The CLI too, as that user.
    let out = Command::new("setpriv")
        .args(&member[1..])
        .arg(bin())
        .arg("--socket")
        .arg(&d.socket)
        .arg("status")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the group: refused by the kernel, before the agent sees it.
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(bin())
        .arg("--socket")
        .arg(&d.socket)
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ermission denied"), "{err}");
}

#[test]
fn without_a_socket_group_only_root_gets_in() {
    let pair = Pair::new().unwrap();
    let d = Daemon::start(bin(), pair.b.ns.name(), &[]).unwrap();
    assert_eq!(
        std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(bin())
        .arg("--socket")
        .arg(&d.socket)
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ermission denied"));
}

#[test]
fn a_socket_group_the_directory_keeps_out_is_warned_about() {
    // As under the unit: the socket's directory exists, 0700 and root's
    // (`RuntimeDirectory=`), which the agent does not change.
    let pair = Pair::new().unwrap();
    let gid = (61_000 + std::process::id() % 1_000).to_string();
    let d = Daemon::new(bin(), pair.b.ns.name(), &[]).unwrap();
    let dir = d.socket.parent().unwrap().to_owned();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (socket, store) = (
        d.socket.display().to_string(),
        d.store.display().to_string(),
    );
    // The warning comes before the agent serves: read as its ready line.
    let (_agent, line) = AgentProcess::start(
        bin(),
        &[
            "--socket",
            &socket,
            "run",
            "--netns",
            pair.b.ns.name(),
            "--store",
            &store,
            "--socket-group",
            &gid,
        ],
        "cannot enter",
        false,
    )
    .unwrap();
    assert!(line.contains("RuntimeDirectoryMode=0755"), "{line}");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700,
        "the agent changed a directory it did not make"
    );
}

#[test]
fn the_read_only_socket_serves_reads_to_its_group_and_refuses_changes() {
    let pair = Pair::new().unwrap();
    let gid = (61_000 + std::process::id() % 1_000).to_string();
    let mut d = Daemon::new(bin(), pair.b.ns.name(), &[]).unwrap();
    let ro = d.socket.with_file_name("read-only.sock");
    let ro_text = ro.display().to_string();
    d.restart_with(&[
        "--read-only-socket",
        &ro_text,
        "--read-only-socket-group",
        &gid,
    ])
    .unwrap();
    let web = d.group("web");
    // The main socket stays root's; the read-only one is the group's.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d.socket), 0o600);
    assert_eq!(mode(&ro), 0o660);
    let member = [
        "setpriv", "--reuid", "65534", "--regid", "65534", "--groups", &gid,
    ];
    for target in ["/v1/groups", "/v1/status", "/v1/stats", "/v1/sessions"] {
        let a = curl_as(&member, &ro, "GET", target, None);
        assert_eq!(a.status, 200, "{target}: {}", a.body);
    }
    let a = curl_as(&member, &ro, "GET", &format!("/v1/groups/{web}"), None);
    assert_eq!(a.status, 200, "{}", a.body);
    // Every change is refused there, before it is decoded: nothing changes.
    for (method, target, body) in [
        ("POST", "/v1/groups".to_owned(), Some(r#"{"name": "x"}"#)),
        ("DELETE", format!("/v1/groups/{web}"), None),
        ("DELETE", "/v1/sessions".to_owned(), None),
        ("POST", "/v1/verify".to_owned(), Some("{}")),
    ] {
        let a = curl_as(&member, &ro, method, &target, body);
        assert_eq!(a.status, 403, "{method} {target}: {}", a.body);
        assert_eq!(a.error().0, "read_only", "{}", a.body);
    }
    assert!(d.ok(&["group", "list"]).contains(&web));
    // The CLI on it: reads work, a change says why not.
    let cli = |args: &[&str]| {
        Command::new("setpriv")
            .args(&member[1..])
            .arg(bin())
            .arg("--socket")
            .arg(&ro)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(cli(&["group", "list"]).status.success());
    let out = cli(&["group", "create", "y"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("read-only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the group the kernel refuses; and the member cannot reach
    // the main socket.
    let refused = |prefix: &[&str], socket: &Path| {
        let out = Command::new(prefix[0])
            .args(&prefix[1..])
            .args(["curl", "-sS", "--unix-socket"])
            .arg(socket)
            .arg("http://sg/v1/groups")
            .output()
            .unwrap();
        assert!(
            !out.status.success() && out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    refused(
        &[
            "setpriv",
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
        ],
        &ro,
    );
    refused(&member, &d.socket);
}

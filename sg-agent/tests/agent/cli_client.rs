//! The command line as a client of the daemon's API, against a fake daemon:
//! a Unix socket in a thread that reads each HTTP request, decodes it with
//! the API's own route table, records it and answers with a canned reply. Checks the request each command sends, the tables
//! printed from answers, `--json`, and how errors reach the user.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write as _},
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use serde_json::{Value, json};
use sg_agent::api::{
    ApiError, ErrorKind, GroupCreate, GroupRequest, NicRequest, ObserveRequest, PortListRequest,
    PrefixListRequest, Request, RuleRequest, RuleText, SessionFilter, SessionRequest,
    SnapshotRequest, StateRequest, TraceText, reply, routes,
};

/// A unique path under the temporary directory (pid plus a counter).
fn temp_path(what: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "sg-cli-{}-{}-{what}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A fake `sg-agent run`: answers every HTTP request with `answer`.
struct FakeDaemon {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<String>>>,
}

/// One HTTP request from `reader`: its method, target and body; `None` at
/// the end of the connection.
fn http_request(reader: &mut impl BufRead) -> Option<(String, String, Vec<u8>)> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let mut words = line.split_whitespace();
    let (method, target) = (words.next()?.to_owned(), words.next()?.to_owned());
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((method, target, body))
}

/// The request the CLI sent, as JSON (or why the route table refused it).
fn decoded(method: &str, target: &str, body: &[u8]) -> (String, bool) {
    let (path, query) = target
        .split_once('?')
        .map_or((target, None), |(p, q)| (p, Some(q)));
    let request = routes::find(method, path)
        .and_then(|(route, params)| routes::decode(route, params, query, body));
    match request {
        Ok(r) => (serde_json::to_string(&r).unwrap(), r.op() == "session_list"),
        Err(e) => (format!("{method} {target}: {e}"), false),
    }
}

/// The HTTP answer for a canned `{"ok": …}` or `{"error": …}` (anything
/// else is sent as it is, with status 200); a listing of sessions streams.
fn http_answer(answer: &str, stream: bool) -> Vec<u8> {
    let canned: Option<Value> = serde_json::from_str(answer).ok();
    let (status, kind, body) = match canned {
        Some(Value::Object(mut m)) if m.contains_key("ok") => {
            let v = m.remove("ok").unwrap();
            match v {
                Value::Array(rows) if stream => (
                    200,
                    "application/x-ndjson",
                    rows.iter().map(|r| r.to_string() + "\n").collect(),
                ),
                v => (200, "application/json", v.to_string()),
            }
        }
        Some(Value::Object(m)) if m.contains_key("error") => {
            let e = ApiError::new(ErrorKind::Invalid, None, m["error"].as_str().unwrap());
            (400, "application/json", serde_json::to_string(&e).unwrap())
        }
        _ => (200, "application/json", answer.to_owned()),
    };
    format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl FakeDaemon {
    fn start(answer: &str) -> Self {
        let path = temp_path("api.sock");
        let listener = UnixListener::bind(&path).expect("bind the fake socket");
        // Non-blocking accept, so the thread ends when told even if no
        // client ever came (a command refused before calling).
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let answer = answer.to_owned();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut received = Vec::new();
                loop {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            let mut writer = stream.try_clone().unwrap();
                            let mut reader = BufReader::new(stream);
                            while let Some((method, target, body)) = http_request(&mut reader) {
                                let (request, stream) = decoded(&method, &target, &body);
                                received.push(request);
                                if writer.write_all(&http_answer(&answer, stream)).is_err() {
                                    break;
                                }
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            if stop.load(Ordering::Relaxed) {
                                return received;
                            }
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                }
            })
        };
        Self {
            path,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the daemon and returns the request lines it received.
    fn requests(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("the fake daemon thread")
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn ok(result: &Value) -> String {
    json!({ "ok": result }).to_string()
}

/// A command line split at blanks, except inside single quotes.
fn argv(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut word: Option<String> = None;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                word.get_or_insert_default();
            }
            c if c.is_whitespace() && !quoted => args.extend(word.take()),
            c => word.get_or_insert_default().push(c),
        }
    }
    args.extend(word);
    args
}

/// Runs `sg-agent --socket SOCKET LINE`.
fn sg_agent(socket: &Path, line: &str, stdin: Option<&str>, dir: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sg-agent"));
    cmd.arg("--socket")
        .arg(socket)
        .args(argv(line))
        .env_remove("SG_AGENT_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().expect("run sg-agent");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Runs `sg-agent LINE` against a daemon that answers `answer`; returns the
/// requests it received (parsed) and the command's output.
fn exchange_with(
    answer: &str,
    line: &str,
    stdin: Option<&str>,
    dir: Option<&Path>,
) -> (Vec<Request>, Output) {
    let daemon = FakeDaemon::start(answer);
    let out = sg_agent(&daemon.path, line, stdin, dir);
    let requests = daemon
        .requests()
        .iter()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a Request: {line}: {e}"))
        })
        .collect();
    (requests, out)
}

fn exchange(answer: &str, line: &str) -> (Vec<Request>, Output) {
    exchange_with(answer, line, None, None)
}

/// Stdout of a command that must succeed.
fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn rule_json(id: &str, direction: &str, ports: &Value, peer: &Value) -> Value {
    json!({
        "id": id, "direction": direction, "action": "Accept", "priority": 1,
        "protocol": "TCP", "ports": ports, "peer": peer,
        "source_ports": null, "local": null, "description": ""
    })
}

fn group_json(id: &str, name: &str, rules: &[Value]) -> Value {
    json!({
        "id": id, "name": name, "description": "", "type": "basic",
        "inner_policy": "Accept", "deletion_protection": false, "managed": false,
        "tags": {}, "rules": rules
    })
}

fn listed_nic() -> Value {
    json!({
        "binding": {
            "name": "eth0", "mode": "local", "addresses": ["10.0.0.2", "fd00::2"],
            "extra_allowed": [], "anti_spoof": null, "groups": ["sg-b", "sg-a"]
        },
        "ifindex": 7, "attached": true, "version": 3
    })
}

fn text(direction: &str, protocol: &str, peer: &str) -> RuleText {
    RuleText {
        direction: direction.to_owned(),
        protocol: protocol.to_owned(),
        peer: peer.to_owned(),
        ..RuleText::default()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|&s| s.to_owned()).collect()
}

#[test]
fn argv_splits_at_blanks_outside_quotes() {
    assert_eq!(
        argv("group create web --description 'the web tier' --tag ''"),
        [
            "group",
            "create",
            "web",
            "--description",
            "the web tier",
            "--tag",
            ""
        ]
    );
}

/// Runs each command line against a daemon answering its canned result and
/// checks it sent exactly the expected request and succeeded.
fn check_requests(cases: Vec<(&str, Request, Value)>) {
    for (line, expected, answer) in cases {
        let (requests, out) = exchange(&ok(&answer), line);
        assert!(
            out.status.success(),
            "{line}: exit {:?}, stderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(requests, vec![expected], "{line}");
    }
}

#[test]
fn group_commands_send_their_requests() {
    let id = json!({"id": "sg-1"});
    let empty = json!([]);
    check_requests(vec![
        (
            "group create web --description 'the web tier' --type enterprise --inner-policy Drop --deletion-protection --tag env=prod --tag team=net=ops --template Sys-WebServer",
            Request::Group(GroupRequest::Create(GroupCreate {
                name: "web".into(),
                description: "the web tier".into(),
                kind: Some("enterprise".into()),
                inner_policy: Some("Drop".into()),
                deletion_protection: true,
                tags: BTreeMap::from([
                    ("env".into(), "prod".into()),
                    ("team".into(), "net=ops".into()),
                ]),
                template: Some("Sys-WebServer".into()),
            })),
            id.clone(),
        ),
        (
            "group create plain",
            Request::Group(GroupRequest::Create(GroupCreate {
                name: "plain".into(),
                description: String::new(),
                kind: None,
                inner_policy: None,
                deletion_protection: false,
                tags: BTreeMap::new(),
                template: None,
            })),
            id.clone(),
        ),
        (
            "group list",
            Request::Group(GroupRequest::List),
            empty.clone(),
        ),
        (
            "group show sg-1",
            Request::Group(GroupRequest::Show { id: "sg-1".into() }),
            json!({"group": group_json("sg-1", "web", &[]), "members": []}),
        ),
        (
            "group modify sg-1 --name web2 --deletion-protection false --clear-tags",
            Request::Group(GroupRequest::Modify {
                id: "sg-1".into(),
                name: Some("web2".into()),
                description: None,
                deletion_protection: Some(false),
                tags: Some(BTreeMap::new()),
            }),
            id.clone(),
        ),
        (
            "group modify sg-1 --description d",
            Request::Group(GroupRequest::Modify {
                id: "sg-1".into(),
                name: None,
                description: Some("d".into()),
                deletion_protection: None,
                tags: None,
            }),
            id.clone(),
        ),
        (
            "group set-inner-policy sg-1 Drop",
            Request::Group(GroupRequest::SetInnerPolicy {
                id: "sg-1".into(),
                policy: "Drop".into(),
            }),
            id.clone(),
        ),
        (
            "group delete sg-1",
            Request::Group(GroupRequest::Delete { id: "sg-1".into() }),
            json!({"deleted": "sg-1"}),
        ),
        (
            "group clone sg-1 --name copy --keep-rules",
            Request::Group(GroupRequest::Clone {
                id: "sg-1".into(),
                name: Some("copy".into()),
                keep_rules: true,
                copy_tags: false,
            }),
            json!({"id": "sg-2"}),
        ),
        (
            "group health",
            Request::Group(GroupRequest::Health { id: None }),
            empty.clone(),
        ),
    ]);
}

#[test]
fn rule_commands_send_their_requests() {
    let empty = json!([]);
    check_requests(vec![
        (
            "rule add sg-1 --direction ingress --protocol TCP --port-range 22/22 --peer 10.0.0.0/8 --policy Drop --priority 5 --source-port-range 1024/65535 --local 10.0.0.2 --description ssh",
            Request::Rule(RuleRequest::Authorize {
                group: "sg-1".into(),
                rules: vec![RuleText {
                    policy: Some("Drop".into()),
                    priority: Some("5".into()),
                    port_range: Some("22/22".into()),
                    source_port_range: Some("1024/65535".into()),
                    local: Some("10.0.0.2".into()),
                    description: Some("ssh".into()),
                    ..text("ingress", "TCP", "10.0.0.0/8")
                }],
            }),
            json!({"ids": ["sgr-1"]}),
        ),
        (
            "rule add sg-1 --direction egress --protocol ICMP --port-range -1/-1 --peer pl-office",
            Request::Rule(RuleRequest::Authorize {
                group: "sg-1".into(),
                rules: vec![RuleText {
                    port_range: Some("-1/-1".into()),
                    ..text("egress", "ICMP", "pl-office")
                }],
            }),
            json!({"ids": ["sgr-2"]}),
        ),
        (
            "rule remove sg-1 sgr-1 sgr-2",
            Request::Rule(RuleRequest::Revoke {
                group: "sg-1".into(),
                rules: strings(&["sgr-1", "sgr-2"]),
            }),
            json!({"revoked": ["sgr-1", "sgr-2"]}),
        ),
        (
            "rule modify sg-1 sgr-1 --direction egress --protocol UDP --peer sg-2",
            Request::Rule(RuleRequest::Modify {
                group: "sg-1".into(),
                rule: "sgr-1".into(),
                spec: text("egress", "UDP", "sg-2"),
            }),
            json!({"id": "sgr-1"}),
        ),
        (
            "rule list --group sg-1",
            Request::Rule(RuleRequest::List {
                group: Some("sg-1".into()),
                nic: None,
            }),
            empty.clone(),
        ),
        (
            "rule list --nic eth0",
            Request::Rule(RuleRequest::List {
                group: None,
                nic: Some("eth0".into()),
            }),
            empty.clone(),
        ),
        (
            "rule export sg-1 --format csv --region cn-hangzhou",
            Request::Rule(RuleRequest::Export {
                group: "sg-1".into(),
                format: "csv".into(),
                region: Some("cn-hangzhou".into()),
            }),
            json!({"file_name": "sg-1.csv", "text": "a,b\n"}),
        ),
    ]);
}

#[test]
fn nic_commands_send_their_requests() {
    let nic = json!({"nic": "eth0"});
    check_requests(vec![
        (
            "nic bind eth0 --mode local --address 10.0.0.2 --address fd00::2 --group sg-b --group sg-a --anti-spoof on --extra-allowed 10.9.0.0/16",
            Request::Nic(NicRequest::Bind {
                name: "eth0".into(),
                mode: "local".into(),
                addresses: strings(&["10.0.0.2", "fd00::2"]),
                extra_allowed: strings(&["10.9.0.0/16"]),
                anti_spoof: Some(true),
                groups: strings(&["sg-b", "sg-a"]),
            }),
            nic.clone(),
        ),
        (
            "nic unbind eth0",
            Request::Nic(NicRequest::Unbind {
                name: "eth0".into(),
            }),
            nic.clone(),
        ),
        (
            "nic join eth0 sg-c",
            Request::Nic(NicRequest::Join {
                name: "eth0".into(),
                group: "sg-c".into(),
            }),
            nic.clone(),
        ),
        (
            "nic leave eth0 sg-c",
            Request::Nic(NicRequest::Leave {
                name: "eth0".into(),
                group: "sg-c".into(),
            }),
            nic.clone(),
        ),
        (
            "nic set-groups eth0 --group sg-z --group sg-a",
            Request::Nic(NicRequest::SetGroups {
                name: "eth0".into(),
                groups: strings(&["sg-z", "sg-a"]),
            }),
            nic.clone(),
        ),
        (
            "nic set-addresses eth0 --address 10.0.0.3",
            Request::Nic(NicRequest::SetAddresses {
                name: "eth0".into(),
                addresses: strings(&["10.0.0.3"]),
                extra_allowed: vec![],
            }),
            nic.clone(),
        ),
        (
            "nic list",
            Request::Nic(NicRequest::List),
            json!([listed_nic()]),
        ),
        (
            "nic show eth0",
            Request::Nic(NicRequest::Show {
                name: "eth0".into(),
            }),
            listed_nic(),
        ),
    ]);
}

#[test]
fn prefix_and_port_list_commands_send_their_requests() {
    let empty = json!([]);
    check_requests(vec![
        (
            "prefix-list create office --family ipv4 --max-entries 10 --entry '10.0.0.0/8 office' --entry 192.168.0.0/16",
            Request::PrefixList(PrefixListRequest::Create {
                name: "office".into(),
                description: String::new(),
                family: "ipv4".into(),
                max_entries: 10,
                entries: strings(&["10.0.0.0/8 office", "192.168.0.0/16"]),
            }),
            json!({"id": "pl-1"}),
        ),
        (
            "prefix-list modify pl-1 --max-entries 20",
            Request::PrefixList(PrefixListRequest::Modify {
                id: "pl-1".into(),
                name: None,
                description: None,
                max_entries: Some(20),
                entries: None,
            }),
            json!({"id": "pl-1"}),
        ),
        (
            "prefix-list modify pl-1 --clear-entries",
            Request::PrefixList(PrefixListRequest::Modify {
                id: "pl-1".into(),
                name: None,
                description: None,
                max_entries: None,
                entries: Some(vec![]),
            }),
            json!({"id": "pl-1"}),
        ),
        (
            "prefix-list delete pl-1",
            Request::PrefixList(PrefixListRequest::Delete { id: "pl-1".into() }),
            json!({"deleted": "pl-1"}),
        ),
        (
            "prefix-list list",
            Request::PrefixList(PrefixListRequest::List),
            empty.clone(),
        ),
        (
            "prefix-list show pl-1",
            Request::PrefixList(PrefixListRequest::Show { id: "pl-1".into() }),
            json!({"id": "pl-1", "name": "office", "description": "", "family": "IPv4",
                   "max_entries": 10, "entries": [{"cidr": "10.0.0.0/8", "description": "hq"}]}),
        ),
        (
            "port-list create web --max-entries 5 --entry '80/80 web' --description 'web ports'",
            Request::PortList(PortListRequest::Create {
                name: "web".into(),
                description: "web ports".into(),
                max_entries: 5,
                entries: strings(&["80/80 web"]),
            }),
            json!({"id": "prl-1"}),
        ),
        (
            "port-list modify prl-1 --entry 443/443",
            Request::PortList(PortListRequest::Modify {
                id: "prl-1".into(),
                name: None,
                description: None,
                max_entries: None,
                entries: Some(strings(&["443/443"])),
            }),
            json!({"id": "prl-1"}),
        ),
        (
            "port-list delete prl-1",
            Request::PortList(PortListRequest::Delete { id: "prl-1".into() }),
            json!({"deleted": "prl-1"}),
        ),
        (
            "port-list list",
            Request::PortList(PortListRequest::List),
            empty.clone(),
        ),
        (
            "port-list show prl-1",
            Request::PortList(PortListRequest::Show { id: "prl-1".into() }),
            json!({"id": "prl-1", "name": "web", "description": "", "max_entries": 5,
                   "entries": [{"range": "80/80", "description": ""}]}),
        ),
    ]);
}

#[test]
fn settings_export_and_snapshot_commands_send_their_requests() {
    let empty = json!([]);
    let settings = json!({"platform_addresses": [], "block_port_25": true});
    let snapshot = json!({
        "id": 7, "group": "sg-1", "group_name": "web", "window_start": 0,
        "taken_at": 60, "rules": []
    });
    check_requests(vec![
        (
            "settings show",
            Request::State(StateRequest::SettingsShow),
            settings.clone(),
        ),
        (
            "settings set --block-port-25 false --platform-address 100.100.100.200 --tcp-established-secs 3600 --fragment-timeout-secs 45",
            Request::State(StateRequest::SettingsSet {
                block_port_25: Some(false),
                platform_addresses: Some(strings(&["100.100.100.200"])),
                snapshot_retention_days: None,
                tcp_handshake_secs: None,
                tcp_established_secs: Some(3600),
                tcp_closing_secs: None,
                other_secs: None,
                fragment_timeout_secs: Some(45),
            }),
            settings.clone(),
        ),
        (
            "export",
            Request::State(StateRequest::Export),
            json!({"groups": []}),
        ),
        (
            "snapshot list --group sg-1",
            Request::Snapshot(SnapshotRequest::List {
                group: Some("sg-1".into()),
            }),
            empty.clone(),
        ),
        (
            "snapshot show 7",
            Request::Snapshot(SnapshotRequest::Show { id: 7 }),
            snapshot,
        ),
        (
            "snapshot restore 7",
            Request::Snapshot(SnapshotRequest::Restore { id: 7 }),
            json!({"group": "sg-1", "rules": 2}),
        ),
    ]);
}

#[test]
fn observing_commands_send_their_requests() {
    let empty = json!([]);
    check_requests(vec![
        (
            "trace --nic eth0 --direction ingress --protocol TCP --src 10.0.0.1 --dst 10.0.0.2 --sport 40000 --dport 22",
            Request::Observe(ObserveRequest::Trace(TraceText {
                nic: "eth0".into(),
                direction: "ingress".into(),
                protocol: "TCP".into(),
                source: "10.0.0.1".into(),
                destination: "10.0.0.2".into(),
                source_port: Some(40000),
                destination_port: Some(22),
                icmp_type: None,
                icmp_code: None,
            })),
            json!({"verdict": "drop", "reason": "no rule", "rule": null, "group": null,
                   "priority": null, "detail": "nothing matched"}),
        ),
        (
            "trace --nic eth0 --direction egress --protocol ICMP --src 10.0.0.2 --dst 8.8.8.8 --icmp-type 8 --icmp-code 0",
            Request::Observe(ObserveRequest::Trace(TraceText {
                nic: "eth0".into(),
                direction: "egress".into(),
                protocol: "ICMP".into(),
                source: "10.0.0.2".into(),
                destination: "8.8.8.8".into(),
                source_port: None,
                destination_port: None,
                icmp_type: Some(8),
                icmp_code: Some(0),
            })),
            json!({"verdict": "accept", "reason": "rule", "rule": "sgr-1", "group": "sg-1",
                   "priority": 1, "detail": ""}),
        ),
        (
            "stats --nic eth0",
            Request::Observe(ObserveRequest::Stats {
                nic: Some("eth0".into()),
                dir: None,
                min_packets: None,
                limit: Some(sg_agent::api::STATS_PAGE),
                after: None,
            }),
            json!({"counters": {"ingress": {}, "egress": {}}, "nics": {}, "sessions": {},
                   "drop_log": null}),
        ),
        (
            "stats --dir egress --min-packets 1 --limit 20 --after eth0/ingress/sgr-1",
            Request::Observe(ObserveRequest::Stats {
                nic: None,
                dir: Some("egress".into()),
                min_packets: Some(1),
                limit: Some(20),
                after: Some("eth0/ingress/sgr-1".into()),
            }),
            json!({"counters": {"ingress": {}, "egress": {}}, "nics": {}, "sessions": {},
                   "drop_log": null}),
        ),
        (
            "status",
            Request::Observe(ObserveRequest::Status),
            serde_json::to_value(reply::Status::default()).unwrap(),
        ),
        (
            "sessions list --nic eth0 --proto tcp --addr 10.0.0.0/8 --port 22",
            Request::Session(SessionRequest::List {
                filter: SessionFilter {
                    nic: Some("eth0".into()),
                    protocol: Some("tcp".into()),
                    address: Some("10.0.0.0/8".into()),
                    port: Some(22),
                },
                limit: None,
            }),
            empty.clone(),
        ),
        (
            "sessions flush --all",
            Request::Session(SessionRequest::Flush {
                filter: SessionFilter::default(),
                all: true,
            }),
            json!({"flushed": 3}),
        ),
        (
            "sessions flush --proto udp",
            Request::Session(SessionRequest::Flush {
                filter: SessionFilter {
                    protocol: Some("udp".into()),
                    ..SessionFilter::default()
                },
                all: false,
            }),
            json!({"flushed": 1}),
        ),
    ]);
}

#[test]
fn group_list_prints_an_aligned_table() {
    let web = group_json(
        "sg-web",
        "web",
        &[
            rule_json(
                "sgr-1",
                "ingress",
                &json!({"range": "22/22"}),
                &json!({"cidr": "10.0.0.0/8"}),
            ),
            rule_json(
                "sgr-2",
                "ingress",
                &json!("any"),
                &json!({"group": "sg-db"}),
            ),
        ],
    );
    let mut db = group_json("sg-db", "database", &[]);
    db["type"] = json!("enterprise");
    db["inner_policy"] = json!("Drop");
    db["deletion_protection"] = json!(true);
    db["tags"] = json!({"env": "prod", "team": "data"});
    db["description"] = json!("the data tier");
    let answer = json!([web, db]);
    let (_, out) = exchange(&ok(&answer), "group list");
    assert_eq!(
        stdout(&out),
        "\
id      name      type        inner policy  rules  protected  tags                 description
sg-web  web       basic       Accept            2  no
sg-db   database  enterprise  Drop              0  yes        env=prod, team=data  the data tier
"
    );
}

#[test]
fn group_show_prints_fields_members_and_rules() {
    let answer = json!({
        "group": group_json(
            "sg-web",
            "web",
            &[rule_json("sgr-1", "ingress", &json!({"list": "prl-web"}), &json!({"prefix_list": "pl-office"}))],
        ),
        "members": ["eth0", "eth1"],
    });
    let (requests, out) = exchange(&ok(&answer), "group show sg-web");
    assert_eq!(
        requests,
        vec![Request::Group(GroupRequest::Show {
            id: "sg-web".into()
        })]
    );
    let text = stdout(&out);
    assert!(text.starts_with("id:                  sg-web\n"), "{text}");
    assert!(
        text.contains("\nmembers:             eth0, eth1\n"),
        "{text}"
    );
    assert!(text.contains("\ndeletion protection: no\n"), "{text}");
    assert!(
        text.contains("sgr-1  ingress    Accept         1  TCP       prl-web  pl-office"),
        "{text}"
    );
}

#[test]
fn json_prints_the_daemon_result_pretty() {
    let answer = json!([group_json("sg-web", "web", &[])]);
    let (_, out) = exchange(&ok(&answer), "group list --json");
    assert_eq!(
        stdout(&out),
        format!("{}\n", serde_json::to_string_pretty(&answer).unwrap())
    );
    // Writes too, and an answer this command could not print as a table.
    let answer = json!({"id": "sg-1", "extra": [1, 2]});
    let (_, out) = exchange(&ok(&answer), "group create web --json");
    let printed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(printed, answer);
}

#[test]
fn daemon_refusal_is_printed_verbatim_with_exit_1() {
    let message = "rule.port_range: 70000 is out of range 1..=65535";
    let answer = json!({ "error": message }).to_string();
    let (requests, out) = exchange(
        &answer,
        "rule add sg-1 --direction ingress --protocol TCP --peer 0.0.0.0/0 --port-range 70000/70000",
    );
    assert_eq!(requests.len(), 1);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("sg-agent: {message}\n")
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

#[test]
fn tables_escape_terminal_control_characters_whatever_the_daemon_sent() {
    // A group an older agent stored (or a daemon that does not check):
    // an ANSI colour, a clear screen, a right-to-left override, a newline.
    let mut g = group_json("sg-web", "web\u{1b}[31m", &[]);
    g["description"] = json!("ok\u{1b}[2J\u{202e}txt.exe\nline\u{85}");
    g["tags"] = json!({"k\u{7}": "v\u{2066}"});
    let answer = json!([g]);
    let (_, out) = exchange(&ok(&answer), "group list");
    let text = stdout(&out);
    assert!(
        !text
            .chars()
            .any(|c| c != '\n' && (c.is_control() || ('\u{202a}'..='\u{2069}').contains(&c))),
        "{text:?}"
    );
    for want in [
        "web\\u{1b}[31m",
        "ok\\u{1b}[2J\\u{202e}txt.exe\\u{a}line\\u{85}",
        "k\\u{7}=v\\u{2066}",
    ] {
        assert!(text.contains(want), "{text} lacks {want}");
    }
    assert_eq!(text.lines().count(), 2, "one line per group: {text}");
    // key: value lines too.
    let answer = json!({"group": g, "members": ["eth0"]});
    let (_, out) = exchange(&ok(&answer), "group show sg-web");
    let text = stdout(&out);
    assert!(
        text.contains("web\\u{1b}[31m") && !text.contains('\u{1b}'),
        "{text:?}"
    );
    // --json: the same JSON, the characters written as JSON escapes.
    let (_, out) = exchange(&ok(&json!([g])), "group list --json");
    let text = stdout(&out);
    assert!(
        text.contains("\\u001b[31m") && text.contains("\\u202e"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{202e}'),
        "{text:?}"
    );
    let back: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back, json!([g]), "the same document");
    // And an error that quotes what was sent.
    let answer = json!({ "error": "nic: NIC binding e\u{1b}]0;pwned\u{7} does not exist" });
    let (_, out) = exchange(&answer.to_string(), "nic show x");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("e\\u{1b}]0;pwned\\u{7}") && !err.contains('\u{1b}'),
        "{err:?}"
    );
}

#[test]
fn missing_socket_says_cannot_reach() {
    let socket = temp_path("absent.sock");
    let out = sg_agent(&socket, "group list", None, None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "sg-agent: cannot reach sg-agent at {}: ",
            socket.display()
        )),
        "{err}"
    );
    assert!(err.contains("sg-agent run"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn socket_comes_from_the_environment_without_the_option() {
    let daemon = FakeDaemon::start(&ok(&json!([])));
    let out = Command::new(env!("CARGO_BIN_EXE_sg-agent"))
        .args(["group", "list"])
        .env("SG_AGENT_SOCKET", &daemon.path)
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "no groups\n");
    assert_eq!(daemon.requests(), vec![r#"{"op":"group_list"}"#.to_owned()]);
}

#[test]
fn unexpected_answer_shape_is_an_error() {
    let (_, out) = exchange(&ok(&json!({"id": "sg-1"})), "group list");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shape this command does not know"), "{err}");
}

#[test]
fn rule_add_from_a_file_sends_every_rule() {
    let file = temp_path("rules.json");
    std::fs::write(
        &file,
        r#"[{"direction": "ingress", "protocol": "TCP", "port_range": "80/80", "peer": "0.0.0.0/0"},
            {"direction": "egress", "policy": "Drop", "protocol": "ALL", "peer": "::/0"}]"#,
    )
    .unwrap();
    let (requests, out) = exchange(
        &ok(&json!({"ids": ["sgr-1", "sgr-2"]})),
        &format!("rule add sg-1 --file {}", file.display()),
    );
    let _ = std::fs::remove_file(&file);
    assert_eq!(stdout(&out), "sgr-1\nsgr-2\n");
    assert_eq!(
        requests,
        vec![Request::Rule(RuleRequest::Authorize {
            group: "sg-1".into(),
            rules: vec![
                RuleText {
                    port_range: Some("80/80".into()),
                    ..text("ingress", "TCP", "0.0.0.0/0")
                },
                RuleText {
                    policy: Some("Drop".into()),
                    ..text("egress", "ALL", "::/0")
                },
            ],
        })]
    );
}

#[test]
fn rule_add_without_file_or_fields_sends_nothing() {
    let (requests, out) = exchange(
        &ok(&json!({"ids": []})),
        "rule add sg-1 --direction ingress",
    );
    assert_eq!(requests, vec![]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing --protocol, --peer"), "{err}");
}

#[test]
fn rule_import_reads_csv_and_lists_what_was_skipped() {
    let file = temp_path("rules.csv");
    std::fs::write(&file, "Direction,Policy\ningress,Accept\n").unwrap();
    let answer = json!({
        "imported": ["sgr-1"],
        "skipped": [{"index": 2, "reason": "rule.peer: missing"}],
    });
    let (requests, out) = exchange(
        &ok(&answer),
        &format!("rule import sg-1 -f {}", file.display()),
    );
    let _ = std::fs::remove_file(&file);
    assert_eq!(
        requests,
        vec![Request::Rule(RuleRequest::Import {
            group: "sg-1".into(),
            format: "csv".into(),
            text: "Direction,Policy\ningress,Accept\n".into(),
        })]
    );
    assert_eq!(
        stdout(&out),
        "imported 1 rule\nsgr-1\nskipped  reason\n      2  rule.peer: missing\n"
    );
}

#[test]
fn rule_export_goes_to_stdout_a_named_file_or_the_documents_name() {
    let answer = ok(&json!({"file_name": "sg-1_cn-hangzhou.json", "text": "[]\n"}));
    let (_, out) = exchange(&answer, "rule export sg-1");
    assert_eq!(stdout(&out), "[]\n");

    let file = temp_path("export.json");
    let (_, out) = exchange(
        &answer,
        &format!("rule export sg-1 --output {}", file.display()),
    );
    assert_eq!(stdout(&out), format!("wrote {}\n", file.display()));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "[]\n");
    let _ = std::fs::remove_file(&file);

    let dir = temp_path("export-dir");
    std::fs::create_dir(&dir).unwrap();
    let (_, out) = exchange_with(&answer, "rule export sg-1 --save", None, Some(&dir));
    assert_eq!(stdout(&out), "wrote sg-1_cn-hangzhou.json\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("sg-1_cn-hangzhou.json")).unwrap(),
        "[]\n"
    );
    // A name that is not a plain file name is refused, nothing written.
    let sneaky = ok(&json!({"file_name": "../escaped.json", "text": "[]\n"}));
    let (_, out) = exchange_with(&sneaky, "rule export sg-1 --save", None, Some(&dir));
    assert_eq!(out.status.code(), Some(1));
    assert!(!dir.join("../escaped.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rule_list_for_a_nic_prints_the_merged_order() {
    let row = |dir: &str, prio: u8, action: &str, rule: &str, peer: &str| {
        json!({"direction": dir, "priority": prio, "action": action, "group": "sg-1",
               "rule": rule, "protocol": "TCP", "ports": "22/22", "peer": peer,
               "source_ports": null, "local": null})
    };
    let answer = json!([
        row("ingress", 1, "Drop", "sgr-2", "10.1.0.0/16"),
        row("ingress", 10, "Accept", "sgr-1", "10.0.0.0/8"),
    ]);
    let (_, out) = exchange(&ok(&answer), "rule list --nic eth0");
    assert_eq!(
        stdout(&out),
        "\
direction  priority  action  group  rule   protocol  ports  peer         source ports  local
ingress           1  Drop    sg-1   sgr-2  TCP       22/22  10.1.0.0/16
ingress          10  Accept  sg-1   sgr-1  TCP       22/22  10.0.0.0/8
"
    );
}

#[test]
fn apply_reads_the_document_from_stdin_and_prints_the_changes() {
    let document = "groups:\n  - name: web\n";
    let answer = ok(&json!({"applied": false, "changes": ["+ group web", "+ rule sgr-1"]}));
    let (requests, out) = exchange_with(&answer, "apply -f - --dry-run", Some(document), None);
    assert_eq!(
        requests,
        vec![Request::State(StateRequest::Apply {
            document: document.into(),
            dry_run: true,
            allow_delete_all: false,
        })]
    );
    assert_eq!(
        stdout(&out),
        "+ group web\n+ rule sgr-1\n(dry run: nothing changed)\n"
    );
    let (_, out) = exchange_with(
        &ok(&json!({"applied": true, "changes": []})),
        "apply -f -",
        Some(document),
        None,
    );
    assert_eq!(stdout(&out), "no changes\n");
}

#[test]
fn apply_sends_allow_delete_all_and_a_dry_run_sweep_says_it_needs_it() {
    let document = "{}";
    let sweep =
        "! unbinds every NIC (an unbound NIC passes every packet): eth0 (needs allow_delete_all)";
    let answer = ok(&json!({
        "applied": false,
        "changes": [sweep, "- nic eth0: local; addresses 10.0.0.2; groups sg-1"],
        "warnings": [sweep],
    }));
    let (requests, out) = exchange_with(&answer, "apply -f - --dry-run", Some(document), None);
    assert_eq!(
        requests,
        vec![Request::State(StateRequest::Apply {
            document: document.into(),
            dry_run: true,
            allow_delete_all: false,
        })]
    );
    assert_eq!(
        stdout(&out),
        format!(
            "{sweep}\n- nic eth0: local; addresses 10.0.0.2; groups sg-1\n(dry run: nothing changed)\n(applying this needs --allow-delete-all)\n"
        )
    );
    let (requests, _) = exchange_with(
        &ok(&json!({"applied": true, "changes": [sweep], "warnings": [sweep]})),
        "apply -f - --allow-delete-all",
        Some(document),
        None,
    );
    assert_eq!(
        requests,
        vec![Request::State(StateRequest::Apply {
            document: document.into(),
            dry_run: false,
            allow_delete_all: true,
        })]
    );
}

#[test]
fn snapshot_list_prints_times_in_utc() {
    let answer = json!([{
        "id": 3, "group": "sg-1", "group_name": "web",
        "window_start": 1_709_164_800, "taken_at": 1_709_251_199, "rules": 12
    }]);
    let (_, out) = exchange(&ok(&answer), "snapshot list");
    assert_eq!(
        stdout(&out),
        "\
id  group  name  window start (UTC)   taken at (UTC)       rules
 3  sg-1   web   2024-02-29 00:00:00  2024-02-29 23:59:59     12
"
    );
}

#[test]
fn session_flush_without_a_filter_is_refused_before_calling() {
    let (requests, out) = exchange(&ok(&json!({"flushed": 0})), "sessions flush");
    assert_eq!(requests, vec![]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--all"));
}

#[test]
fn sessions_list_prints_endpoints_and_a_count() {
    let answer = json!([
        {"nic": "eth0", "protocol": "udp", "family": 4, "a": "10.0.0.2", "a_port": 5353,
         "b": "10.0.0.1", "b_port": 8080, "direction": "egress", "state": "active",
         "age_secs": 1.25, "idle_secs": 0.5, "version": 4},
        {"nic": "eth0", "protocol": "icmpv6", "family": 6, "a": "fd00::2", "a_port": 7,
         "b": "fd00::1", "b_port": 7, "direction": "egress", "state": "active",
         "age_secs": 12.0, "idle_secs": 12.0, "version": 4},
    ]);
    let (_, out) = exchange(&ok(&answer), "sessions list");
    assert_eq!(
        stdout(&out),
        "\
nic   proto   initiator      responder      dir     state   age    idle   version
eth0  udp     10.0.0.2:5353  10.0.0.1:8080  egress  active  1.2s   0.5s         4
eth0  icmpv6  [fd00::2]:7    [fd00::1]:7    egress  active  12.0s  12.0s        4
2 sessions
"
    );
    let (_, out) = exchange(&ok(&json!([])), "sessions list");
    assert_eq!(stdout(&out), "0 sessions\n");
    let (_, out) = exchange(&ok(&json!({"flushed": 1})), "sessions flush --nic eth0");
    assert_eq!(stdout(&out), "flushed 1 session\n");
}

#[test]
fn nic_list_prints_bindings_and_their_attachment() {
    let mut detached = listed_nic();
    detached["binding"]["name"] = json!("eth1");
    detached["binding"]["mode"] = json!("port");
    detached["binding"]["extra_allowed"] = json!(["10.9.0.0/16"]);
    detached["ifindex"] = json!(null);
    detached["attached"] = json!(false);
    detached["version"] = json!(null);
    let (_, out) = exchange(&ok(&json!([listed_nic(), detached])), "nic list");
    assert_eq!(
        stdout(&out),
        "\
nic   mode   ifindex  attached  version  anti-spoof  addresses                         groups
eth0  local        7  yes             3  no          10.0.0.2, fd00::2                 sg-b, sg-a
eth1  port         -  no              -  yes         10.0.0.2, fd00::2 (+10.9.0.0/16)  sg-b, sg-a
"
    );
}

#[test]
fn trace_prints_the_verdict_and_what_decided_it() {
    let answer = json!({"verdict": "accept", "reason": "rule", "rule": "sgr-1", "group": "sg-1",
                        "priority": 5, "detail": "ssh from the office"});
    let (_, out) = exchange(
        &ok(&answer),
        "trace --nic eth0 --direction ingress --protocol TCP --src 10.0.0.1 --dst 10.0.0.2 --dport 22",
    );
    assert_eq!(
        stdout(&out),
        "\
verdict:  accept
reason:   rule
rule:     sgr-1
group:    sg-1
priority: 5
detail:   ssh from the office
"
    );
}

#[test]
fn stats_prints_counters_rule_hits_reasons_and_sessions() {
    let answer = json!({
        "counters": {"ingress": {"packets": 10, "dropped": 2}, "egress": {"packets": 7, "dropped": 0}},
        "nics": {"eth0": {
            "rules": [{"dir": "ingress", "rule": "sgr-1", "packets": 8, "bytes": 640}],
            "reasons": [{"dir": "ingress", "reason": "no_rule", "packets": 2}],
        }},
        "sessions": {"created": 3},
        "drop_log": {"logged": 2, "suppressed": 0, "ringbuf_full": 0},
    });
    let (_, out) = exchange(&ok(&answer), "stats");
    let text = stdout(&out);
    for expected in [
        "counter  ingress  egress\n",
        "packets       10       7\n",
        "dropped        2       0\n",
        "\neth0: rule hits\ndir      rule   packets  bytes\ningress  sgr-1        8    640\n",
        "\neth0: decisions by reason\ndir      reason   packets\ningress  no_rule        2\n",
        "session event  count\ncreated            3\n",
        "drop log: 2 logged, 0 suppressed, 0 lost to a full ring buffer\n",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
}

#[test]
fn status_and_settings_print_key_value_lines() {
    let answer = serde_json::to_value(reply::Status {
        version: "0.1.0".into(),
        pid: 42,
        socket: "/run/sg-agent/api.sock".into(),
        programs: [("xdp".to_owned(), 12), ("tc_egress".to_owned(), 13)].into(),
        degraded: [("eth1".to_owned(), "gone".to_owned())].into(),
        ..reply::Status::default()
    })
    .unwrap();
    let (_, out) = exchange(&ok(&answer), "status");
    let text = stdout(&out);
    for line in [
        "version: 0.1.0",
        "pid: 42",
        "programs.xdp: 12",
        "programs.tc_egress: 13",
        "degraded.eth1: gone",
    ] {
        let words: Vec<&str> = line.split(' ').collect();
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == words),
            "{line:?} not in:\n{text}"
        );
    }
    let settings = json!({"platform_addresses": ["100.100.100.200"], "block_port_25": true,
                          "session_timeouts": {"other_secs": 910}});
    let (_, out) = exchange(&ok(&settings), "settings show");
    let text = stdout(&out);
    assert!(
        text.contains("platform_addresses:          100.100.100.200\n"),
        "{text}"
    );
    assert!(
        text.contains("session_timeouts.other_secs: 910\n"),
        "{text}"
    );
}

/// `sg-agent rule list | head` panicked with a backtrace once `head` had
/// read enough: a listing into a closed pipe now ends quietly, as other
/// command-line tools do.
#[test]
fn listing_into_a_closed_pipe_ends_quietly() {
    let groups: Vec<Value> = (0..2000)
        .map(|i| group_json(&format!("sg-{i:04}"), &format!("group-{i}"), &[]))
        .collect();
    let daemon = FakeDaemon::start(&ok(&json!(groups)));
    let (read, write) = std::io::pipe().unwrap();
    drop(read);
    let out = Command::new(env!("CARGO_BIN_EXE_sg-agent"))
        .args(["group", "list"])
        .env("SG_AGENT_SOCKET", &daemon.path)
        .stdout(write)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err, "", "nothing said on stderr");
    drop(daemon.requests());
}

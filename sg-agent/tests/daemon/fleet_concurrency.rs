//! Fleet mode under concurrency (issue 14, item 2): two hosts of one fleet,
//! several clients on each driving the CLI at once with random changes.
//! Every change is one etcd transaction conditioned on the fleet's
//! generation key, retried by the daemon when another host committed first
//! (`Service::change`) and refused only after its last attempt.
//!
//! The changes are chosen so that their order does not change the final
//! state (unique names and ports, a client removes only its own rules and
//! groups, moves only its own NIC, sets only its own setting), so the final
//! state of every serial order of the acknowledged changes is one state,
//! computed here from the clients' logs and compared with what both hosts
//! hold. The commits are counted too: the fleet's generation moves by
//! exactly one per acknowledged change.
//!
//! Then a limit counted across hosts: clients of both hosts race to add
//! rules to two groups that one NIC of one host has together, near the
//! 1,000 rules a NIC may have, until even one more rule is refused. The NIC
//! must end with exactly 1,000 rules, every refusal naming the limit.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    process::Output,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use sg_tests::{
    daemon::{Cli, Daemon},
    etcd::Etcd,
    policygen::Rng,
    topology::{Netns, Pair},
};

use crate::support::bin;

/// The seed of the clients' random changes (`SG_FLEETCC_SEED` overrides it;
/// the interleaving of the clients is the machine's, not the seed's).
const SEED: u64 = 0x00f1_ee7c_c000;
/// Clients on each of the two hosts, each with a NIC of its own.
const CLIENTS_PER_HOST: usize = 2;
/// Random changes per client: 4 × 260 = 1,040 in all.
const CHANGES_PER_CLIENT: usize = 260;
/// Groups every client adds rules to and moves its NIC in and out of.
const SHARED_GROUPS: usize = 4;
/// The settings the clients change, one each: (flag, field of `settings
/// show --json`).
const SETTINGS: [(&str, &str); 4] = [
    ("--tcp-handshake-secs", "tcp_handshake_secs"),
    ("--tcp-established-secs", "tcp_established_secs"),
    ("--tcp-closing-secs", "tcp_closing_secs"),
    ("--other-secs", "other_secs"),
];
/// What the daemon answers when another host kept committing first, after
/// its last attempt (`StoreError::Conflict`).
const CONFLICT: &str = "the fleet's policy changed while this change was made";
/// What it answers when its last attempt found the change naming groups
/// whose members on other hosts it had only counted, and read them: the
/// same kind (`conflict`), nothing changed, to be tried again.
const REREAD: &str = "whose members on other hosts were read only now; nothing changed";
/// What a count limit's refusal says (`PolicyError::LimitExceeded`).
const LIMIT: &str = "exceeds the limit of";
/// The rules a NIC may have, across its groups (`MAX_RULES_PER_NIC`).
const MAX_RULES_PER_NIC: usize = sg_policy::validate::MAX_RULES_PER_NIC;
/// Rules put into each of the two groups of the limit's race before it starts.
const PREFILL: usize = 450;

/// `--store` for the fleet of `etcd`.
fn store_url(etcd: &Etcd) -> String {
    let eps: Vec<String> = etcd
        .endpoints()
        .iter()
        .map(|e| e.trim_start_matches("http://").to_owned())
        .collect();
    format!("etcd://{}", eps.join(","))
}

/// Why a change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Refusal {
    /// Other hosts committed first on every attempt (or made it read
    /// members anew on the last).
    Conflict,
    /// A validation limit.
    Limit,
    /// Anything else: a failure of the test.
    Unexpected,
}

impl Refusal {
    fn of(stderr: &str) -> Self {
        if stderr.contains(CONFLICT) || stderr.contains(REREAD) {
            Self::Conflict
        } else if stderr.contains(LIMIT) {
            Self::Limit
        } else {
            Self::Unexpected
        }
    }
}

/// One change a client asked for.
#[derive(Debug, Clone)]
enum Change {
    CreateGroup { name: String },
    DeleteGroup { id: String },
    AddRule { group: String, port: u16 },
    RemoveRule { group: String, rule: String },
    Join { group: String },
    Leave { group: String },
    Setting { field: &'static str, value: u32 },
}

/// What became of a change.
#[derive(Debug, Clone)]
enum Outcome {
    /// Acknowledged, with the daemon's JSON answer.
    Acked(Value),
    Refused(Refusal, String),
}

/// A change and its outcome, in the client's order.
#[derive(Debug, Clone)]
struct Entry {
    change: Change,
    outcome: Outcome,
    took: Duration,
}

/// The description of the rule a client adds with port `port`: how a rule
/// is found again when its add was refused and no id came back.
fn description(client: usize, port: u16) -> String {
    format!("fleetcc client {client} port {port}")
}

/// Runs `args --json`; the JSON answer, or why it was refused.
fn run_json(cli: &Cli, args: &[&str]) -> Outcome {
    let mut a = args.to_vec();
    a.push("--json");
    let out: Output = cli.cli(&a);
    if out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        match serde_json::from_str(&text) {
            Ok(v) => Outcome::Acked(v),
            Err(e) => Outcome::Refused(
                Refusal::Unexpected,
                format!("succeeded with an answer that is not JSON ({e}): {text}"),
            ),
        }
    } else {
        let text = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        Outcome::Refused(Refusal::of(&text), text)
    }
}

/// One client: a thread's changes through one host's CLI, and what it
/// expects of the final state from the changes acknowledged to it.
struct Client {
    index: usize,
    cli: Cli,
    rng: Rng,
    /// Its NIC, bound on its host.
    nic: String,
    /// The shared groups.
    shared: Vec<String>,
    /// Its NIC's groups as its acknowledged changes left them, in order;
    /// the first, its own, is never left.
    groups: Vec<String>,
    /// Groups it created and did not delete.
    made: Vec<String>,
    /// Rules it added and did not remove: (group, rule id).
    rules: Vec<(String, String)>,
    /// Its setting.
    setting: (&'static str, &'static str),
    /// The next unique number (group names, ports, setting values).
    next: u32,
    log: Vec<Entry>,
}

impl Client {
    /// A unique port for this client's `k`th rule: 20000 + 2000 per client.
    fn port(&self, k: u32) -> u16 {
        u16::try_from(20_000 + 2_000 * self.index + k as usize).expect("a port")
    }

    /// Picks the next change from what the client may do now: of 100, 15
    /// create a group, 7 delete one it created, 30 add a rule to a shared
    /// group, 15 remove one of its rules, 23 move its NIC into or out of a
    /// shared group, 10 change its setting (a delete or remove with nothing
    /// to take creates or adds instead).
    fn pick(&mut self) -> Change {
        self.next += 1;
        let k = self.next;
        let roll = self.rng.below(100);
        if roll < 15 || (roll < 22 && self.made.is_empty()) {
            return Change::CreateGroup {
                name: format!("fleetcc-c{}-g{k}", self.index),
            };
        }
        if roll < 22 {
            let i = self.rng.below(self.made.len());
            return Change::DeleteGroup {
                id: self.made[i].clone(),
            };
        }
        if (52..67).contains(&roll) && !self.rules.is_empty() {
            let i = self.rng.below(self.rules.len());
            let (group, rule) = self.rules[i].clone();
            return Change::RemoveRule { group, rule };
        }
        if roll < 67 {
            let group = self.rng.pick(&self.shared).clone();
            return Change::AddRule {
                group,
                port: self.port(k),
            };
        }
        if roll < 90 {
            let group = self.rng.pick(&self.shared).clone();
            return if self.groups.contains(&group) {
                Change::Leave { group }
            } else {
                Change::Join { group }
            };
        }
        Change::Setting {
            field: self.setting.1,
            value: 1_000 + k,
        }
    }

    /// Asks for `change`, records its outcome and, if acknowledged, what it
    /// leaves.
    fn apply(&mut self, change: Change) {
        let started = Instant::now();
        let port_text;
        let value_text;
        let desc;
        let args: Vec<&str> = match &change {
            Change::CreateGroup { name } => vec!["group", "create", name],
            Change::DeleteGroup { id } => vec!["group", "delete", id],
            Change::AddRule { group, port } => {
                port_text = format!("{port}/{port}");
                desc = description(self.index, *port);
                vec![
                    "rule",
                    "add",
                    group,
                    "--direction",
                    "ingress",
                    "--protocol",
                    "TCP",
                    "--port-range",
                    &port_text,
                    "--peer",
                    "10.99.0.0/16",
                    "--description",
                    &desc,
                ]
            }
            Change::RemoveRule { group, rule } => vec!["rule", "remove", group, rule],
            Change::Join { group } => vec!["nic", "join", &self.nic, group],
            Change::Leave { group } => vec!["nic", "leave", &self.nic, group],
            Change::Setting { value, .. } => {
                value_text = value.to_string();
                vec!["settings", "set", self.setting.0, &value_text]
            }
        };
        let outcome = run_json(&self.cli, &args);
        let took = started.elapsed();
        if let Outcome::Acked(answer) = &outcome {
            match &change {
                Change::CreateGroup { .. } => match answer["id"].as_str() {
                    Some(id) => self.made.push(id.to_owned()),
                    None => panic!("group create answered without an id: {answer}"),
                },
                Change::DeleteGroup { id } => self.made.retain(|g| g != id),
                Change::AddRule { group, .. } => match answer["ids"][0].as_str() {
                    Some(id) => self.rules.push((group.clone(), id.to_owned())),
                    None => panic!("rule add answered without an id: {answer}"),
                },
                Change::RemoveRule { rule, .. } => self.rules.retain(|(_, r)| r != rule),
                Change::Join { group } => self.groups.push(group.clone()),
                Change::Leave { group } => self.groups.retain(|g| g != group),
                Change::Setting { .. } => {}
            }
        }
        self.log.push(Entry {
            change,
            outcome,
            took,
        });
    }
}

/// What a serial application of every acknowledged change leaves.
#[derive(Debug, Default)]
struct Expected {
    /// Every group id.
    groups: BTreeSet<String>,
    /// Names of groups whose creation was refused: in no state.
    refused_names: BTreeSet<String>,
    /// Each shared group's rules: id → description.
    rules: BTreeMap<String, BTreeMap<String, String>>,
    /// Descriptions of rules whose add was refused: in no state.
    refused_rules: BTreeSet<String>,
    /// Each client NIC's groups, in order.
    nics: BTreeMap<String, Vec<String>>,
    /// The settings the clients changed: field → last acknowledged value.
    settings: BTreeMap<&'static str, u32>,
    /// Acknowledged changes: the generation moves by as many.
    acked: usize,
}

impl Expected {
    fn of(initial: &BTreeSet<String>, shared: &[String], clients: &[Client]) -> Self {
        let mut e = Self {
            groups: initial.clone(),
            rules: shared
                .iter()
                .map(|g| (g.clone(), BTreeMap::new()))
                .collect(),
            ..Self::default()
        };
        for c in clients {
            e.nics.insert(c.nic.clone(), c.groups.clone());
            for entry in &c.log {
                let acked = matches!(entry.outcome, Outcome::Acked(_));
                e.acked += usize::from(acked);
                match (&entry.change, &entry.outcome) {
                    (Change::CreateGroup { .. }, Outcome::Acked(a)) => {
                        e.groups.insert(a["id"].as_str().expect("an id").to_owned());
                    }
                    (Change::CreateGroup { name }, Outcome::Refused(..)) => {
                        e.refused_names.insert(name.clone());
                    }
                    (Change::DeleteGroup { id }, Outcome::Acked(_)) => {
                        e.groups.remove(id);
                    }
                    (Change::AddRule { group, port }, Outcome::Acked(a)) => {
                        let id = a["ids"][0].as_str().expect("an id").to_owned();
                        let rules = e.rules.get_mut(group).expect("a shared group");
                        rules.insert(id, description(c.index, *port));
                    }
                    (Change::AddRule { port, .. }, Outcome::Refused(..)) => {
                        e.refused_rules.insert(description(c.index, *port));
                    }
                    (Change::RemoveRule { group, rule }, Outcome::Acked(_)) => {
                        e.rules.get_mut(group).expect("a shared group").remove(rule);
                    }
                    (Change::Setting { field, value }, Outcome::Acked(_)) => {
                        e.settings.insert(field, *value);
                    }
                    _ => {}
                }
            }
        }
        e
    }
}

/// One host of the fleet: its agent and the NICs its clients own.
struct Host {
    name: &'static str,
    daemon: Daemon,
    /// (NIC, its own group), one per client.
    nics: Vec<(String, String)>,
}

/// `settings show`, `group list`, `export` and the shared groups' `rule
/// list` and `group show` of one host, for comparing hosts.
fn fleet_view(d: &Daemon, shared: &[String]) -> Value {
    let mut export = export(d);
    // The NICs an export holds are the host's own; the rest is the fleet's.
    export["nics"] = Value::Null;
    let rules: Vec<Value> = shared
        .iter()
        .map(|g| d.json(&["rule", "list", "--group", g]))
        .collect();
    // Members are listed this host's first (`State::all_nics`): compared
    // as sets.
    let members: Vec<BTreeSet<String>> = shared
        .iter()
        .map(|g| {
            d.json(&["group", "show", g])["members"]
                .as_array()
                .expect("members")
                .iter()
                .map(|m| m.as_str().expect("a NIC").to_owned())
                .collect()
        })
        .collect();
    serde_json::json!({
        "settings": d.json(&["settings", "show"]),
        "groups": d.json(&["group", "list"]),
        "export": export,
        "rules": rules,
        "members": members,
    })
}

/// Where `a` and `b` differ: a JSON path and both values, for each
/// difference (arrays of one length compared element by element).
fn json_diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let null = Value::Null;
                let (va, vb) = (x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null));
                json_diff(&format!("{path}.{k}"), va, vb, out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                json_diff(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} / {b}")),
        _ => {}
    }
}

/// `export` (JSON without `--json`), parsed.
fn export(d: &Daemon) -> Value {
    serde_json::from_str(&d.ok(&["export"])).expect("export prints JSON")
}

/// The fleet's generation as etcd holds it.
fn etcd_generation(etcd: &Etcd) -> u64 {
    let out = etcd
        .etcdctl(&["get", "/sg/v1/policy/generation", "--print-value-only"])
        .expect("etcdctl get");
    out.trim().parse().unwrap_or(0)
}

/// The generation a host has in force.
fn host_generation(d: &Daemon) -> u64 {
    d.json(&["status"])["store_generation"]
        .as_u64()
        .expect("store_generation")
}

/// Makes one more interface in `ns` for a client's NIC: one end of a veth
/// pair whose both ends stay in `ns` (this kernel has no dummy driver), up.
fn extra_nic(ns: &Netns, name: &str) {
    let peer = format!("{name}p");
    ns.ip(&["link", "add", name, "type", "veth", "peer", "name", &peer])
        .unwrap();
    for n in [name, peer.as_str()] {
        ns.ip(&["link", "set", n, "up"]).unwrap();
    }
}

/// Rules of `group` as `group list --json` shows them: id → description.
fn rules_in(groups: &Value, group: &str) -> BTreeMap<String, String> {
    groups
        .as_array()
        .expect("a group list")
        .iter()
        .find(|g| g["id"] == group)
        .unwrap_or_else(|| panic!("group {group} is missing"))["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().expect("a rule id").to_owned(),
                r["description"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Every rule description in `groups`.
fn all_descriptions(groups: &Value) -> BTreeSet<String> {
    groups
        .as_array()
        .expect("a group list")
        .iter()
        .flat_map(|g| {
            g["rules"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|r| r["description"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

/// Checks one host's final state against `e`; returns what differs.
fn check_host(host: &Host, e: &Expected) -> Vec<String> {
    let d = &host.daemon;
    let mut wrong = Vec::new();
    let groups = d.json(&["group", "list"]);
    let ids: BTreeSet<String> = groups
        .as_array()
        .expect("a group list")
        .iter()
        .map(|g| g["id"].as_str().expect("a group id").to_owned())
        .collect();
    for missing in e.groups.difference(&ids) {
        wrong.push(format!("group {missing} acknowledged but missing"));
    }
    for extra in ids.difference(&e.groups) {
        wrong.push(format!("group {extra} present but not acknowledged"));
    }
    let names: BTreeSet<&str> = groups
        .as_array()
        .expect("a group list")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    for n in &e.refused_names {
        if names.contains(n.as_str()) {
            wrong.push(format!("group {n:?} refused but present"));
        }
    }
    for (g, want) in &e.rules {
        let have = rules_in(&groups, g);
        if &have != want {
            let missing: Vec<_> = want.keys().filter(|k| !have.contains_key(*k)).collect();
            let extra: Vec<_> = have.keys().filter(|k| !want.contains_key(*k)).collect();
            wrong.push(format!(
                "group {g}: rules missing {missing:?}, not acknowledged {extra:?}"
            ));
        }
        let listed = d.json(&["rule", "list", "--group", g]);
        let in_groups = groups
            .as_array()
            .and_then(|all| all.iter().find(|x| x["id"] == *g))
            .map(|x| &x["rules"]);
        if in_groups != Some(&listed) {
            wrong.push(format!("group {g}: rule list differs from group list"));
        }
        let members: BTreeSet<String> = d.json(&["group", "show", g])["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m.as_str().expect("a NIC").to_owned())
            .collect();
        let want_members: BTreeSet<String> = e
            .nics
            .iter()
            .filter(|(_, gs)| gs.contains(g))
            .map(|(n, _)| n.clone())
            .collect();
        if members != want_members {
            wrong.push(format!(
                "group {g}: members {members:?}, acknowledged {want_members:?}"
            ));
        }
    }
    let descriptions = all_descriptions(&groups);
    for r in &e.refused_rules {
        if descriptions.contains(r) {
            wrong.push(format!("rule {r:?} refused but present"));
        }
    }
    // The groups of the host's own NICs; the others' show in the members.
    for (nic, _) in &host.nics {
        let shown = d.json(&["nic", "show", nic]);
        let have: Vec<String> = shown["binding"]["groups"]
            .as_array()
            .expect("a binding's groups")
            .iter()
            .map(|g| g.as_str().expect("a group id").to_owned())
            .collect();
        if have != e.nics[nic] {
            wrong.push(format!(
                "NIC {nic}: groups {have:?}, acknowledged {:?}",
                e.nics[nic]
            ));
        }
    }
    let settings = d.json(&["settings", "show"]);
    for (field, want) in &e.settings {
        let have = settings["session_timeouts"][*field].as_u64();
        if have != Some(u64::from(*want)) {
            wrong.push(format!(
                "setting {field}: {have:?}, last acknowledged {want}"
            ));
        }
    }
    wrong
}

/// Checks that each client's rules appear in every group in the order its
/// acknowledgements came: a serial order of the commits exists that is
/// also each client's own.
fn check_rule_order(groups: &Value, clients: &[Client]) -> Vec<String> {
    let mut wrong = Vec::new();
    for c in clients {
        let acked: Vec<&str> = c
            .log
            .iter()
            .filter_map(|e| match (&e.change, &e.outcome) {
                (Change::AddRule { .. }, Outcome::Acked(a)) => a["ids"][0].as_str(),
                _ => None,
            })
            .collect();
        for g in groups.as_array().expect("a group list") {
            let order: Vec<&str> = g["rules"]
                .as_array()
                .expect("rules")
                .iter()
                .filter_map(|r| r["id"].as_str())
                .filter(|id| acked.contains(id))
                .collect();
            let mut by_ack = order.clone();
            by_ack.sort_by_key(|id| acked.iter().position(|a| a == id));
            if order != by_ack {
                wrong.push(format!(
                    "group {}: client {}'s rules stand in the order {order:?}, acknowledged {by_ack:?}",
                    g["id"], c.index
                ));
            }
        }
    }
    wrong
}

/// Counts of a run's outcomes, for the summary.
#[derive(Debug, Default)]
struct Tally {
    acked: usize,
    refused: BTreeMap<Refusal, usize>,
    unexpected: Vec<String>,
    took: Vec<Duration>,
}

impl Tally {
    fn merge(&mut self, other: Self) {
        self.acked += other.acked;
        for (k, n) in other.refused {
            *self.refused.entry(k).or_default() += n;
        }
        self.unexpected.extend(other.unexpected);
        self.took.extend(other.took);
    }

    fn add(&mut self, outcome: &Outcome, took: Duration, what: &str) {
        self.took.push(took);
        match outcome {
            Outcome::Acked(_) => self.acked += 1,
            Outcome::Refused(kind, text) => {
                *self.refused.entry(*kind).or_default() += 1;
                if *kind == Refusal::Unexpected {
                    self.unexpected.push(format!("{what}: {text}"));
                }
            }
        }
    }

    fn line(&mut self) -> String {
        self.took.sort();
        let pct = |p: usize| {
            self.took
                .get((self.took.len() * p / 100).min(self.took.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        let mut s = format!("{} acknowledged", self.acked);
        for (kind, n) in &self.refused {
            let _ = write!(s, ", {n} refused ({kind:?})");
        }
        let _ = write!(
            s,
            "; per call p50 {:?}, p99 {:?}, max {:?}",
            pct(50),
            pct(99),
            self.took.last().copied().unwrap_or_default()
        );
        s
    }
}

/// A file of ingress rules, one per port of `ports`, as `rule add --file`
/// reads them; returns its path.
fn batch_file(dir: &std::path::Path, tag: &str, ports: &[u16]) -> String {
    let rules: Vec<Value> = ports
        .iter()
        .map(|p| {
            serde_json::json!({
                "direction": "ingress",
                "protocol": "TCP",
                "port_range": format!("{p}/{p}"),
                "peer": "10.98.0.0/16",
                "description": format!("limit port {p}"),
            })
        })
        .collect();
    let path = dir.join(format!("{tag}.json"));
    std::fs::write(&path, serde_json::to_vec(&rules).unwrap()).unwrap();
    path.display().to_string()
}

/// One racer of the limit: adds batches to `group` through `cli`, halving
/// the batch at each refusal by the limit, until even one rule is refused.
/// Returns the rule ids acknowledged to it and its tally.
fn race(
    cli: &Cli,
    dir: &std::path::Path,
    tag: &str,
    group: &str,
    ports: &AtomicU32,
) -> (Vec<String>, Tally) {
    let mut tally = Tally::default();
    let mut acked = Vec::new();
    let mut batch = 8;
    for round in 0..400 {
        let first = ports.fetch_add(batch, Ordering::Relaxed);
        let list: Vec<u16> = (first..first + batch)
            .map(|p| u16::try_from(p).expect("a port"))
            .collect();
        let file = batch_file(dir, &format!("{tag}-{round}"), &list);
        let started = Instant::now();
        let outcome = run_json(cli, &["rule", "add", group, "--file", &file]);
        tally.add(&outcome, started.elapsed(), &format!("{tag} adds {batch}"));
        match &outcome {
            Outcome::Acked(a) => acked.extend(ids_of(a)),
            Outcome::Refused(Refusal::Limit, text) => {
                assert!(
                    text.contains(&format!("{LIMIT} {MAX_RULES_PER_NIC}")),
                    "{tag}: a limit other than the NIC's: {text}"
                );
                if batch == 1 {
                    return (acked, tally);
                }
                batch /= 2;
            }
            Outcome::Refused(Refusal::Conflict, _) => {}
            Outcome::Refused(Refusal::Unexpected, _) => return (acked, tally),
        }
    }
    panic!("{tag}: still adding rules after 400 rounds");
}

/// The fleet under test: two hosts serving the two ends of a pair, the
/// shared groups, and what was found wrong so far.
struct Fleet {
    // Dropped first: the agents clean up in the namespaces the pair owns.
    hosts: Vec<Host>,
    shared: Vec<String>,
    wrong: Vec<String>,
    pair: Pair,
    etcd: Etcd,
}

impl Fleet {
    /// Starts one etcd and an agent per end of a pair; makes the shared
    /// groups on the first host, and binds each client's NIC with a group
    /// of its own on its host. A host's first NIC is its end of the pair,
    /// the others veths of their own, so every NIC is compiled and attached.
    fn start() -> Self {
        let etcd = Etcd::single().unwrap();
        let url = store_url(&etcd);
        let pair = Pair::new().unwrap();
        let hosts: Vec<Host> = [("fcc-a", &pair.a), ("fcc-b", &pair.b)]
            .into_iter()
            .map(|(name, side)| Host {
                name,
                daemon: Daemon::start(bin(), side.ns.name(), &["--store", &url, "--host", name])
                    .unwrap(),
                nics: Vec::new(),
            })
            .collect();
        let shared = (0..SHARED_GROUPS)
            .map(|i| hosts[0].daemon.group(&format!("fleetcc-shared-{i}")))
            .collect();
        let mut fleet = Self {
            hosts,
            shared,
            wrong: Vec::new(),
            pair,
            etcd,
        };
        for h in 0..fleet.hosts.len() {
            let side = if h == 0 { &fleet.pair.a } else { &fleet.pair.b };
            let host = &mut fleet.hosts[h];
            for c in 0..CLIENTS_PER_HOST {
                let (nic, address) = if c == 0 {
                    (side.ifname.clone(), side.v4.to_string())
                } else {
                    let n = format!("{}{c}", host.name.replace('-', ""));
                    extra_nic(&side.ns, &n);
                    (n, format!("10.97.{h}.{c}"))
                };
                let own = host.daemon.group(&format!("fleetcc-{nic}"));
                host.daemon.bind(&nic, &[&address], &own);
                host.nics.push((nic, own));
            }
        }
        fleet
    }

    /// Waits (up to 10 s) until both hosts have etcd's generation in
    /// force; returns etcd's generation. Not getting there is wrong.
    fn converge(&mut self, when: &str) -> u64 {
        let mut last = (0, Vec::new());
        let ok = sg_tests::eventually(Duration::from_secs(10), || {
            let want = etcd_generation(&self.etcd);
            let have: Vec<u64> = self
                .hosts
                .iter()
                .map(|h| host_generation(&h.daemon))
                .collect();
            last = (want, have.clone());
            have.iter().all(|&g| g == want)
        });
        if !ok {
            self.wrong.push(format!(
                "{when}: the hosts did not converge in 10 s: etcd at generation {}, hosts at {:?}",
                last.0, last.1
            ));
        }
        last.0
    }

    /// The clients, one per NIC, each with its own seeded changes.
    fn clients(&self, seed: u64) -> Vec<Client> {
        let mut clients = Vec::new();
        for h in &self.hosts {
            for (nic, own) in &h.nics {
                let index = clients.len();
                clients.push(Client {
                    index,
                    cli: h.daemon.client(),
                    rng: Rng::new(seed ^ (index as u64 + 1)),
                    nic: nic.clone(),
                    shared: self.shared.clone(),
                    groups: vec![own.clone()],
                    made: Vec::new(),
                    rules: Vec::new(),
                    setting: SETTINGS[index % SETTINGS.len()],
                    next: 0,
                    log: Vec::new(),
                });
            }
        }
        clients
    }

    /// Every id of `group list` on the first host.
    fn group_ids(&self) -> BTreeSet<String> {
        self.hosts[0]
            .daemon
            .json(&["group", "list"])
            .as_array()
            .expect("a group list")
            .iter()
            .map(|g| g["id"].as_str().expect("a group id").to_owned())
            .collect()
    }

    /// Checks the state after the random changes: one state on both hosts,
    /// the serial application of the acknowledged changes, one commit each.
    fn check_random(&mut self, initial: &BTreeSet<String>, clients: &[Client], commits: u64) {
        let expected = Expected::of(initial, &self.shared, clients);
        if commits != expected.acked as u64 {
            self.wrong.push(format!(
                "the generation moved by {commits} for {} acknowledged changes",
                expected.acked
            ));
        }
        let views: Vec<Value> = self
            .hosts
            .iter()
            .map(|h| fleet_view(&h.daemon, &self.shared))
            .collect();
        let mut differ = Vec::new();
        json_diff("", &views[0], &views[1], &mut differ);
        let (a, b) = (self.hosts[0].name, self.hosts[1].name);
        self.wrong.extend(
            differ
                .iter()
                .take(20)
                .map(|d| format!("{a} and {b} differ at {d}")),
        );
        for h in &self.hosts {
            let found = check_host(h, &expected);
            self.wrong
                .extend(found.into_iter().map(|w| format!("{}: {w}", h.name)));
        }
        self.wrong
            .extend(check_rule_order(&views[0]["groups"], clients));
    }

    /// The limit counted across hosts: the first host's first NIC gets two
    /// fresh groups, filled to [`PREFILL`] rules each; then two racers per
    /// host, one per group, add until even one rule is refused. Checks that
    /// the NIC ends with exactly the limit, on both hosts, and that no host
    /// showed more meanwhile. Returns the summary line.
    fn limit_race(&mut self) -> String {
        let a = &self.hosts[0];
        let limited = a.nics[0].0.clone();
        let groups = [
            a.daemon.group("fleetcc-limit-1"),
            a.daemon.group("fleetcc-limit-2"),
        ];
        a.daemon.ok(&[
            "nic",
            "set-groups",
            &limited,
            "--group",
            &groups[0],
            "--group",
            &groups[1],
        ]);
        let mut acked: BTreeSet<String> = BTreeSet::new();
        for (i, g) in groups.iter().enumerate() {
            let from = 1 + i * PREFILL;
            let ports: Vec<u16> = (from..from + PREFILL)
                .map(|p| u16::try_from(p).expect("a port"))
                .collect();
            let file = batch_file(&a.daemon.dir, &format!("prefill-{i}"), &ports);
            let out = a.daemon.json(&["rule", "add", g, "--file", &file]);
            acked.extend(ids_of(&out));
        }
        self.converge("after the prefill");
        let started = Instant::now();
        let (raced, peak) = race_all(&self.hosts, &groups);
        let took = started.elapsed();
        let mut tally = Tally::default();
        for (ids, t) in raced {
            acked.extend(ids);
            tally.merge(t);
        }
        self.wrong.extend(tally.unexpected.iter().cloned());
        self.converge("after the limit's race");
        for h in &self.hosts {
            let listed = h.daemon.json(&["group", "list"]);
            let have: BTreeSet<String> = groups
                .iter()
                .flat_map(|g| rules_in(&listed, g).into_keys())
                .collect();
            if have.len() != MAX_RULES_PER_NIC || have != acked {
                self.wrong.push(format!(
                    "{}: the limited NIC's groups hold {} rules ({} acknowledged, {} of them missing, {} not acknowledged), not exactly {MAX_RULES_PER_NIC}",
                    h.name,
                    have.len(),
                    acked.len(),
                    acked.difference(&have).count(),
                    have.difference(&acked).count()
                ));
            }
        }
        let a = &self.hosts[0];
        let merged = a.daemon.json(&["rule", "list", "--nic", &limited]);
        let merged = merged.as_array().map_or(0, Vec::len);
        if merged != MAX_RULES_PER_NIC {
            self.wrong.push(format!(
                "{}: rule list --nic {limited} has {merged} rules, not {MAX_RULES_PER_NIC}",
                a.name
            ));
        }
        if peak > MAX_RULES_PER_NIC {
            self.wrong.push(format!(
                "a host showed the limited NIC's groups with {peak} rules during the race"
            ));
        }
        format!(
            "limit race: 4 racers, {took:.1?}: {}; NIC {limited} ends with {merged} rules (most seen during the race {peak})",
            tally.line()
        )
    }
}

/// Runs the limit's racers, two per host (one per group), while a watcher
/// per host reads the two groups' rule counts; returns what each racer got
/// acknowledged and the most rules any watcher saw.
fn race_all(hosts: &[Host], groups: &[String; 2]) -> (Vec<(Vec<String>, Tally)>, usize) {
    let ports = AtomicU32::new(u32::try_from(1 + 2 * PREFILL).expect("a port"));
    let racing = AtomicBool::new(true);
    let peak = Mutex::new(0usize);
    let raced = std::thread::scope(|s| {
        let watchers: Vec<_> = hosts
            .iter()
            .map(|h| {
                let cli = h.daemon.client();
                let (racing, peak) = (&racing, &peak);
                s.spawn(move || {
                    while racing.load(Ordering::Relaxed) {
                        if let Outcome::Acked(listed) = run_json(&cli, &["group", "list"]) {
                            let n: usize = groups.iter().map(|g| rules_in(&listed, g).len()).sum();
                            let mut p = peak.lock().unwrap();
                            *p = (*p).max(n);
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                })
            })
            .collect();
        let racers: Vec<_> = hosts
            .iter()
            .flat_map(|h| groups.iter().enumerate().map(move |(i, g)| (h, i, g)))
            .map(|(h, i, g)| {
                let cli = h.daemon.client();
                let dir = h.daemon.dir.clone();
                let tag = format!("{}-limit-{i}", h.name);
                let ports = &ports;
                s.spawn(move || race(&cli, &dir, &tag, g, ports))
            })
            .collect();
        let out: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        racing.store(false, Ordering::Relaxed);
        for w in watchers {
            w.join().unwrap();
        }
        out
    });
    let peak = *peak.lock().unwrap();
    (raced, peak)
}

/// The rule ids of a `rule add` answer.
fn ids_of(answer: &Value) -> Vec<String> {
    answer["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|i| i.as_str().expect("a rule id").to_owned())
        .collect()
}

/// 1,040 random changes from four clients on two hosts at once, then the
/// limit's race; prints a summary and fails on anything wrong.
#[test]
fn concurrent_changes_from_two_hosts_lose_nothing_and_keep_the_limits() {
    let seed = std::env::var("SG_FLEETCC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let mut fleet = Fleet::start();
    let gen0 = fleet.converge("after the setup");
    let initial = fleet.group_ids();
    let mut clients = fleet.clients(seed);
    let started = Instant::now();
    std::thread::scope(|s| {
        for c in &mut clients {
            s.spawn(move || {
                for _ in 0..CHANGES_PER_CLIENT {
                    let change = c.pick();
                    c.apply(change);
                }
            });
        }
    });
    let random_took = started.elapsed();
    let generation = fleet.converge("after the random changes");
    let converged = started.elapsed();
    fleet.check_random(&initial, &clients, generation.saturating_sub(gen0));
    let mut random = Tally::default();
    for c in &clients {
        for e in &c.log {
            let what = format!("client {} {:?}", c.index, e.change);
            random.add(&e.outcome, e.took, &what);
        }
    }
    fleet.wrong.extend(random.unexpected.iter().cloned());
    let limit = fleet.limit_race();

    println!(
        "fleet concurrency (seed {seed:#x}): {} clients on 2 hosts, {} random changes in {random_took:.1?} (both hosts converged at {converged:.1?}): {}",
        clients.len(),
        clients.iter().map(|c| c.log.len()).sum::<usize>(),
        random.line()
    );
    println!(
        "  generation {gen0} -> {generation}; final: {} groups, {} rules in the shared groups",
        fleet.group_ids().len(),
        fleet
            .shared
            .iter()
            .map(|g| rules_in(&fleet.hosts[0].daemon.json(&["group", "list"]), g).len())
            .sum::<usize>()
    );
    println!("  {limit}");
    println!("  total {:.1?}", started.elapsed());
    // One refusal of each kind and client, with its text.
    let mut shown = BTreeSet::new();
    for c in &clients {
        for e in &c.log {
            if let Outcome::Refused(kind, text) = &e.outcome
                && shown.insert((c.index, *kind))
            {
                println!(
                    "  refused ({kind:?}) client {} {:?}: {text}",
                    c.index, e.change
                );
            }
        }
    }
    assert!(
        fleet.wrong.is_empty(),
        "{} problems:\n{}",
        fleet.wrong.len(),
        fleet.wrong.join("\n")
    );
}

/// The follower's side of one commit that writes several keys: a host that
/// takes another host's commit from the watch must take all of it (its
/// keys share one revision), so that it has the commit's generation in
/// force and every group the commit changed.
#[test]
fn a_follower_takes_every_key_of_a_commit_it_follows() {
    let etcd = Etcd::single().unwrap();
    let url = store_url(&etcd);
    let pair = Pair::new().unwrap();
    let a = Daemon::start(
        bin(),
        pair.a.ns.name(),
        &["--store", &url, "--host", "fcc-a"],
    )
    .unwrap();
    let b = Daemon::start(
        bin(),
        pair.b.ns.name(),
        &["--store", &url, "--host", "fcc-b"],
    )
    .unwrap();
    let g1 = a.group("fleetcc-follow-1");
    let g2 = a.group("fleetcc-follow-2");
    a.allow_tcp(&g1, 1001);
    a.allow_tcp(&g2, 1002);
    let mut wrong = Vec::new();
    // Every commit writes the group (or rule), the id generator, the
    // generation and the commit token at one revision.
    let want = etcd_generation(&etcd);
    if !sg_tests::eventually(Duration::from_secs(5), || host_generation(&b) == want) {
        wrong.push(format!(
            "fcc-b has generation {} in force, etcd holds {want}",
            host_generation(&b)
        ));
    }
    // One commit that changes two groups: both rules go.
    let mut doc = export(&a);
    for g in doc["groups"].as_array_mut().unwrap() {
        g["rules"] = Value::Array(Vec::new());
    }
    let file = a.dir.join("no-rules.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    a.ok(&["apply", "--file", file.to_str().unwrap()]);
    for g in [&g1, &g2] {
        let empty = || {
            b.json(&["rule", "list", "--group", g])
                .as_array()
                .is_some_and(Vec::is_empty)
        };
        if !sg_tests::eventually(Duration::from_secs(5), empty) {
            wrong.push(format!(
                "fcc-b still has the rules of {g} that one apply on fcc-a removed from {g1} and {g2}: {}",
                b.json(&["rule", "list", "--group", g])
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

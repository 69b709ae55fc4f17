//! The fleet part of `sg-bench` (issue 14, item 6): agents of one fleet
//! against a real etcd on loopback (`sg_tests::etcd::Etcd`), each serving a
//! namespace of its own, driven as an operator drives them (their API
//! socket), with the store written straight through etcd-client where a
//! fleet too large to build through the API is needed.
//!
//! - **Propagation**: two agents (`prop-a`, `prop-b`) serving the two ends
//!   of a veth pair; a group bound on B's NIC; on A, alternately a `rule
//!   add` of 1 (or 1,000) rules to it and the `rule remove` of those rules.
//!   Each change is timed from the call on A until B has it in force. The
//!   signal that B has it is B's own record in the store: `status/prop-b`,
//!   which the agent writes once a change is in force on its NICs, with the
//!   revision now in force. It is watched from here (no polling, and the
//!   same record `status --wait fleet` reads). Also timed from the commit
//!   (the bench's watch of the generation key seeing A's commit). After
//!   each change, B's `status` over its socket must show the revision too.
//! - **Convergence at scale**: a fleet of 10,000 remote NICs on 1,000
//!   simulated hosts, written with [`Layout::encode`] in transactions within
//!   etcd's limits, one agent then started for the host that owns the few
//!   local NICs; timed from its start until its `status` shows the store's
//!   revision in force on every local NIC. The agent's memory is read from
//!   `/proc/PID/status` (`VmRSS`, `VmHWM`).
//! - **Membership churn**: with that fleet, 100 commits a second for 10 s
//!   from another client, each moving one remote NIC into or out of a group
//!   the local rules name, committed as agents commit (the generation key
//!   bumped under a compare on its mod revision); the agent's lag per
//!   change (from the commit's answer until its status record holds the
//!   revision) and its memory meanwhile.
//! - **Memory by fleet size and by what the rules name**: agents started on
//!   fleets of 0, 1,000 and 10,000 remote NICs whose local rules name 1,000
//!   (or all 10,000) of them.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use etcd_client::{Client, Compare, CompareOp, EventType, Txn, TxnOp, WatchOptions};
use serde_json::{Value, json};
use sg_agent::{
    api::{Client as Api, ObserveRequest, Request, RuleRequest, RuleText},
    store::{FLEET_SCHEMA, Layout, StoreId},
};
use sg_policy::{BindingMode, GroupSpec, NicBinding, RuleSpec, State, validate_state};
use sg_tests::{
    daemon::Daemon,
    etcd::Etcd,
    topology::{Netns, Pair},
};

/// Changes timed per size in the propagation part (half adds, half removes).
const PROPAGATION_CHANGES: usize = 60;
/// Pause between two timed changes, so that each starts on an idle fleet
/// (as an operator's changes do) rather than on the previous one's tail:
/// longer than the status record's sustained period (200 ms, in bursts of
/// five), which a host writing faster than that would wait for.
const CHANGE_GAP: Duration = Duration::from_millis(250);
/// The simulated fleet: hosts and NICs per host.
const REMOTE_HOSTS: usize = 1000;
const NICS_PER_HOST: usize = 10;
/// Groups the remote NICs are members of; the local group's group-peer
/// rules name some of them (at most 20 such rules per group, SPEC §2).
const WEB_GROUPS: usize = 20;
/// Remote NICs that are members of the first two web groups, the ones
/// named in every fleet of the memory comparison.
const NAMED_CORE: usize = 1000;
/// The local host's NICs, each bound to the local group.
const LOCAL_NICS: usize = 4;
/// Agent starts timed on the large fleet (and on the empty one).
const CONVERGE_RUNS: usize = 3;
/// Membership changes a second, and for how long.
const CHURN_RATE: u32 = 100;
const CHURN_SECS: u32 = 10;
/// Operations per transaction: below etcd's default `--max-txn-ops` (128).
const TXN_OPS: usize = 100;
/// Bytes per transaction: below etcd's default request limit (1.5 MiB).
const TXN_BYTES: usize = 1 << 20;
/// The host name of the agent of the scale part.
const SCALE_HOST: &str = "scale-host";

/// A target's row: what, measured, met.
struct Target {
    what: String,
    measured: String,
    met: bool,
}

/// The fleet tables, with their targets.
pub fn tables(agent: &Path) -> anyhow::Result<String> {
    let etcd = Etcd::single().context("starting etcd")?;
    let store = Store::connect(&etcd)?;
    let mut targets = Vec::new();
    let mut out = String::from("\n## Fleet\n\n");
    out.push_str(&propagation(agent, &store, &mut targets)?);
    out.push_str(&scale(agent, &store, &mut targets)?);
    out.push_str("\n| target | measured | result |\n| --- | --- | --- |\n");
    for t in &targets {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            t.what,
            t.measured,
            crate::report::verdict(t.met)
        );
    }
    Ok(out)
}

// --- the store, from the bench's side -------------------------------------------

/// The bench's own client of the fleet's etcd, on a runtime of its own.
struct Store {
    rt: tokio::runtime::Runtime,
    client: Client,
    endpoint: String,
}

/// Revisions seen by a watch, each with when it arrived.
#[derive(Default)]
struct Seen {
    events: Mutex<Vec<(Instant, i64)>>,
    more: Condvar,
}

impl Seen {
    fn push(&self, at: Instant, revision: i64) {
        if let Ok(mut e) = self.events.lock() {
            e.push((at, revision));
        }
        self.more.notify_all();
    }

    /// When a revision at or after `revision` was first seen, waiting up to
    /// `timeout` for it.
    fn wait(&self, revision: i64, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        let mut events = self
            .events
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        loop {
            if let Some((at, _)) = events.iter().find(|(_, r)| *r >= revision) {
                return Ok(*at);
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .with_context(|| format!("revision {revision} not seen within {timeout:?}"))?;
            events = self
                .more
                .wait_timeout(events, left)
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .0;
        }
    }

    /// Every revision seen so far, in order of arrival.
    fn all(&self) -> Vec<(Instant, i64)> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// A watch of one key, recording into [`Seen`]; stopped on drop.
struct Watch {
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a watched key's revision is: its value's `revision` field (a
/// host's status), or the revision it was written at (the generation key).
#[derive(Clone, Copy)]
enum Reading {
    StatusRevision,
    ModRevision,
}

impl Store {
    fn connect(etcd: &Etcd) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let client = rt.block_on(etcd.client())?;
        let endpoint = etcd.endpoint(0).trim_start_matches("http://").to_owned();
        Ok(Self {
            rt,
            client,
            endpoint,
        })
    }

    /// `--store` for the fleet under `prefix` (`/a/b/`).
    fn url(&self, prefix: &str) -> String {
        format!("etcd://{}{}", self.endpoint, prefix.trim_end_matches('/'))
    }

    /// The store's current revision.
    fn revision(&self) -> anyhow::Result<i64> {
        let mut c = self.client.clone();
        let resp = self.rt.block_on(async move { c.get("/", None).await })?;
        Ok(resp
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision))
    }

    /// Watches `key` from the next revision on.
    fn watch(&self, key: String, reading: Reading) -> anyhow::Result<Watch> {
        let from = self.revision()? + 1;
        let seen = Arc::new(Seen::default());
        let mut c = self.client.clone();
        let mut stream = self.rt.block_on(async move {
            c.watch(key, Some(WatchOptions::new().with_start_revision(from)))
                .await
        })?;
        let s = Arc::clone(&seen);
        let task = self.rt.spawn(async move {
            while let Ok(Some(msg)) = stream.message().await {
                let at = Instant::now();
                for e in msg.events() {
                    let Some(kv) = e.kv() else { continue };
                    if e.event_type() != EventType::Put {
                        continue;
                    }
                    let revision = match reading {
                        Reading::ModRevision => Some(kv.mod_revision()),
                        Reading::StatusRevision => serde_json::from_slice::<Value>(kv.value())
                            .ok()
                            .and_then(|v| v["revision"].as_i64()),
                    };
                    if let Some(r) = revision {
                        s.push(at, r);
                    }
                }
            }
        });
        Ok(Watch { seen, task })
    }

    /// Writes `state` as the fleet under `layout` (a store nobody wrote
    /// before), in transactions within etcd's limits, the generation key
    /// last. Returns where the store stands.
    fn write_fleet(&self, layout: &Layout, state: &State) -> anyhow::Result<Position> {
        let mut kvs = layout.encode(state)?;
        kvs.insert(layout.key("schema"), FLEET_SCHEMA.to_string().into_bytes());
        kvs.insert(
            layout.key("store-id"),
            StoreId::random()?.to_string().into_bytes(),
        );
        let mut batches: Vec<Vec<TxnOp>> = vec![Vec::new()];
        let mut bytes = 0;
        for (k, v) in kvs {
            let size = k.len() + v.len();
            let last = batches.last_mut().expect("one batch at least");
            if last.len() == TXN_OPS || bytes + size > TXN_BYTES {
                batches.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            batches
                .last_mut()
                .expect("one batch at least")
                .push(TxnOp::put(k, v, None));
        }
        for ops in batches {
            let mut c = self.client.clone();
            self.rt
                .block_on(async move { c.txn(Txn::new().and_then(ops)).await })?;
        }
        let mut c = self.client.clone();
        let gen_key = layout.generation();
        let resp = self
            .rt
            .block_on(async move { c.put(gen_key, "1", None).await })?;
        let revision = resp
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        Ok(Position {
            generation: 1,
            gen_rev: revision,
        })
    }
}

/// The generation and the revision it was written at.
#[derive(Clone, Copy)]
struct Position {
    generation: u64,
    gen_rev: i64,
}

/// One commit as an agent makes it: `writes` applied only if the generation
/// key is as `at` says, together with the next generation and a commit token.
async fn commit_as_agent(
    client: &mut Client,
    layout: &Layout,
    at: Position,
    writes: Vec<(String, Vec<u8>)>,
) -> anyhow::Result<Position> {
    let generation = at.generation + 1;
    let mut ops: Vec<TxnOp> = writes
        .into_iter()
        .map(|(k, v)| TxnOp::put(k, v, None))
        .collect();
    ops.push(TxnOp::put(
        layout.generation(),
        generation.to_string(),
        None,
    ));
    ops.push(TxnOp::put(
        layout.key("last-commit"),
        format!("bench-churn:{generation}"),
        None,
    ));
    let txn = Txn::new()
        .when(vec![Compare::mod_revision(
            layout.generation(),
            CompareOp::Equal,
            at.gen_rev,
        )])
        .and_then(ops);
    let resp = client.txn(txn).await?;
    if !resp.succeeded() {
        bail!("the churn's commit at generation {generation} found the generation moved");
    }
    Ok(Position {
        generation,
        gen_rev: resp
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision),
    })
}

// --- helpers --------------------------------------------------------------------

/// A request from its JSON form (the fields not named take their defaults).
fn request(v: Value) -> anyhow::Result<Request> {
    Ok(serde_json::from_value(v)?)
}

/// This host's revision in force, as its `status` shows it.
fn revision_of(api: &mut Api) -> anyhow::Result<i64> {
    api.call(&Request::Observe(ObserveRequest::Status))?["fleet"]["revision"]
        .as_i64()
        .context("status without a fleet revision")
}

/// Milliseconds of `d`.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The value at fraction `p` of the sorted `v` (nearest rank).
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short list"
    )]
    let i = ((p * (s.len() - 1) as f64).round() as usize).min(s.len() - 1);
    s[i]
}

/// `VmRSS` and `VmHWM` of process `pid`, in MiB.
fn memory_of(pid: u64) -> anyhow::Result<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let kb: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("{name} of process {pid}"))?;
        Ok(kb / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

// --- propagation ----------------------------------------------------------------

/// The two agents of the propagation part, and the watches of B's record
/// and of the commits.
struct Hosts<'a> {
    a: &'a mut Api,
    b: &'a mut Api,
    in_force_b: &'a Watch,
    commits: &'a Watch,
}

/// What [`timed_changes`] measured, in ms.
struct Timed {
    from_call: Vec<f64>,
    from_commit: Vec<f64>,
    adds: Vec<f64>,
    removes: Vec<f64>,
    /// The longest time from B's record until B's `status` showed it.
    socket_gap: f64,
}

/// [`PROPAGATION_CHANGES`] changes of `n` rules of `group` on A (adds and
/// removes in turn), each timed until B has it in force.
fn timed_changes(hosts: &mut Hosts<'_>, group: &str, n: usize) -> anyhow::Result<Timed> {
    let group = group.to_owned();
    let (api_a, api_b) = (&mut *hosts.a, &mut *hosts.b);
    let (in_force_b, commits) = (hosts.in_force_b, hosts.commits);
    let mut socket_gap: f64 = 0.0;
    let rules: Vec<RuleText> = (0..n)
        .map(|i| RuleText {
            direction: "ingress".to_owned(),
            policy: None,
            priority: None,
            protocol: "TCP".to_owned(),
            port_range: Some(format!("{0}/{0}", 2000 + i)),
            peer: "10.0.0.0/8".to_owned(),
            source_port_range: None,
            local: None,
            description: None,
        })
        .collect();
    let (mut from_call, mut from_commit) = (Vec::new(), Vec::new());
    let (mut adds, mut removes) = (Vec::new(), Vec::new());
    let mut ids: Vec<String> = Vec::new();
    for change in 0..PROPAGATION_CHANGES {
        let add = change % 2 == 0;
        let call = if add {
            Request::Rule(RuleRequest::Authorize {
                group: group.clone(),
                rules: rules.clone(),
            })
        } else {
            Request::Rule(RuleRequest::Revoke {
                group: group.clone(),
                rules: std::mem::take(&mut ids),
            })
        };
        let asked = Instant::now();
        let answer = api_a.call(&call)?;
        let answered = ms(asked.elapsed());
        if add {
            ids = answer["ids"]
                .as_array()
                .context("the new rules' ids")?
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            anyhow::ensure!(ids.len() == n, "{} ids for {n} rules", ids.len());
            adds.push(answered);
        } else {
            removes.push(answered);
        }
        let revision = revision_of(api_a)?;
        let on_b = in_force_b.seen.wait(revision, Duration::from_secs(10))?;
        let committed = commits.seen.wait(revision, Duration::from_secs(1))?;
        // B's status over its socket says so too (a moment after the
        // record, which the agent writes before it publishes).
        let shown = loop {
            if revision_of(api_b)? >= revision {
                break Instant::now();
            }
            if on_b.elapsed() > Duration::from_secs(2) {
                bail!("B's status never showed revision {revision}");
            }
        };
        socket_gap = socket_gap.max(ms(shown.saturating_duration_since(on_b)));
        from_call.push(ms(on_b.saturating_duration_since(asked)));
        from_commit.push(ms(on_b.saturating_duration_since(committed)));
        std::thread::sleep(CHANGE_GAP);
    }
    Ok(Timed {
        from_call,
        from_commit,
        adds,
        removes,
        socket_gap,
    })
}

/// The propagation table: 1-rule and 1,000-rule changes on A until in force on B.
fn propagation(agent: &Path, store: &Store, targets: &mut Vec<Target>) -> anyhow::Result<String> {
    let prefix = "/sgbench/propagation/";
    let url = store.url(prefix);
    let layout = Layout {
        prefix: prefix.to_owned(),
        host: "prop-b".to_owned(),
    };
    let pair = Pair::new()?;
    let a = Daemon::start(
        agent,
        pair.a.ns.name(),
        &["--store", &url, "--host", "prop-a"],
    )?;
    let b = Daemon::start(
        agent,
        pair.b.ns.name(),
        &["--store", &url, "--host", "prop-b"],
    )?;
    let mut api_a = Api::connect(&a.socket)?;
    let mut api_b = Api::connect(&b.socket)?;
    let group = api_a.call(&request(json!({"op": "group_create", "name": "on-b"}))?)?["id"]
        .as_str()
        .context("a group id")?
        .to_owned();
    // B binds its NIC in the group once it has the group.
    let made = revision_of(&mut api_a)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while revision_of(&mut api_b)? < made {
        anyhow::ensure!(Instant::now() < deadline, "B never had revision {made}");
        std::thread::sleep(Duration::from_millis(5));
    }
    api_b.call(&request(json!({
        "op": "nic_bind",
        "name": pair.b.ifname,
        "mode": "local",
        "addresses": [pair.b.v4.to_string()],
        "groups": [group],
    }))?)?;
    let in_force_b = store.watch(layout.status("prop-b"), Reading::StatusRevision)?;
    let commits = store.watch(layout.generation(), Reading::ModRevision)?;
    let mut out = String::from(
        "| propagation: a call on host A until in force on host B | changes | from the call: median ms | p99 | max | from A's commit: median ms | p99 | A's answer to an add: median ms | to a remove |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut socket_gap: f64 = 0.0;
    let two = Hosts {
        a: &mut api_a,
        b: &mut api_b,
        in_force_b: &in_force_b,
        commits: &commits,
    };
    let mut two = two;
    for n in [1usize, 1000] {
        let timed = timed_changes(&mut two, &group, n)?;
        socket_gap = socket_gap.max(timed.socket_gap);
        let Timed {
            from_call,
            from_commit,
            adds,
            removes,
            ..
        } = timed;
        let rules_text = if n == 1 {
            "1 rule".to_owned()
        } else {
            "1,000 rules".to_owned()
        };
        let p99 = percentile(&from_call, 0.99);
        let _ = writeln!(
            out,
            "| `rule add` / `rule remove` of {rules_text} | {PROPAGATION_CHANGES} | {:.1} | {p99:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            percentile(&from_call, 0.5),
            percentile(&from_call, 1.0),
            percentile(&from_commit, 0.5),
            percentile(&from_commit, 0.99),
            percentile(&adds, 0.5),
            percentile(&removes, 0.5),
        );
        targets.push(Target {
            what: format!("propagation p99 < 100 ms, {rules_text}, from the call on A"),
            measured: format!("{p99:.1} ms"),
            met: p99 < 100.0,
        });
    }
    let _ = writeln!(
        out,
        "\nB's `status` showed each revision at most {socket_gap:.1} ms after B's record in the store."
    );
    Ok(out)
}

// --- scale ----------------------------------------------------------------------

/// A fleet of `remote` NICs on other hosts (10 a host), whose first
/// [`NAMED_CORE`] are members of `web-0` and `web-1` and the rest of
/// `web-2`…`web-19`; the local group `db`, bound on the local NICs, has
/// 20 group-peer rules: the first `named_groups` name `web-0`…, the others
/// name groups without members. Each web group has rules of its own (one
/// naming `db`).
fn fleet_state(remote: usize, named_groups: usize, nics: &[String]) -> anyhow::Result<State> {
    let mut s = State::with_seed(14);
    let db = s.create_group(GroupSpec::basic("db"))?;
    s.create_group(GroupSpec::basic("spare"))?;
    let mut web = Vec::new();
    let mut idle = Vec::new();
    for i in 0..WEB_GROUPS {
        let g = s.create_group(GroupSpec::basic(&format!("web-{i}")))?;
        s.authorize_all(
            &g,
            vec![
                RuleSpec::from_text("ingress", "Allow", "1", "TCP", "443/443", "0.0.0.0/0")?,
                RuleSpec::from_text("egress", "Allow", "1", "TCP", "3306/3306", db.as_str())?,
            ],
        )?;
        web.push(g);
        idle.push(s.create_group(GroupSpec::basic(&format!("idle-{i}")))?);
    }
    let mut rules = Vec::new();
    for j in 0..WEB_GROUPS {
        let peer = if j < named_groups { &web[j] } else { &idle[j] };
        let port = format!("{0}/{0}", 3306 + j);
        rules.push(RuleSpec::from_text(
            "ingress",
            "Allow",
            "1",
            "TCP",
            &port,
            peer.as_str(),
        )?);
    }
    rules.push(RuleSpec::from_text(
        "ingress",
        "Allow",
        "2",
        "TCP",
        "22/22",
        "10.0.0.0/8",
    )?);
    s.authorize_all(&db, rules)?;
    for (i, nic) in nics.iter().enumerate() {
        s.bind_nic(NicBinding::new(
            nic,
            BindingMode::Local,
            vec![IpAddr::V4(Ipv4Addr::new(10, 99, 0, u8::try_from(i + 1)?))],
            vec![db.clone()],
        ))?;
    }
    for k in 0..remote {
        let (host, n) = (k / NICS_PER_HOST, k % NICS_PER_HOST);
        let group = if k < NAMED_CORE {
            web[k % 2].clone()
        } else {
            web[2 + (k - NAMED_CORE) % (WEB_GROUPS - 2)].clone()
        };
        let addr = remote_address(k)?;
        s.remote
            .entry(format!("sim-{host:04}"))
            .or_default()
            .insert(
                format!("eth{n}"),
                NicBinding::new(
                    &format!("eth{n}"),
                    BindingMode::Local,
                    vec![IpAddr::V4(addr)],
                    vec![group],
                ),
            );
    }
    validate_state(&s)?;
    Ok(s)
}

/// The address of remote NIC `k`: 10.100.0.1 onwards, unique per NIC.
fn remote_address(k: usize) -> anyhow::Result<Ipv4Addr> {
    let (host, n) = (k / NICS_PER_HOST, k % NICS_PER_HOST);
    Ok(Ipv4Addr::new(
        10,
        u8::try_from(100 + host / 250)?,
        u8::try_from(host % 250)?,
        u8::try_from(n + 1)?,
    ))
}

/// One agent start on a fleet: how long until it serves, and until its
/// status shows the store's revision in force on every local NIC; its
/// memory then.
struct Converged {
    serving: f64,
    in_force: f64,
    rss: f64,
    hwm: f64,
    pid: u64,
}

/// Starts the agent of [`SCALE_HOST`] on the fleet at `url` and waits until
/// it has `revision` in force on `nics`.
fn converge(
    agent: &Path,
    ns: &Netns,
    url: &str,
    revision: i64,
    nics: &[String],
) -> anyhow::Result<(Daemon, Converged)> {
    let started = Instant::now();
    let d = Daemon::start(agent, ns.name(), &["--store", url, "--host", SCALE_HOST])?;
    let serving = ms(started.elapsed());
    let mut api = Api::connect(&d.socket)?;
    let status = loop {
        let status = api.call(&Request::Observe(ObserveRequest::Status))?;
        let at = status["fleet"]["revision"].as_i64().unwrap_or(0) >= revision;
        let attached = status["nics"].as_array().is_some_and(|v| {
            v.len() == nics.len()
                && v.iter()
                    .all(|n| n["attached"] == true && n["degraded"].is_null())
        });
        if at && attached {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the agent did not have revision {revision} in force within 60 s: {status}");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let in_force = ms(started.elapsed());
    let pid = status["pid"].as_u64().context("the agent's pid")?;
    let (rss, hwm) = memory_of(pid)?;
    Ok((
        d,
        Converged {
            serving,
            in_force,
            rss,
            hwm,
            pid,
        },
    ))
}

/// Stops an agent as an operator does (it leaves the fleet's live hosts).
fn stop(mut d: Daemon) -> anyhow::Result<()> {
    d.stop(libc::SIGTERM)?;
    Ok(())
}

/// A fleet of the scale part, written under a prefix of its own.
struct Fleet {
    layout: Layout,
    url: String,
    state: State,
    at: Position,
}

impl Fleet {
    fn write(
        store: &Store,
        tag: &str,
        remote: usize,
        named_groups: usize,
        nics: &[String],
    ) -> anyhow::Result<Self> {
        let prefix = format!("/sgbench/{tag}/");
        let layout = Layout {
            prefix: prefix.clone(),
            host: SCALE_HOST.to_owned(),
        };
        let state = fleet_state(remote, named_groups, nics)?;
        let at = store.write_fleet(&layout, &state)?;
        Ok(Self {
            layout,
            url: store.url(&prefix),
            state,
            at,
        })
    }
}

/// One row of the table of agent starts.
fn row(out: &mut String, what: &str, remote: usize, named: usize, runs: &[Converged]) {
    let f = |g: fn(&Converged) -> f64| runs.iter().map(g).collect::<Vec<_>>();
    let in_force = f(|c| c.in_force);
    let _ = writeln!(
        out,
        "| {what} | {remote} ({}) | {named} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} |",
        remote / NICS_PER_HOST,
        percentile(&f(|c| c.serving), 0.5),
        percentile(&in_force, 0.5),
        percentile(&in_force, 0.0),
        percentile(&in_force, 1.0),
        percentile(&f(|c| c.rss), 0.5),
        percentile(&f(|c| c.hwm), 0.5),
    );
}

/// Convergence, churn and memory at scale.
fn scale(agent: &Path, store: &Store, targets: &mut Vec<Target>) -> anyhow::Result<String> {
    let ns = Netns::new("fleet")?;
    let nics: Vec<String> = (0..LOCAL_NICS).map(|i| format!("fl{i}")).collect();
    for nic in &nics {
        ns.ip(&[
            "link",
            "add",
            nic,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{nic}p"),
        ])?;
        ns.ip(&["link", "set", nic, "up"])?;
    }
    let big = REMOTE_HOSTS * NICS_PER_HOST;
    let mut out = format!(
        "\n| an agent starting on a fleet ({LOCAL_NICS} local NICs) | remote NICs (hosts) | members its rules name | until serving: median ms | until in force: median ms | min | max | VmRSS MiB | VmHWM MiB |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    );
    // The fixed cost of a start: no other host.
    let empty = Fleet::write(store, "scale-empty", 0, 2, &nics)?;
    let mut runs = Vec::new();
    for _ in 0..CONVERGE_RUNS {
        let (d, c) = converge(agent, &ns, &empty.url, empty.at.gen_rev, &nics)?;
        stop(d)?;
        runs.push(c);
    }
    row(&mut out, "no other host", 0, 0, &runs);
    let base_rss = percentile(&runs.iter().map(|c| c.rss).collect::<Vec<_>>(), 0.5);
    // Memory by fleet size, with the same members named.
    let mut same_named = Vec::new();
    for remote in [NAMED_CORE, big] {
        let fleet = Fleet::write(
            store,
            &format!("scale-{remote}-named-core"),
            remote,
            2,
            &nics,
        )?;
        let (d, c) = converge(agent, &ns, &fleet.url, fleet.at.gen_rev, &nics)?;
        stop(d)?;
        same_named.push(c.rss);
        row(
            &mut out,
            "rules name web-0 and web-1",
            remote,
            NAMED_CORE,
            &[c],
        );
    }
    // The large fleet, every member named: timed, then churned.
    let fleet = Fleet::write(store, "scale-all-named", big, WEB_GROUPS, &nics)?;
    let mut runs = Vec::new();
    let mut kept = None;
    for i in 0..CONVERGE_RUNS {
        let (d, c) = converge(agent, &ns, &fleet.url, fleet.at.gen_rev, &nics)?;
        runs.push(c);
        if i + 1 == CONVERGE_RUNS {
            kept = Some(d);
        } else {
            stop(d)?;
        }
    }
    row(&mut out, "rules name every web group", big, big, &runs);
    let all_rss = percentile(&runs.iter().map(|c| c.rss).collect::<Vec<_>>(), 0.5);
    let in_force = percentile(&runs.iter().map(|c| c.in_force).collect::<Vec<_>>(), 0.5);
    targets.push(Target {
        what: format!(
            "convergence of an agent starting on {big} remote NICs on {REMOTE_HOSTS} hosts < 2 s"
        ),
        measured: format!("{in_force:.0} ms from its start until in force"),
        met: in_force < 2000.0,
    });
    let (small, large) = (same_named[0], same_named[1]);
    let _ = writeln!(
        out,
        "\nMemory (VmRSS) above the agent with no other host ({base_rss:.1} MiB): \
         {:.1} MiB for {NAMED_CORE} remote NICs, all named; {:.1} MiB for {big}, the same {NAMED_CORE} named; \
         {:.1} MiB for {big}, all named.",
        small - base_rss,
        large - base_rss,
        all_rss - base_rss,
    );
    targets.push(Target {
        what: format!(
            "memory grows with what the rules name, not with fleet size alone: VmRSS at {big} remote NICs within 10 % of that at {NAMED_CORE}, the same {NAMED_CORE} named"
        ),
        measured: format!(
            "{large:.1} / {small:.1} MiB = {:.2} × (naming all {big}: {all_rss:.1} MiB)",
            large / small
        ),
        met: large <= small * 1.1,
    });
    let d = kept.context("the last agent")?;
    out.push_str(&churn(store, &fleet, runs.last().map_or(0, |c| c.pid))?);
    stop(d)?;
    Ok(out)
}

/// 100 membership changes a second for 10 s into the fleet `fleet`, whose
/// agent runs as process `pid`; its lag and memory meanwhile.
fn churn(store: &Store, fleet: &Fleet, pid: u64) -> anyhow::Result<String> {
    let in_force = store.watch(fleet.layout.status(SCALE_HOST), Reading::StatusRevision)?;
    // Each change moves one remote NIC of a named group to `spare` or back.
    let spare = fleet
        .state
        .groups
        .values()
        .find(|g| g.name == "spare")
        .context("the spare group")?
        .id
        .clone();
    let nics: Vec<(String, NicBinding)> = fleet
        .state
        .remote
        .iter()
        .flat_map(|(h, nics)| nics.values().map(move |n| (h.clone(), n.clone())))
        .collect();
    let total = usize::try_from(CHURN_RATE * CHURN_SECS)?;
    // The first half leave their group for `spare`, one NIC each, spread
    // over the fleet; the second half join it again, in the same order.
    let half = total / 2;
    let mut changes = Vec::with_capacity(total);
    for i in 0..total {
        let (host, nic) = &nics[((i % half) * 7919) % nics.len()];
        let mut moved = nic.clone();
        if i < half {
            moved.groups = vec![spare.clone()];
        }
        let key = fleet
            .layout
            .key(&format!("hosts/{host}/nics/{}", moved.name));
        changes.push((key, serde_json::to_vec(&moved)?));
    }
    let layout = fleet.layout.clone();
    let start_at = fleet.at;
    let mut client = store.client.clone();
    let writer = store.rt.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / CHURN_RATE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut at = start_at;
        let mut done: Vec<(Instant, i64)> = Vec::with_capacity(changes.len());
        for (key, value) in changes {
            tick.tick().await;
            at = commit_as_agent(&mut client, &layout, at, vec![(key, value)]).await?;
            done.push((Instant::now(), at.gen_rev));
        }
        anyhow::Ok(done)
    });
    let started = Instant::now();
    let mut peak_rss: f64 = 0.0;
    while !writer.is_finished() {
        peak_rss = peak_rss.max(memory_of(pid)?.0);
        std::thread::sleep(Duration::from_millis(100));
    }
    let wrote_for = started.elapsed();
    let done = store.rt.block_on(writer)??;
    let last = done.last().map_or(0, |(_, r)| *r);
    let caught_up = in_force.seen.wait(last, Duration::from_secs(60));
    let (rss, hwm) = memory_of(pid)?;
    peak_rss = peak_rss.max(rss);
    let seen = in_force.seen.all();
    let mut lag = Vec::new();
    let mut behind = Vec::new();
    for (i, (at, rev)) in done.iter().enumerate() {
        match seen.iter().find(|(_, r)| r >= rev) {
            Some((when, _)) => lag.push(ms(when.saturating_duration_since(*at))),
            None => lag.push(f64::INFINITY),
        }
        // Changes committed by now that the agent did not have in force.
        let in_force_rev = seen
            .iter()
            .take_while(|(when, _)| when <= at)
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(0);
        let behind_now = done[..=i].iter().filter(|(_, r)| *r > in_force_rev).count();
        #[expect(clippy::cast_precision_loss, reason = "a count, for display")]
        behind.push(behind_now as f64);
    }
    let caught = match caught_up {
        Ok(at) => format!(
            "{:.0} ms after the last change",
            ms(at.saturating_duration_since(done.last().map_or(at, |(t, _)| *t)))
        ),
        Err(_) => "not within 60 s of the last change".to_owned(),
    };
    let mut out = format!(
        "\n| membership churn on the fleet of {} remote NICs, all named | changes (written in) | lag: median ms | p99 | max | changes behind: p99 | max | caught up | VmRSS peak MiB | VmHWM MiB |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        nics.len()
    );
    let _ = writeln!(
        out,
        "| {CHURN_RATE} a second for {CHURN_SECS} s, one NIC joining or leaving a named group each | {} ({:.1} s) | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {caught} | {peak_rss:.1} | {hwm:.1} |",
        done.len(),
        wrote_for.as_secs_f64(),
        percentile(&lag, 0.5),
        percentile(&lag, 0.99),
        percentile(&lag, 1.0),
        percentile(&behind, 0.99),
        percentile(&behind, 1.0),
    );
    Ok(out)
}

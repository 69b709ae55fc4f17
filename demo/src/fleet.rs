//! `cargo xtask demo --fleet`: two hosts of one fleet on one etcd. A rule on
//! the database host admits TCP 5432 from the members of group `web`,
//! wherever they are bound; the web host's NIC joins `web` and is admitted,
//! leaves and is refused, each change made on the web host and in force on
//! the database host once `sg-agent status --wait fleet` returns.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, bail};
use sg_tests::{
    daemon::Daemon,
    etcd::Etcd,
    probe::{self, Servers},
    topology::Pair,
};

/// Runs the demo with the agent binary `bin`.
pub fn run(bin: &Path) -> anyhow::Result<()> {
    let etcd = Etcd::single().context("starting etcd")?;
    let url = format!("etcd://{}", etcd.endpoint(0).trim_start_matches("http://"));
    let pair = Pair::new().context("creating the namespaces")?;
    let _server = Servers::start_on(&pair.b.ns, 5432)?;
    println!(
        "etcd at {url}; host web-1 ({}, NIC {} {}) <-> host db-1 ({}, NIC {} {}), a Postgres port open on db-1",
        pair.a.ns.name(),
        pair.a.ifname,
        pair.a.v4,
        pair.b.ns.name(),
        pair.b.ifname,
        pair.b.v4,
    );
    let start = |ns: &str, host: &str| {
        println!("$ sg-agent run --netns {ns} --store {url} --host {host}");
        Daemon::start(bin, ns, &["--store", &url, "--host", host])
    };
    let db = start(pair.b.ns.name(), "db-1")?;
    let web = start(pair.a.ns.name(), "web-1")?;

    let g_web = policy(&pair, &db, &web)?;
    let to = SocketAddr::new(IpAddr::V4(pair.b.v4), 5432);
    println!(
        "\n| step (on web-1) | web-1's NIC in `web` | tcp {} -> {to} |\n| --- | --- | --- |",
        pair.a.v4
    );
    let mut wrong = Vec::new();
    let mut step = |what: &str, member: bool, args: Option<&[&str]>| {
        if let Some(args) = args {
            web.ok(args);
        }
        // In force on every live host once this returns.
        web.ok(&["status", "--wait", "fleet", "--timeout", "10"]);
        let outcome = probe::tcp(&pair.a.ns, to);
        println!(
            "| {what} | {} | {outcome} |",
            if member { "yes" } else { "no" }
        );
        if outcome.allowed() != member {
            wrong.push(what.to_owned());
        }
    };
    step("bound in `app` only", false, None);
    step(
        "`nic join` web",
        true,
        Some(&["nic", "join", &pair.a.ifname, &g_web]),
    );
    step(
        "`nic leave` web",
        false,
        Some(&["nic", "leave", &pair.a.ifname, &g_web]),
    );
    println!();
    say("db-1", &db, &["host", "list"]);
    std::thread::sleep(Duration::from_millis(100));
    if !wrong.is_empty() {
        bail!(
            "db-1 decided against the membership at: {}",
            wrong.join(", ")
        );
    }
    println!("\nstopping both agents and etcd; every pin, namespace and directory is removed");
    Ok(())
}

/// Runs `args` on host `host`'s agent, printing the command and its answer.
fn say(host: &str, d: &Daemon, args: &[&str]) -> String {
    println!("[{host}] $ sg-agent {}", args.join(" "));
    let out = d.ok(args);
    print!("{out}");
    out
}

/// The groups, db-1's rule admitting Postgres from `web`, both NICs bound
/// (web-1's in `app` only); the id of `web`.
fn policy(pair: &Pair, db: &Daemon, web: &Daemon) -> anyhow::Result<String> {
    let id = |d: &Daemon, name: &str| -> anyhow::Result<String> {
        let v = d.json(&["group", "create", name]);
        println!("[db-1] $ sg-agent group create {name}   -> {}", v["id"]);
        v["id"].as_str().map(str::to_owned).context("a group id")
    };
    let g_db = id(db, "db")?;
    let g_web = id(db, "web")?;
    let g_app = id(db, "app")?;
    say(
        "db-1",
        db,
        &[
            "rule",
            "add",
            &g_db,
            "--direction",
            "ingress",
            "--protocol",
            "TCP",
            "--port-range",
            "5432/5432",
            "--peer",
            &g_web,
            "--description",
            "postgres from web",
        ],
    );
    let (b4, a4) = (pair.b.v4.to_string(), pair.a.v4.to_string());
    say(
        "db-1",
        db,
        &[
            "nic",
            "bind",
            &pair.b.ifname,
            "--mode",
            "local",
            "--group",
            &g_db,
            "--address",
            &b4,
        ],
    );
    say(
        "web-1",
        web,
        &[
            "nic",
            "bind",
            &pair.a.ifname,
            "--mode",
            "local",
            "--group",
            &g_app,
            "--address",
            &a4,
        ],
    );

    Ok(g_web)
}

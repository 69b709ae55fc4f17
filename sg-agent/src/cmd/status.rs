//! `sg-agent status`: the daemon's own state (version, process, socket,
//! store, NICs attached, programs loaded; in a fleet, every live host and
//! how far behind it is).

use std::{path::Path, time::Duration};

use anyhow::bail;
use serde_json::Value;
use sg_agent::api::{
    ObserveRequest, Request,
    reply::{FleetStatus, Status},
};

use super::client::{self, Output};

/// What `--wait` waits for.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Wait {
    /// Every live host of the fleet has in force the policy this host has
    /// in force now (its store revision or a later one).
    Fleet,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    out: Output,
    /// Wait before answering: `fleet` waits until every live host has this
    /// host's policy in force (fails after --timeout, naming the hosts
    /// behind). Run it after a change to know it is in force everywhere.
    #[arg(long, value_enum)]
    wait: Option<Wait>,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 30, requires = "wait")]
    timeout: u64,
}

pub fn run(socket: &Path, args: &Args) -> anyhow::Result<()> {
    let mut answer = client::request(socket, &Request::Observe(ObserveRequest::Status))?;
    if args.wait == Some(Wait::Fleet) {
        answer = wait_fleet(
            socket,
            client::decode(answer)?,
            Duration::from_secs(args.timeout),
        )?;
    }
    args.out.show(answer, |status: Status| {
        client::fields(&client::flatten(
            &serde_json::to_value(status).unwrap_or_default(),
        ))
    })
}

/// The hosts of `fleet` whose revision in force is below `revision`.
fn behind(fleet: &FleetStatus, revision: i64) -> Vec<String> {
    fleet
        .hosts
        .iter()
        .filter(|h| h.revision < revision)
        .map(|h| format!("{:?} (at {})", h.host, h.revision))
        .collect()
}

/// Polls `status` until no live host is behind the revision `first` has in
/// force; the last status.
fn wait_fleet(socket: &Path, first: Status, timeout: Duration) -> anyhow::Result<Value> {
    let Some(revision) = first.fleet.map(|f| f.revision) else {
        bail!("--wait fleet: this agent's store is not a fleet's (run it with --store etcd://...)");
    };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let answer = client::request(socket, &Request::Observe(ObserveRequest::Status))?;
        let status: Status = client::decode(answer.clone())?;
        let late = status
            .fleet
            .as_ref()
            .map(|f| behind(f, revision))
            .unwrap_or_default();
        if late.is_empty() {
            return Ok(answer);
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "--wait fleet: after {}s, hosts behind store revision {revision}: {}",
                timeout.as_secs(),
                late.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

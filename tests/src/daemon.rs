//! `sg-agent run` as a real process in a test's network namespace, and the
//! CLI pointed at its socket: the daemon is driven only as an operator
//! drives it. Every daemon gets its own directory (socket, store); on drop
//! the process is killed, its pins are cleaned up and the directory removed,
//! even when the test failed.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, bail};

use crate::agent::AgentProcess;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// What `sg-agent run` logs once it serves.
pub const READY: &str = "serving the API";

pub struct Daemon {
    bin: PathBuf,
    /// The namespace it serves (a name made by `ip netns add`).
    pub netns: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub store: PathBuf,
    extra: Vec<String>,
    process: Option<AgentProcess>,
}

impl Daemon {
    /// Starts `bin run` serving namespace `netns`, with `extra` arguments,
    /// and waits until it serves.
    pub fn start(bin: &Path, netns: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let mut d = Self::new(bin, netns, extra)?;
        d.restart()?;
        Ok(d)
    }

    /// [`Daemon::start`] without starting it: its directory, socket and
    /// store are named (and the directory made), for a test that must know
    /// them before the daemon runs; [`Daemon::restart_env`] starts it.
    pub fn new(bin: &Path, netns: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "sg-daemon-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            bin: bin.to_owned(),
            netns: netns.to_owned(),
            socket: dir.join("api.sock"),
            store: dir.join("state.db"),
            dir,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            process: None,
        })
    }

    /// Starts the daemon again (after [`Daemon::stop`] or [`Daemon::kill`]).
    pub fn restart(&mut self) -> anyhow::Result<String> {
        self.restart_with(&[])
    }

    /// [`Daemon::restart`] with `once` added to its arguments this time only.
    pub fn restart_with(&mut self, once: &[&str]) -> anyhow::Result<String> {
        self.restart_env(once, &[])
    }

    /// [`Daemon::restart_with`], with `env` added to its environment.
    pub fn restart_env(&mut self, once: &[&str], env: &[(&str, &str)]) -> anyhow::Result<String> {
        if self.process.is_some() {
            bail!("the daemon runs already");
        }
        let mut args = vec![
            "--socket".to_owned(),
            self.socket.display().to_string(),
            "run".to_owned(),
            "--netns".to_owned(),
            self.netns.clone(),
        ];
        // A daemon of a fleet names its etcd store among `extra`; its copy
        // of the fleet's policy is kept in its own directory.
        if self.extra.iter().any(|a| a == "--store") {
            if !self.extra.iter().any(|a| a == "--fleet-cache") {
                let copy = self.dir.join("fleet-cache.json");
                args.extend(["--fleet-cache".to_owned(), copy.display().to_string()]);
            }
        } else {
            args.extend(["--store".to_owned(), self.store.display().to_string()]);
        }
        args.extend(self.extra.iter().cloned());
        args.extend(once.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let echo = std::env::var_os("SG_TEST_ECHO").is_some();
        let (p, line) = AgentProcess::start_with_env(&self.bin, &args, env, READY, echo)
            .context("starting sg-agent run")?;
        self.process = Some(p);
        Ok(line)
    }

    /// Runs `sg-agent run` for this daemon's namespace as [`Daemon::restart`]
    /// would, but with `store` (default: this daemon's) and `extra` arguments
    /// instead of the daemon's own, on a socket of its own, and expects it to
    /// refuse to start: returns its stderr once it exited unsuccessfully.
    /// Panics if it started serving or did not exit within 30 s.
    pub fn refused_run(&self, store: Option<&Path>, extra: &[&str]) -> String {
        let socket = self.dir.join(format!(
            "refused-{}.sock",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let store = store.unwrap_or(&self.store).display().to_string();
        let mut args = vec![
            "--socket",
            socket.to_str().expect("a UTF-8 path"),
            "run",
            "--netns",
            &self.netns,
            "--store",
            &store,
        ];
        args.extend_from_slice(extra);
        let (status, stderr) =
            crate::agent::run_to_exit(&self.bin, &args, std::time::Duration::from_secs(30));
        assert!(
            !stderr.contains(READY),
            "sg-agent run {args:?} started where it must refuse:\n{stderr}"
        );
        assert!(
            status.is_some_and(|s| !s.success()),
            "sg-agent run {args:?} did not refuse (status {status:?}):\n{stderr}"
        );
        stderr
    }

    /// Stops the daemon with `signal` and returns its exit status and stdout.
    pub fn stop(&mut self, signal: i32) -> anyhow::Result<(std::process::ExitStatus, String)> {
        self.process
            .take()
            .context("the daemon is not running")?
            .stop(signal)
    }

    /// Whether the daemon's process is gone (killed, or exited by itself);
    /// a gone one is forgotten, so it can be started again.
    pub fn gone(&mut self) -> bool {
        let gone = self.process.as_mut().is_none_or(AgentProcess::exited);
        if gone {
            self.process = None;
        }
        gone
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.stop(libc::SIGKILL).map(|_| ())
    }

    /// Waits (up to `timeout`) for a line of the daemon's log containing
    /// `pattern`.
    pub fn wait_log(&self, pattern: &str, timeout: std::time::Duration) -> Option<String> {
        self.process.as_ref()?.wait_for(pattern, timeout)
    }

    /// Runs `sg-agent ARGS…` against this daemon's socket.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.client().cli(args)
    }

    /// The daemon's CLI as a handle of its own, for threads that drive the
    /// daemon side by side (the daemon itself stays with its owner).
    pub fn client(&self) -> Cli {
        Cli {
            bin: self.bin.clone(),
            socket: self.socket.clone(),
        }
    }

    /// [`Daemon::cli`] that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "sg-agent {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// [`Daemon::ok`] with the arguments of `line`, split at blanks (for
    /// commands whose arguments hold none).
    pub fn line(&self, line: &str) -> String {
        self.ok(&line.split_whitespace().collect::<Vec<_>>())
    }

    /// `group create NAME`: the new group's id.
    pub fn group(&self, name: &str) -> String {
        self.json(&["group", "create", name])["id"]
            .as_str()
            .expect("a group id")
            .to_owned()
    }

    /// `rule add GROUP` of an ingress rule allowing TCP to `port` from the
    /// test pairs' subnet, 10.77.0.0/24: the rule's id.
    pub fn allow_tcp(&self, group: &str, port: u16) -> String {
        self.allow_tcp_from(group, port, "10.77.0.0/24")
    }

    /// `rule add GROUP` of an ingress rule allowing TCP to `port` from
    /// `peer` (a CIDR, a group or a prefix list): the rule's id.
    pub fn allow_tcp_from(&self, group: &str, port: u16, peer: &str) -> String {
        let out = self.json(&[
            "rule",
            "add",
            group,
            "--direction",
            "ingress",
            "--protocol",
            "TCP",
            "--port-range",
            &format!("{port}/{port}"),
            "--peer",
            peer,
        ]);
        out["ids"][0].as_str().expect("a rule id").to_owned()
    }

    /// `nic bind NIC --mode local` with `addresses`, in `group`.
    pub fn bind(&self, nic: &str, addresses: &[&str], group: &str) {
        let mut args = vec!["nic", "bind", nic, "--mode", "local", "--group", group];
        for a in addresses {
            args.extend(["--address", a]);
        }
        self.ok(&args);
    }

    /// [`Daemon::cli`] with `--json`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("sg-agent {args:?}: {e}: {out}"))
    }

    /// [`Daemon::cli`] that must fail; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "sg-agent {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `sg-agent cleanup` for this daemon's namespace.
    pub fn cleanup(&self) -> Output {
        Command::new(&self.bin)
            .env("SG_AGENT_SOCKET", &self.socket)
            .args(["cleanup", "--netns", &self.netns])
            .output()
            .expect("running sg-agent cleanup")
    }
}

/// `sg-agent` pointed at one daemon's socket: what [`Daemon::cli`] runs,
/// without the daemon, so that it can be cloned and sent to other threads.
#[derive(Debug, Clone)]
pub struct Cli {
    bin: PathBuf,
    socket: PathBuf,
}

impl Cli {
    /// Runs `sg-agent ARGS…` against the daemon's socket.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .env("SG_AGENT_SOCKET", &self.socket)
            .args(args)
            .output()
            .expect("running sg-agent")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            let _ = p.stop(libc::SIGKILL);
        }
        let _ = self.cleanup();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

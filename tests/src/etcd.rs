//! Real etcd servers on loopback for the fleet store's tests.
//!
//! [`Etcd`] starts Debian's `etcd` (3.4) as one member or as a static cluster
//! of several, each member a child process on `127.0.0.1` with its own client
//! and peer ports and a data directory in a temporary directory of its own.
//! Startup waits until every member answers `etcdctl endpoint health`; if one
//! exits or never answers, the error carries the end of its log. Dropping the
//! [`Etcd`] kills and reaps every member and removes the directory, whatever
//! state the members are in (running, stopped, paused).
//!
//! Ports: each one is claimed by a lock on a file under
//! `$TMPDIR/sg-etcd-ports/`, held for as long as the [`Etcd`] lives, so
//! concurrent tests and other test processes never pick the same port; the
//! lock goes with the process, whatever way it ends. Ports come from below the
//! kernel's default ephemeral range and away from etcd's own 2379 and 2380.
//!
//! A directory left by a test process that was killed (no `Drop` ran) is
//! removed, and the etcd processes still running in it killed, by the next
//! [`Etcd::start`] in any process that notices its owner is gone.
//!
//! Variants ([`Options`]): TLS with client-certificate authentication (a CA,
//! a server certificate for `127.0.0.1` and client certificates made with the
//! `openssl` CLI, see [`Tls`]) and etcd's own authentication (a `root` user
//! with a password, `auth enable`). Peer traffic is always plain HTTP on
//! loopback.

use std::{
    fs::{self, File, TryLockError},
    io::Read as _,
    net::{Ipv4Addr, TcpListener},
    ops::Range,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Once,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Temporary directories are `$TMPDIR/sg-etcd-<pid>-<n>`: the pid tells the
/// reaper whether their owner is still alive.
const DIR_PREFIX: &str = "sg-etcd-";
/// Where port claims are kept (one empty lock file per port). The files are
/// never removed: unlinking a file another process holds locked would let a
/// third lock a new file of the same name.
const PORT_LOCKS: &str = "sg-etcd-ports";
/// Ports handed out. Below Linux's default ephemeral range (32768-60999), so
/// the kernel does not give one to an outgoing connection between the claim
/// and etcd's bind; clear of etcd's default 2379 and 2380, so a system etcd
/// (Debian's package may start one) is never talked to.
const PORTS: Range<u16> = 20000..32000;
/// How long a member may take to answer after it is started. Generous: the
/// machine has two cores and tests run side by side.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a member's log an error shows.
const LOG_TAIL_LINES: usize = 40;
/// The user etcd's authentication requires before `auth enable`.
pub const ROOT_USER: &str = "root";

static NEXT: AtomicU32 = AtomicU32::new(0);
static REAP: Once = Once::new();

/// What to start.
#[derive(Clone, Debug)]
pub struct Options {
    /// How many members (1 for a single member, 3 for a cluster that survives
    /// losing one).
    pub members: usize,
    /// Serve clients over TLS and require a client certificate signed by the
    /// test CA (`--client-cert-auth`).
    pub tls: bool,
    /// Create the `root` user with a password and enable etcd's
    /// authentication.
    pub auth: bool,
    /// More flags for every member, e.g. `--max-txn-ops=1024` or
    /// `--auth-token=jwt,...`.
    pub extra_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            members: 1,
            tls: false,
            auth: false,
            extra_args: Vec::new(),
        }
    }
}

/// The files of a TLS setup, all PEM, in the [`Etcd`]'s directory.
#[derive(Clone, Debug)]
pub struct Tls {
    /// The CA that signed the server and client certificates; the server
    /// trusts client certificates it signed, clients verify the server by it.
    pub ca: PathBuf,
    /// The server's certificate, for IP `127.0.0.1` (server and client auth:
    /// etcd 3.4's gRPC gateway dials the server with it).
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// A client certificate signed by [`Tls::ca`] (CN `sg-client`).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// A client certificate signed by another CA, which the server must refuse.
    pub stranger_cert: PathBuf,
    /// Its key.
    pub stranger_key: PathBuf,
}

/// A port claimed for the lifetime of this value (see the module doc).
struct Port {
    number: u16,
    _lock: File,
}

/// One etcd member: its ports, its arguments, and its process while it runs.
struct Member {
    name: String,
    client: Port,
    peer: Port,
    log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    paused: bool,
}

/// A running etcd (one member or a cluster), stopped and removed on drop.
pub struct Etcd {
    // Members before the directory: fields drop in order, so every process is
    // killed and reaped before its data directory is removed.
    members: Vec<Member>,
    scheme: &'static str,
    tls: Option<Tls>,
    root_password: Option<String>,
    dir: TempDir,
}

impl Etcd {
    /// One member, plain HTTP, no authentication.
    pub fn single() -> anyhow::Result<Self> {
        Self::start(&Options::default())
    }

    /// A static cluster of three members, plain HTTP, no authentication.
    pub fn three() -> anyhow::Result<Self> {
        Self::start(&Options {
            members: 3,
            ..Options::default()
        })
    }

    /// One member serving TLS that requires a client certificate.
    pub fn single_tls() -> anyhow::Result<Self> {
        Self::start(&Options {
            tls: true,
            ..Options::default()
        })
    }

    /// One member with etcd's authentication enabled for [`ROOT_USER`] and
    /// [`Etcd::root_password`].
    pub fn single_auth() -> anyhow::Result<Self> {
        Self::start(&Options {
            auth: true,
            ..Options::default()
        })
    }

    /// Starts the members of `opts` and waits until each answers.
    pub fn start(opts: &Options) -> anyhow::Result<Self> {
        anyhow::ensure!(opts.members > 0, "an etcd needs at least one member");
        REAP.call_once(reap_orphans);
        let dir = TempDir::new()?;
        let tls = if opts.tls {
            Some(make_tls(&dir.0.join("tls"))?)
        } else {
            None
        };
        let scheme = if opts.tls { "https" } else { "http" };

        let mut ports = Vec::with_capacity(opts.members);
        for i in 0..opts.members {
            ports.push((format!("m{i}"), claim_port()?, claim_port()?));
        }
        let initial_cluster = ports
            .iter()
            .map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{}", peer.number))
            .collect::<Vec<_>>()
            .join(",");
        // The token keeps members of different clusters from ever joining each
        // other, even if a port were reused while an old member still ran.
        let token = dir.0.file_name().map_or_else(
            || "sg-etcd".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );

        let mut members = Vec::with_capacity(opts.members);
        for (name, client, peer) in ports {
            let client_url = format!("{scheme}://127.0.0.1:{}", client.number);
            let peer_url = format!("http://127.0.0.1:{}", peer.number);
            let mut args: Vec<String> = [
                "--name",
                &name,
                "--data-dir",
                &dir.0.join(format!("{name}.data")).to_string_lossy(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &initial_cluster,
                "--initial-cluster-token",
                &token,
                // Ignored once the data directory holds a member: a restart
                // with the same arguments rejoins the cluster.
                "--initial-cluster-state",
                "new",
                // 3.4's default logger (capnslog) is deprecated and warns.
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
            ]
            .map(str::to_owned)
            .into();
            if let Some(tls) = &tls {
                for (flag, path) in [
                    ("--cert-file", &tls.server_cert),
                    ("--key-file", &tls.server_key),
                    ("--trusted-ca-file", &tls.ca),
                ] {
                    args.push(flag.to_owned());
                    args.push(path.to_string_lossy().into_owned());
                }
                args.push("--client-cert-auth".to_owned());
            }
            args.extend(opts.extra_args.iter().cloned());
            members.push(Member {
                log: dir.0.join(format!("{name}.log")),
                name,
                client,
                peer,
                args,
                child: None,
                paused: false,
            });
        }

        let mut etcd = Self {
            members,
            scheme,
            tls,
            root_password: None,
            dir,
        };
        let all: Vec<usize> = (0..opts.members).collect();
        etcd.start_members(&all)?;
        if opts.auth {
            etcd.enable_auth()?;
        }
        Ok(etcd)
    }

    /// Creates `root` with a fresh password, gives it the `root` role (which
    /// `auth enable` requires) and enables authentication.
    fn enable_auth(&mut self) -> anyhow::Result<()> {
        let password = format!(
            "sg-root-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.etcdctl(&[
            "user",
            "add",
            ROOT_USER,
            &format!("--new-user-password={password}"),
        ])?;
        self.etcdctl(&["role", "add", "root"])?;
        self.etcdctl(&["user", "grant-role", ROOT_USER, "root"])?;
        self.etcdctl(&["auth", "enable"])?;
        self.root_password = Some(password);
        Ok(())
    }

    /// Every member's client URL (`http://127.0.0.1:PORT` or `https://…`),
    /// stopped members included, as a client would be configured.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        format!(
            "{}://127.0.0.1:{}",
            self.scheme, self.members[i].client.number
        )
    }

    /// Member `i`'s peer URL (plain HTTP).
    pub fn peer_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].peer.number)
    }

    /// How many members the etcd has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether it has no members (never: [`Etcd::start`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The TLS files, for the TLS variant.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// The `root` user's password, for the authentication variant.
    pub fn root_password(&self) -> Option<&str> {
        self.root_password.as_deref()
    }

    /// The temporary directory holding data directories, logs and TLS files.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// The process ids of the members running now (paused ones included).
    pub fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.child.as_ref().map(Child::id))
            .collect()
    }

    /// Member `i`'s log so far (its stderr; etcd logs nothing to stdout).
    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    /// Kills member `i` (SIGKILL, as a crash) and reaps it. Its data directory
    /// stays, so [`Etcd::start_member`] brings it back with its data.
    pub fn stop_member(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Starts member `i` again on its data directory and waits until it
    /// answers, which in a cluster needs a quorum running.
    pub fn start_member(&mut self, i: usize) -> anyhow::Result<()> {
        self.start_members(&[i])
    }

    /// Kills every member: the store is gone until [`Etcd::restart`].
    pub fn stop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }

    /// Starts every member that is not running and waits until all answer.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let stopped: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].child.is_none())
            .collect();
        self.start_members(&stopped)
    }

    /// Starts members `which` (all at once: a new cluster elects its first
    /// leader only with a quorum up) and waits until each answers.
    pub fn start_members(&mut self, which: &[usize]) -> anyhow::Result<()> {
        for &i in which {
            self.members[i].spawn()?;
        }
        for &i in which {
            self.wait_healthy(i)?;
        }
        Ok(())
    }

    /// Freezes member `i` with SIGSTOP: its ports stay open but nothing
    /// answers, as when a network partition swallows packets.
    pub fn pause_member(&mut self, i: usize) -> anyhow::Result<()> {
        self.members[i].signal(libc::SIGSTOP)?;
        self.members[i].paused = true;
        Ok(())
    }

    /// Lets member `i` run again after [`Etcd::pause_member`].
    pub fn resume_member(&mut self, i: usize) -> anyhow::Result<()> {
        self.members[i].signal(libc::SIGCONT)?;
        self.members[i].paused = false;
        Ok(())
    }

    /// Freezes every member: the store is unreachable (connections hang)
    /// until [`Etcd::resume`].
    pub fn pause(&mut self) -> anyhow::Result<()> {
        for i in 0..self.members.len() {
            self.pause_member(i)?;
        }
        Ok(())
    }

    /// Lets every member run again.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        for i in 0..self.members.len() {
            self.resume_member(i)?;
        }
        Ok(())
    }

    /// The index of the member that is leader now, as the running members
    /// that are not paused see it; `None` if none of them knows one.
    pub fn leader(&self) -> anyhow::Result<Option<usize>> {
        let up: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some() && !self.members[i].paused)
            .collect();
        if up.is_empty() {
            return Ok(None);
        }
        let endpoints = up
            .iter()
            .map(|&i| self.endpoint(i))
            .collect::<Vec<_>>()
            .join(",");
        let out = self.etcdctl_at(&endpoints, &["endpoint", "status", "--write-out=json"])?;
        let statuses: serde_json::Value =
            serde_json::from_str(&out).context("parsing etcdctl endpoint status")?;
        let mut leader_id = None;
        let mut index_of = Vec::new();
        for s in statuses.as_array().into_iter().flatten() {
            let endpoint = s["Endpoint"].as_str().unwrap_or_default();
            let member_id = s["Status"]["header"]["member_id"].as_u64();
            let leader = s["Status"]["leader"].as_u64().filter(|&l| l != 0);
            leader_id = leader_id.or(leader);
            if let (Some(i), Some(id)) = (
                up.iter().copied().find(|&i| self.endpoint(i) == endpoint),
                member_id,
            ) {
                index_of.push((id, i));
            }
        }
        Ok(leader_id.and_then(|l| index_of.iter().find(|(id, _)| *id == l).map(|&(_, i)| i)))
    }

    /// Runs `etcdctl ARGS…` against every member, with the TLS files and the
    /// root credentials this etcd needs; returns its stdout.
    pub fn etcdctl(&self, args: &[&str]) -> anyhow::Result<String> {
        self.etcdctl_at(&self.endpoints().join(","), args)
    }

    fn etcdctl_at(&self, endpoints: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new("etcdctl");
        // 3.4 speaks v3 by default; say so anyway, and keep a caller's
        // ETCDCTL_* settings from changing what the harness talks to.
        cmd.env("ETCDCTL_API", "3")
            .env_remove("ETCDCTL_ENDPOINTS")
            .arg(format!("--endpoints={endpoints}"))
            .args(["--dial-timeout=2s", "--command-timeout=5s"]);
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cacert={}", tls.ca.display()))
                .arg(format!("--cert={}", tls.client_cert.display()))
                .arg(format!("--key={}", tls.client_key.display()));
        }
        if let Some(password) = &self.root_password {
            cmd.arg(format!("--user={ROOT_USER}"))
                .arg(format!("--password={password}"));
        }
        let out = cmd.args(args).stdin(Stdio::null()).output().context(
            "running etcdctl (Debian package etcd-client; scripts/setup.sh installs it)",
        )?;
        if !out.status.success() {
            bail!(
                "etcdctl {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until member `i` answers `endpoint health` (a proposal committed
    /// through it); fails with its log if it exits or [`START_TIMEOUT`] passes.
    fn wait_healthy(&mut self, i: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let endpoint = self.endpoint(i);
        loop {
            let Err(last) = self.etcdctl_at(&endpoint, &["endpoint", "health"]) else {
                return Ok(());
            };
            let member = &mut self.members[i];
            if let Some(child) = member.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                member.child = None;
                bail!(
                    "etcd member {} exited ({status}) while starting; log {}:\n{}",
                    member.name,
                    member.log.display(),
                    member.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd member {} at {endpoint} did not answer within {START_TIMEOUT:?} \
                     (last: {last:#}); log {}:\n{}",
                    member.name,
                    member.log.display(),
                    member.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Options for the etcd-client crate that reach this etcd: the CA and
    /// client certificate for the TLS variant, `root` and its password for
    /// the authentication variant, and a connect timeout so that a member
    /// that is down fails a call instead of hanging it.
    pub fn connect_options(&self) -> anyhow::Result<etcd_client::ConnectOptions> {
        let mut opts =
            etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
        if let Some(tls) = &self.tls {
            opts = opts.with_tls(tls.client_options(&tls.client_cert, &tls.client_key)?);
        }
        if let Some(password) = &self.root_password {
            opts = opts.with_user(ROOT_USER, password);
        }
        Ok(opts)
    }

    /// A client of every member, with [`Etcd::connect_options`].
    pub async fn client(&self) -> anyhow::Result<etcd_client::Client> {
        Ok(etcd_client::Client::connect(self.endpoints(), Some(self.connect_options()?)).await?)
    }
}

impl Tls {
    /// TLS options for the etcd-client crate: trust [`Tls::ca`], present the
    /// given certificate and key (e.g. [`Tls::client_cert`] or
    /// [`Tls::stranger_cert`]).
    pub fn client_options(
        &self,
        cert: &Path,
        key: &Path,
    ) -> anyhow::Result<etcd_client::TlsOptions> {
        Ok(self
            .server_only_options()?
            .identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?)))
    }

    /// TLS options that trust [`Tls::ca`] but present no client certificate.
    pub fn server_only_options(&self) -> anyhow::Result<etcd_client::TlsOptions> {
        Ok(etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&self.ca)?)))
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

impl Member {
    fn spawn(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new("etcd")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd (Debian package etcd-server; scripts/setup.sh installs it)")?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// SIGKILL works on a stopped (paused) process too, so no SIGCONT first.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    fn signal(&self, sig: libc::c_int) -> anyhow::Result<()> {
        let child = self
            .child
            .as_ref()
            .with_context(|| format!("etcd member {} is not running", self.name))?;
        signal(child.id(), sig)
            .with_context(|| format!("signal {sig} to etcd member {}", self.name))
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(pid: u32, sig: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Claims a free port in [`PORTS`]: locks its file under [`PORT_LOCKS`], then
/// checks that nothing listens on it now (a process outside the harness).
fn claim_port() -> anyhow::Result<Port> {
    let dir = std::env::temp_dir().join(PORT_LOCKS);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let span = PORTS.end - PORTS.start;
    // Each process, and each claim in it, starts somewhere else in the range,
    // so claimers rarely contend for the same files.
    let seed = std::process::id()
        .wrapping_mul(7919)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(13));
    let first = u16::try_from(seed % u32::from(span)).unwrap_or(0);
    for step in 0..span {
        let port = PORTS.start + (first + step) % span;
        let path = dir.join(port.to_string());
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(Port {
                number: port,
                _lock: file,
            });
        }
    }
    bail!("no free port in {PORTS:?}")
}

/// A directory of its own under `$TMPDIR`, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{n}", std::process::id()));
        // A directory of this name can only be left by an earlier process
        // with the same pid, whose members the reaper has killed.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Removes the directories of test processes that are gone, after killing the
/// etcd processes still running on them (a killed test runs no `Drop`).
fn reap_orphans() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        let dir = entry.path();
        for orphan in processes_under(&dir) {
            let _ = signal(orphan, libc::SIGKILL);
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

/// Whether process `pid` exists and is not a zombie (a killed test process
/// stays one until its parent reaps it).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses and
        // may itself hold spaces and parentheses.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        !matches!(state, Some("Z" | "X") | None)
    })
}

/// The processes whose command line names a path inside `dir` (an etcd's
/// `--data-dir`).
fn processes_under(dir: &Path) -> Vec<u32> {
    let needle = format!("{}/", dir.display());
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|&b| b == 0)
                    .any(|arg| arg.starts_with(needle.as_bytes()))
            })
        })
        .collect()
}

/// Makes a CA, a server certificate for `127.0.0.1`, a client certificate,
/// and a stranger's client certificate from a second CA, in `dir`.
fn make_tls(dir: &Path) -> anyhow::Result<Tls> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = |name: &str| dir.join(name);
    let ca = make_ca(dir, "ca", "sg-test-ca")?;
    make_leaf(
        dir,
        "server",
        &ca,
        "127.0.0.1",
        // Client auth too: etcd 3.4's gRPC gateway dials its own server with
        // the server certificate, and --client-cert-auth checks it.
        "extendedKeyUsage = serverAuth, clientAuth\nsubjectAltName = IP:127.0.0.1\n",
        1,
    )?;
    make_leaf(
        dir,
        "client",
        &ca,
        "sg-client",
        "extendedKeyUsage = clientAuth\n",
        2,
    )?;
    let stranger_ca = make_ca(dir, "stranger-ca", "sg-test-stranger-ca")?;
    make_leaf(
        dir,
        "stranger",
        &stranger_ca,
        "sg-client",
        "extendedKeyUsage = clientAuth\n",
        3,
    )?;
    Ok(Tls {
        ca: file("ca.crt"),
        server_cert: file("server.crt"),
        server_key: file("server.key"),
        client_cert: file("client.crt"),
        client_key: file("client.key"),
        stranger_cert: file("stranger.crt"),
        stranger_key: file("stranger.key"),
    })
}

/// Key options for every key: P-256 is quick to make and both Go's TLS and
/// rustls take it.
const NEW_KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

/// A self-signed CA `<stem>.crt` and `<stem>.key` in `dir`; returns the stem's
/// path.
fn make_ca(dir: &Path, stem: &str, cn: &str) -> anyhow::Result<PathBuf> {
    let base = dir.join(stem);
    let (crt, key) = (base.with_extension("crt"), base.with_extension("key"));
    let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
    args.extend(NEW_KEY);
    let subj = format!("/CN={cn}");
    let (crt_s, key_s) = (crt.to_string_lossy(), key.to_string_lossy());
    args.extend([
        "-keyout",
        &key_s,
        "-out",
        &crt_s,
        "-subj",
        &subj,
        "-addext",
        "basicConstraints = critical, CA:TRUE",
        "-addext",
        "keyUsage = critical, keyCertSign, cRLSign",
    ]);
    crate::topology::run("openssl", &args)?;
    Ok(base)
}

/// A certificate `<stem>.crt` (with `<stem>.key`) for `cn`, signed by the CA
/// at `ca` (a stem from [`make_ca`]), with the extensions in `ext` besides
/// those every leaf has.
fn make_leaf(
    dir: &Path,
    stem: &str,
    ca: &Path,
    cn: &str,
    ext: &str,
    serial: u32,
) -> anyhow::Result<()> {
    let base = dir.join(stem);
    let (crt, key, csr, extfile) = (
        base.with_extension("crt"),
        base.with_extension("key"),
        base.with_extension("csr"),
        base.with_extension("ext"),
    );
    fs::write(
        &extfile,
        format!(
            "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
             subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n{ext}"
        ),
    )
    .with_context(|| format!("writing {}", extfile.display()))?;
    let subj = format!("/CN={cn}");
    let (key_s, csr_s) = (key.to_string_lossy(), csr.to_string_lossy());
    let mut args = vec!["req", "-new", "-nodes"];
    args.extend(NEW_KEY);
    args.extend(["-keyout", &key_s, "-out", &csr_s, "-subj", &subj]);
    crate::topology::run("openssl", &args)?;
    let (ca_crt, ca_key) = (ca.with_extension("crt"), ca.with_extension("key"));
    let serial = serial.to_string();
    crate::topology::run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &csr_s,
            "-CA",
            &ca_crt.to_string_lossy(),
            "-CAkey",
            &ca_key.to_string_lossy(),
            "-set_serial",
            &serial,
            "-days",
            "2",
            "-extfile",
            &extfile.to_string_lossy(),
            "-out",
            &crt.to_string_lossy(),
        ],
    )?;
    Ok(())
}

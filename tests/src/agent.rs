//! The `sg-agent` binary as a child process: started, watched until it says a
//! line, stopped by a signal. Killed on drop if a test fails first.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::Context as _;

pub struct AgentProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Print the agent's log lines as they are read.
    echo: bool,
}

impl AgentProcess {
    /// Starts `bin ARGS…` and waits (up to 30 s) for a log line containing
    /// `ready`, which it returns.
    pub fn start(
        bin: &Path,
        args: &[&str],
        ready: &str,
        echo: bool,
    ) -> anyhow::Result<(Self, String)> {
        Self::start_with_env(bin, args, &[], ready, echo)
    }

    /// [`AgentProcess::start`] with `env` added to its environment.
    pub fn start_with_env(
        bin: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        ready: &str,
        echo: bool,
    ) -> anyhow::Result<(Self, String)> {
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("agent stderr")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let agent = Self { child, lines, echo };
        loop {
            let line = agent
                .lines
                .recv_timeout(Duration::from_secs(30))
                .with_context(|| format!("the agent never logged {ready:?}"))?;
            if echo {
                println!("agent: {line}");
            }
            if line.contains(ready) {
                return Ok((agent, line));
            }
        }
    }

    /// Waits (up to `timeout`) for a log line containing `pattern`, and
    /// returns it; lines before it are passed over.
    pub fn wait_for(&self, pattern: &str, timeout: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            if self.echo {
                println!("agent: {line}");
            }
            if line.contains(pattern) {
                return Some(line);
            }
        }
    }

    /// Whether the process has exited (then it is reaped).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Sends `signal`, waits for the exit, and returns its status and stdout.
    pub fn stop(mut self, signal: i32) -> anyhow::Result<(ExitStatus, String)> {
        let pid = i32::try_from(self.child.id())?;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, signal) };
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .context("agent stdout")?
            .read_to_string(&mut out)?;
        let status = self.child.wait()?;
        while let Ok(line) = self.lines.try_recv() {
            if self.echo {
                println!("agent: {line}");
            }
        }
        Ok((status, out))
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // Reached with the process running only when a test failed first.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `bin ARGS…` until it exits or `timeout` passes (then it is killed):
/// its exit status (`None` if it had to be killed) and its stderr.
pub fn run_to_exit(bin: &Path, args: &[&str], timeout: Duration) -> (Option<ExitStatus>, String) {
    let mut child = match Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return (None, format!("starting {}: {e}", bin.display())),
    };
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    (status, reader.join().unwrap_or_default())
}

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
        let mut child = Command::new(bin)
            .args(args)
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

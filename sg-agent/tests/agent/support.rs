//! Helpers that several of these tests wrote alike.

use sg_policy::RuleSpec;

/// A rule from the seeds' table columns (direction, policy, priority,
/// protocol, port range, peer).
pub fn rule(
    direction: &str,
    policy: &str,
    priority: &str,
    protocol: &str,
    ports: &str,
    peer: &str,
) -> RuleSpec {
    RuleSpec::from_text(direction, policy, priority, protocol, ports, peer).expect("test rule")
}

/// A directory of its own under the system temp dir (pid plus a counter in
/// its name), removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("sg-agent-test-{}-{n}-{what}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: failing to clean up must not become a second panic.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sg-agent ARGS…` with no `SG_AGENT_*` variable but those of `env`.
pub fn sg_agent(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sg-agent"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SG_AGENT_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .output()
        .expect("running sg-agent")
}

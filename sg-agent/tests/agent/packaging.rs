//! What a package ships beside the binary: the systemd unit and its
//! environment file (`packaging/`), and the man pages and shell completions
//! `sg-agent generate` makes from the CLI. (Building and installing the
//! package is `xtask/tests/dist.rs`, which needs root.)

use std::{path::Path, process::Command};

use crate::support::{TempDir, sg_agent};

fn packaging(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(file)
}

/// `--long` flags of `sg-agent run`, from its help.
fn run_flags() -> Vec<String> {
    let out = sg_agent(&["run", "--help"], &[]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split([' ', '=']).next())
        .filter(|f| *f != "help")
        .map(str::to_owned)
        .collect()
}

fn variable(flag: &str) -> String {
    format!("SG_AGENT_{}", flag.replace('-', "_").to_uppercase())
}

/// Man pages into `dir/man1` (a `MANPATH` directory then).
fn man_pages(dir: &Path) -> std::path::PathBuf {
    let man1 = dir.join("man1");
    let out = sg_agent(&["generate", "man", man1.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    man1
}

#[test]
fn man_pages_cover_every_command_and_the_run_flags_with_their_variables() {
    let dir = TempDir::new("man");
    let man1 = man_pages(&dir.0);
    for page in [
        "sg-agent.1",
        "sg-agent-run.1",
        "sg-agent-group.1",
        "sg-agent-group-create.1",
    ] {
        assert!(man1.join(page).is_file(), "no {page}");
    }
    // The packaging helper is not a page of its own.
    assert!(!man1.join("sg-agent-generate.1").exists());
    // roff escapes the hyphens of the text.
    let run = std::fs::read_to_string(man1.join("sg-agent-run.1"))
        .unwrap()
        .replace("\\-", "-");
    let flags = run_flags();
    assert!(flags.len() >= 17, "{flags:?}");
    for flag in &flags {
        assert!(
            run.contains(&format!("--{flag}")),
            "--{flag} not in sg-agent-run.1"
        );
        assert!(
            run.contains(&variable(flag)),
            "{} not in sg-agent-run.1",
            variable(flag)
        );
    }
    let top = std::fs::read_to_string(man1.join("sg-agent.1")).unwrap();
    assert!(top.contains("sg\\-agent\\-run(1)"), "{top}");
}

#[test]
fn completions_are_made_for_bash_zsh_and_fish() {
    let dir = TempDir::new("completions");
    for (shell, file) in [
        ("bash", "sg-agent.bash"),
        ("zsh", "_sg-agent"),
        ("fish", "sg-agent.fish"),
    ] {
        let out = sg_agent(&["generate", "completions", shell], &[]);
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("max-nics") && text.contains("prefix-list"),
            "{shell}"
        );
        let out = sg_agent(
            &["generate", "completions", shell, dir.0.to_str().unwrap()],
            &[],
        );
        assert!(out.status.success(), "{shell}");
        let written = std::fs::read_to_string(dir.0.join(file)).unwrap();
        assert_eq!(
            written, text,
            "{shell}: the file and standard output differ"
        );
    }
    // bash is here to read its script back.
    let check = Command::new("bash")
        .arg("-n")
        .arg(dir.0.join("sg-agent.bash"))
        .status()
        .unwrap();
    assert!(check.success());
}

#[test]
fn the_unit_file_verifies_without_a_warning() {
    // systemd-analyze checks that ExecStart's binary exists and that the
    // Documentation= pages open: a copy runs the binary under test, with
    // the pages generated here on MANPATH.
    let dir = TempDir::new("unit");
    man_pages(&dir.0);
    let unit = std::fs::read_to_string(packaging("sg-agent.service")).unwrap();
    assert!(
        unit.contains("\nExecStart=/usr/bin/sg-agent run\n"),
        "{unit}"
    );
    let copy = dir.0.join("sg-agent.service");
    std::fs::write(
        &copy,
        unit.replace(
            "ExecStart=/usr/bin/sg-agent",
            &format!("ExecStart={}", env!("CARGO_BIN_EXE_sg-agent")),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .env("MANPATH", &dir.0)
        .output()
        .expect("running systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );
}

#[test]
fn the_unit_makes_the_directories_of_the_default_paths() {
    let unit = std::fs::read_to_string(packaging("sg-agent.service")).unwrap();
    let setting = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}="))
            .to_owned()
    };
    let socket = Path::new(sg_agent::api::DEFAULT_SOCKET);
    assert_eq!(
        socket.parent(),
        Some(
            Path::new("/run")
                .join(setting("RuntimeDirectory"))
                .as_path()
        )
    );
    let help = String::from_utf8_lossy(&sg_agent(&["run", "--help"], &[]).stdout).into_owned();
    let state = Path::new("/var/lib").join(setting("StateDirectory"));
    for default in ["state.db", "fleet-cache.json"] {
        let path = state.join(default);
        assert!(
            help.contains(&format!("[default: {}]", path.display())),
            "{path:?} is not a default: {help}"
        );
    }
    for key in [
        "Type",
        "NotifyAccess",
        "WatchdogSec",
        "LimitMEMLOCK",
        "CapabilityBoundingSet",
    ] {
        setting(key);
    }
    assert_eq!(setting("Type"), "notify");
    assert_eq!(setting("EnvironmentFile"), "-/etc/default/sg-agent");
}

#[test]
fn the_environment_file_lists_every_variable_and_sets_none() {
    let text = std::fs::read_to_string(packaging("sg-agent.default")).unwrap();
    let mut flags = run_flags();
    flags.push("socket".to_owned());
    for flag in flags {
        let var = variable(&flag);
        assert!(text.contains(&format!("\n#{var}=")), "{var} not listed");
    }
    // Installed as it is, it changes nothing: every line a comment.
    for line in text.lines() {
        assert!(line.is_empty() || line.starts_with('#'), "{line:?}");
    }
}

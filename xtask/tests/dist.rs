//! `cargo xtask dist --debug` end to end, as root: the package is built,
//! installed with dpkg, its binary and man pages used, and purged, leaving
//! none of its files. Refuses (fails, naming it) when a package called
//! sg-agent is on the machine already: that install is not the test's to
//! replace or remove.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("MANWIDTH", "200")
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(out.status.success(), "{program} {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// dpkg's state of the sg-agent package (`not-installed` when unknown).
fn state() -> String {
    let out = run("dpkg-query", &["-W", "-f=${db:Status-Status}", "sg-agent"]);
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if said.is_empty() {
        "not-installed".to_owned()
    } else {
        said
    }
}

/// The package this test installed: purged on drop, even when it failed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "sg-agent"]);
    }
}

#[test]
fn the_package_installs_runs_shows_its_man_pages_and_purges_to_nothing() {
    assert_eq!(
        ok("id", &["-u"]).trim(),
        "0",
        "this test installs a Debian package: run it as root"
    );
    let before = state();
    assert_eq!(
        before, "not-installed",
        "a package named sg-agent is on this machine already ({before}): \
         this test would replace and then purge it, so it refuses; \
         remove it (dpkg --purge sg-agent) to run the test"
    );
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["dist", "--debug"])
        .current_dir(&root)
        .output()
        .expect("running xtask dist");
    assert!(out.status.success(), "xtask dist --debug: {}", text(&out));
    let deb = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("the package's path")
        .to_owned();
    assert!(
        Path::new(&deb)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("sg-agent_0.1.0_"),
        "{deb}"
    );
    let fields = ok(
        "dpkg-deb",
        &["--field", &deb, "Package", "Version", "Depends"],
    );
    assert!(
        fields.contains("Version: 0.1.0") && fields.contains("iproute2"),
        "{fields}"
    );

    let _installed = Installed;
    ok("dpkg", &["-i", &deb]);
    assert_eq!(state(), "installed");
    let version = ok("/usr/bin/sg-agent", &["--version"]);
    assert_eq!(version.trim(), "sg-agent 0.1.0");
    let top = ok("man", &["-P", "cat", "sg-agent"]);
    assert!(top.contains("sg-agent-run(1)"), "{top}");
    let run_page = ok("man", &["-P", "cat", "sg-agent-run"]);
    assert!(
        run_page.contains("--max-nics") && run_page.contains("SG_AGENT_MAX_NICS"),
        "{run_page}"
    );
    // What dpkg installed: the files the package ships, each checked gone
    // after the purge.
    let files: Vec<String> = ok("dpkg", &["-L", "sg-agent"])
        .lines()
        .filter(|l| Path::new(l).is_file())
        .map(str::to_owned)
        .collect();
    for expected in [
        "/usr/bin/sg-agent",
        "/lib/systemd/system/sg-agent.service",
        "/etc/default/sg-agent",
        "/usr/share/man/man1/sg-agent.1.gz",
        "/usr/share/man/man1/sg-agent-run.1.gz",
        "/usr/share/bash-completion/completions/sg-agent",
        "/usr/share/zsh/vendor-completions/_sg-agent",
        "/usr/share/fish/vendor_completions.d/sg-agent.fish",
        "/usr/share/doc/sg-agent/copyright",
    ] {
        assert!(
            files.iter().any(|f| f == expected),
            "{expected} not installed: {files:?}"
        );
    }
    let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", "sg-agent"]);
    assert!(conffiles.contains("/etc/default/sg-agent"), "{conffiles}");

    ok("dpkg", &["--purge", "sg-agent"]);
    assert_eq!(state(), "not-installed");
    let left: Vec<&String> = files.iter().filter(|f| Path::new(f).exists()).collect();
    assert!(left.is_empty(), "left after the purge: {left:?}");
}

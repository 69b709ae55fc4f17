//! `sg-agent run`'s flags from the environment (`SG_AGENT_<FLAG>`), as a
//! unit's `EnvironmentFile` gives them. Nothing here starts a daemon: every
//! case ends in a refusal before the agent touches the kernel.

use crate::support::{TempDir, sg_agent};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bad_value_only_in_the_environment_is_refused_naming_the_flag_and_variable() {
    for (var, value, flag) in [
        ("SG_AGENT_MAX_NICS", "lots", "--max-nics"),
        ("SG_AGENT_XDP_MODE", "fast", "--xdp-mode"),
        ("SG_AGENT_DROP_LOG", "0", "--drop-log"),
        ("SG_AGENT_METRICS", "localhost", "--metrics"),
        // A switch takes a boolean, not anything at all.
        (
            "SG_AGENT_METRICS_ANY_ADDRESS",
            "maybe",
            "--metrics-any-address",
        ),
        ("SG_AGENT_SOCKET", "", "--socket"),
    ] {
        let out = sg_agent(&["run"], &[(var, value)]);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {e}");
        assert!(e.contains(flag) && e.contains(var), "{var}={value}: {e}");
    }
}

#[test]
fn the_command_line_wins_over_the_environment() {
    // The bad value in the environment is not even read: the refusal is
    // about the switch typed, the only error left once parsing succeeded.
    let out = sg_agent(
        &["run", "--max-nics", "8", "--metrics-any-address"],
        &[("SG_AGENT_MAX_NICS", "lots")],
    );
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains("--metrics-any-address is given without --metrics"),
        "{e}"
    );
    assert!(!e.contains("SG_AGENT_MAX_NICS"), "{e}");
}

#[test]
fn switches_in_the_environment_read_true_and_false() {
    for truth in ["true", "1", "yes", "on"] {
        let out = sg_agent(&["run"], &[("SG_AGENT_METRICS_ANY_ADDRESS", truth)]);
        let e = stderr(&out);
        assert!(
            e.contains("--metrics-any-address is given without"),
            "{truth}: {e}"
        );
    }
    // `false` is not given: the agent goes on, to the namespace it is told
    // (from the environment too) to enter, which does not exist.
    let dir = TempDir::new("env-false");
    let missing = dir.0.join("no-such-netns");
    let store = dir.0.join("state.db");
    for falsity in ["false", "0", "no", "off"] {
        let out = sg_agent(
            &["--socket", dir.0.join("api.sock").to_str().unwrap(), "run"],
            &[
                ("SG_AGENT_METRICS_ANY_ADDRESS", falsity),
                ("SG_AGENT_REPLACE_ENFORCED_POLICY", falsity),
                ("SG_AGENT_NETNS", missing.to_str().unwrap()),
                ("SG_AGENT_STORE", store.to_str().unwrap()),
            ],
        );
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{falsity}: {e}");
        assert!(
            e.contains("entering network namespace") && e.contains("no-such-netns"),
            "{falsity}: {e}"
        );
    }
}

#[test]
fn run_help_lists_every_flag_with_its_variable() {
    let out = sg_agent(&["run", "--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let flags: Vec<&str> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split([' ', '=']).next())
        .filter(|f| *f != "help")
        .collect();
    assert!(flags.len() >= 17, "{help}");
    for flag in flags {
        let var = format!("SG_AGENT_{}", flag.replace('-', "_").to_uppercase());
        assert!(
            help.contains(&format!("[env: {var}=")),
            "--{flag} without {var}: {help}"
        );
    }
}

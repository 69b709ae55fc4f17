//! The agent's log on standard error: `env_logger`'s usual lines (`RUST_LOG`
//! filters them; `info` by default), or, when standard error is the
//! journal's stream, lines journald reads a priority from.
//!
//! systemd sets `JOURNAL_STREAM=DEV:INODE` for a unit whose standard error
//! goes to the journal. The variable is inherited by children whose output
//! goes elsewhere, so it counts only when it names the stream standard error
//! still is (as sd-daemon(3) advises). Then each line starts with the syslog
//! priority, `<3>` to `<7>`, and has no time stamp or level word: journald
//! keeps both as fields of its own.

use std::{io::Write as _, os::fd::AsFd as _, os::unix::fs::MetadataExt as _};

use log::Level;

/// Sets up the process's logger (once, before anything logs).
pub fn init() {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if stderr_is_journal() {
        builder.format(|out, record| {
            out.write_all(journal_line(record.level(), &record.args().to_string()).as_bytes())
        });
    }
    builder.init();
}

/// The syslog priority sd-daemon(3) prefixes a line with for `level`.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// `message` as journal lines: each of its lines with the priority in front
/// (journald reads every line of the stream as an entry of its own, so a
/// line without one would fall back to the unit's default, info).
pub fn journal_line(level: Level, message: &str) -> String {
    let prefix = format!("<{}>", priority(level));
    let mut out = String::with_capacity(message.len() + prefix.len() + 1);
    for line in message.split('\n') {
        out.push_str(&prefix);
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Whether `$JOURNAL_STREAM` names the device and inode of standard error.
fn stderr_is_journal() -> bool {
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(stderr).metadata() else {
        return false;
    };
    names_stream(&var.to_string_lossy(), meta.dev(), meta.ino())
}

/// Whether `journal_stream` (`DEV:INODE`, decimal) names `dev` and `ino`.
fn names_stream(journal_stream: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = journal_stream.trim().split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_are_sd_daemons() {
        assert_eq!(journal_line(Level::Error, "x"), "<3>x\n");
        assert_eq!(journal_line(Level::Warn, "x"), "<4>x\n");
        assert_eq!(journal_line(Level::Info, "serving"), "<6>serving\n");
        assert_eq!(journal_line(Level::Debug, "x"), "<7>x\n");
        assert_eq!(journal_line(Level::Trace, "x"), "<7>x\n");
    }

    #[test]
    fn every_line_of_a_message_carries_the_priority() {
        assert_eq!(
            journal_line(Level::Warn, "! unbinds\n! deletes"),
            "<4>! unbinds\n<4>! deletes\n"
        );
        assert_eq!(journal_line(Level::Info, ""), "<6>\n");
    }

    #[test]
    fn journal_stream_counts_only_for_the_stream_it_names() {
        assert!(names_stream("8:12345", 8, 12345));
        assert!(names_stream("8:12345\n", 8, 12345));
        assert!(!names_stream("8:12346", 8, 12345));
        assert!(!names_stream("9:12345", 8, 12345));
        for bad in ["", "8", "8:", ":12345", "x:y", "8:12345:1"] {
            assert!(!names_stream(bad, 8, 12345), "{bad:?}");
        }
    }
}

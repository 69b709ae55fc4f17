//! `sg-agent run` under a service manager, played by the test: the
//! notifications of `sd_notify(3)` on a datagram socket of the test's own
//! (`NOTIFY_SOCKET`), and the journal's line format (`JOURNAL_STREAM`).

use std::{
    os::unix::{fs::MetadataExt as _, net::UnixDatagram},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sg_tests::{daemon::Daemon, topology::Netns};

use crate::support::bin;

/// The next notification, as text; `None` after `timeout`.
fn next(manager: &UnixDatagram, timeout: Duration) -> Option<String> {
    manager.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = vec![0; 4096];
    let len = manager.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

fn has_line(message: &str, line: &str) -> bool {
    message.lines().any(|l| l == line)
}

/// Every notification that arrives within `window`.
fn gather(manager: &UnixDatagram, window: Duration) -> Vec<String> {
    let end = Instant::now() + window;
    let mut got = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match next(manager, left.max(Duration::from_millis(1))) {
            Some(m) => got.push(m),
            None => break,
        }
    }
    got
}

#[test]
fn the_manager_hears_ready_once_serving_then_status_watchdog_and_stopping() {
    let ns = Netns::new("notify").unwrap();
    let mut d = Daemon::new(bin(), ns.name(), &[]).unwrap();
    let path = d.dir.join("notify.sock");
    let manager = UnixDatagram::bind(&path).unwrap();
    // The moment READY=1 arrives, the API must answer already.
    let listener = manager.try_clone().unwrap();
    let cli = d.client();
    let on_ready = std::thread::spawn(move || {
        let mut before = Vec::new();
        while let Some(m) = next(&listener, Duration::from_secs(30)) {
            if has_line(&m, "READY=1") {
                return (before, m, Some(cli.cli(&["status", "--json"])));
            }
            before.push(m);
        }
        (before, String::new(), None)
    });
    let env = [
        ("NOTIFY_SOCKET", path.to_str().unwrap()),
        ("WATCHDOG_USEC", "400000"),
    ];
    d.restart_env(&[], &env).unwrap();
    let (before, ready, status) = on_ready.join().unwrap();
    let status = status.expect("no READY=1 within 30 s");
    assert!(
        status.status.success(),
        "READY=1 came before the API answered: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(before.is_empty(), "before READY=1: {before:?}");
    assert!(has_line(&ready, "STATUS=enforcing 0 NICs"), "{ready:?}");

    // The watchdog, at half of 400 ms: about ten pings in two seconds. A
    // loaded machine (CI with the suite's other tests) starves the loop now
    // and then: three is enough to tell the pings are periodic, and more
    // than fifteen would be pings sent more often than asked.
    let second = gather(&manager, Duration::from_secs(2));
    let pings = second.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(
        (3..=15).contains(&pings),
        "{pings} pings in 2 s: {second:?}"
    );

    // A change of what is enforced is a new status (a NIC may be bound
    // before its interface exists).
    let g = d.group("web");
    d.bind("eth-missing", &["10.77.0.2"], &g);
    let status_line = "STATUS=enforcing 1 NIC";
    let mut seen = gather(&manager, Duration::from_millis(500));
    assert!(
        seen.iter().any(|m| has_line(m, status_line)),
        "{status_line} not sent: {seen:?}"
    );

    d.stop(libc::SIGTERM).unwrap();
    seen.extend(gather(&manager, Duration::from_millis(300)));
    assert!(
        seen.iter().any(|m| has_line(m, "STOPPING=1")),
        "no STOPPING=1: {seen:?}"
    );
    assert!(
        !second.iter().chain(&seen).any(|m| has_line(m, "READY=1")),
        "READY=1 sent more than once"
    );
}

#[test]
fn an_abstract_notify_socket_is_reached_from_the_served_namespace() {
    // An abstract name is looked up in the network namespace of the sending
    // socket: the agent makes it before entering the namespace it serves.
    let ns = Netns::new("notify-abs").unwrap();
    let mut d = Daemon::new(bin(), ns.name(), &[]).unwrap();
    let name = format!("sg-agent-test-notify-{}-{}", std::process::id(), ns.name());
    let addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            name.as_bytes(),
        )
        .unwrap();
    let manager = UnixDatagram::bind_addr(&addr).unwrap();
    d.restart_env(&[], &[("NOTIFY_SOCKET", &format!("@{name}"))])
        .unwrap();
    let ready = next(&manager, Duration::from_secs(10)).expect("no notification");
    assert!(has_line(&ready, "READY=1"), "{ready:?}");
    // No watchdog asked for, none sent.
    let after = gather(&manager, Duration::from_millis(300));
    assert!(!after.iter().any(|m| m.contains("WATCHDOG")), "{after:?}");
}

/// The agent started by hand (its stderr to a file), killed if a test
/// fails first.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn under_the_journal_each_line_starts_with_its_priority_and_no_time() {
    let ns = Netns::new("journal").unwrap();
    let d = Daemon::new(bin(), ns.name(), &[]).unwrap();
    // Standard error is a file here; JOURNAL_STREAM names it, as systemd
    // names the journal's socket.
    let log = d.dir.join("stderr");
    let file = std::fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    let agent = Started(
        Command::new(bin())
            .arg("--socket")
            .arg(&d.socket)
            .args(["run", "--netns", ns.name(), "--store"])
            .arg(&d.store)
            .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap(),
    );
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        sg_tests::eventually(Duration::from_secs(30), || text()
            .contains(sg_tests::daemon::READY)),
        "never served: {}",
        text()
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(i32::try_from(agent.0.id()).unwrap(), libc::SIGTERM) };
    let mut agent = agent;
    agent.0.wait().unwrap();
    let text = text();
    assert!(text.contains("<6>serving the API on "), "{text}");
    assert!(text.contains("<6>stopping;"), "{text}");
    for line in text.lines() {
        let priority = line
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .map(|(p, _)| p);
        assert!(
            matches!(priority, Some("3" | "4" | "6" | "7")),
            "no priority: {line:?}\n{text}"
        );
        assert!(
            !line.contains(" INFO ") && !line.contains("[20"),
            "{line:?}"
        );
    }
}

//! Fault injection for tests: a map write that fails, or the agent killed
//! with SIGKILL at a named step. Compiled into debug builds only (what
//! `cargo test` builds); in release builds every function here is an empty
//! inline no-op, so nothing can switch it on.
//!
//! Armed from the environment by [`arm`] (the daemon calls it once it
//! serves, so start-up's own writes are not counted; `cleanup` at its
//! start), or directly by a test in the same process:
//!
//! - `SG_AGENT_FAULT_MAP_WRITE=N[:ERRNO]`: the N-th map write or delete the
//!   writer makes from then on fails with `ERRNO` (a number, or one of
//!   `ENOMEM`, `E2BIG`, `ENOSPC`, `EINVAL`; default `ENOMEM`), once.
//! - `SG_AGENT_FAULT_KILL=POINT:N`: the N-th time the agent reaches the step
//!   named `POINT` (or any step, for `*`), it kills itself with SIGKILL.
//! - `SG_AGENT_FAULT_MAP_READ=MAP[@NIC]`: every read-back of map `MAP` (its
//!   name, e.g. `SG_RULESTATS_V1`) that the counters, `stats` and metrics
//!   make fails with `EIO`, for NIC `NIC` only when one is named; for as
//!   long as the agent runs, so each scrape meets it again.
//!
//! What the environment arms is process-wide: the agent is a process of its
//! own, and its writes run on whichever of its threads. What a test arms
//! with [`fail_map_write`] counts and fails the calling thread's writes
//! only, so the other tests of its binary, running on threads beside it and
//! writing maps of their own, are neither counted nor failed.

#[cfg(debug_assertions)]
mod on {
    use std::{
        cell::Cell,
        sync::{
            Mutex,
            atomic::{AtomicU64, Ordering},
        },
    };

    // The failure the environment asked for: every thread's writes count.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    static FAIL_AT: AtomicU64 = AtomicU64::new(0);
    static ERRNO: AtomicU64 = AtomicU64::new(libc::ENOMEM as u64);
    static KILL: Mutex<Option<(String, u64)>> = Mutex::new(None);
    /// The map whose reads fail, and the NIC if only that one's.
    static READ: Mutex<Option<(String, Option<String>)>> = Mutex::new(None);
    static POINTS: AtomicU64 = AtomicU64::new(0);

    /// The failure a test asked for on this thread (`fail_at` 0: none).
    #[derive(Clone, Copy)]
    struct Local {
        fail_at: u64,
        writes: u64,
        errno: i32,
    }

    thread_local! {
        static LOCAL: Cell<Local> = const {
            Cell::new(Local { fail_at: 0, writes: 0, errno: libc::ENOMEM })
        };
    }

    fn errno(name: &str) -> Option<i32> {
        Some(match name {
            "ENOMEM" => libc::ENOMEM,
            "E2BIG" => libc::E2BIG,
            "ENOSPC" => libc::ENOSPC,
            "EINVAL" => libc::EINVAL,
            n => n.parse().ok()?,
        })
    }

    pub fn arm() {
        WRITES.store(0, Ordering::SeqCst);
        POINTS.store(0, Ordering::SeqCst);
        if let Ok(spec) = std::env::var("SG_AGENT_FAULT_MAP_WRITE") {
            let (n, e) = spec.split_once(':').unwrap_or((&spec, "ENOMEM"));
            if let (Ok(n), Some(e)) = (n.parse::<u64>(), errno(e)) {
                ERRNO.store(u64::from(e.unsigned_abs()), Ordering::SeqCst);
                FAIL_AT.store(n, Ordering::SeqCst);
            }
        }
        if let Ok(spec) = std::env::var("SG_AGENT_FAULT_KILL")
            && let Some((point, n)) = spec.rsplit_once(':')
            && let Ok(n) = n.parse::<u64>()
        {
            *KILL.lock().expect("fault lock") = Some((point.to_owned(), n));
        }
        if let Ok(spec) = std::env::var("SG_AGENT_FAULT_MAP_READ") {
            let (map, nic) = match spec.split_once('@') {
                Some((map, nic)) => (map.to_owned(), Some(nic.to_owned())),
                None => (spec, None),
            };
            *READ.lock().expect("fault lock") = Some((map, nic));
        }
    }

    pub fn map_read(map: &str, nic: Option<&str>) -> Option<std::io::Error> {
        let read = READ.lock().expect("fault lock");
        let (want, only) = read.as_ref()?;
        if want != map || only.as_deref().is_some_and(|n| Some(n) != nic) {
            return None;
        }
        log::debug!("fault injection: a read of {map} fails with EIO");
        Some(std::io::Error::from_raw_os_error(libc::EIO))
    }

    pub fn fail_map_write(nth: u64, errno: i32) {
        LOCAL.set(Local {
            fail_at: nth,
            writes: 0,
            errno: errno.saturating_abs(),
        });
    }

    pub fn pending() -> bool {
        LOCAL.get().fail_at != 0
    }

    pub fn map_write() -> Option<std::io::Error> {
        let local = thread_map_write();
        let process = process_map_write();
        local.or(process)
    }

    /// The calling thread's write counted against what its test asked for.
    fn thread_map_write() -> Option<std::io::Error> {
        let mut l = LOCAL.get();
        if l.fail_at == 0 {
            return None;
        }
        l.writes += 1;
        let n = l.writes;
        if n != l.fail_at {
            LOCAL.set(l);
            return None;
        }
        l.fail_at = 0;
        LOCAL.set(l);
        log::warn!(
            "fault injection: map write {n} of this thread fails with errno {}",
            l.errno
        );
        Some(std::io::Error::from_raw_os_error(l.errno))
    }

    /// The write counted against what the environment asked for.
    fn process_map_write() -> Option<std::io::Error> {
        let at = FAIL_AT.load(Ordering::SeqCst);
        if at == 0 {
            return None;
        }
        let n = WRITES.fetch_add(1, Ordering::SeqCst) + 1;
        if n != at {
            return None;
        }
        FAIL_AT.store(0, Ordering::SeqCst);
        let errno = i32::try_from(ERRNO.load(Ordering::SeqCst)).unwrap_or(libc::ENOMEM);
        log::warn!("fault injection: map write {n} fails with errno {errno}");
        Some(std::io::Error::from_raw_os_error(errno))
    }

    pub fn point(name: &str) {
        let kill = KILL.lock().expect("fault lock").clone();
        let Some((want, at)) = kill else { return };
        if want != "*" && want != name {
            return;
        }
        let n = POINTS.fetch_add(1, Ordering::SeqCst) + 1;
        if n == at {
            log::warn!("fault injection: SIGKILL at {name} ({n})");
            // SAFETY: raising a signal at ourselves.
            unsafe { libc::raise(libc::SIGKILL) };
        }
    }
}

/// Arms the faults the environment asks for (debug builds only).
#[inline]
pub fn arm() {
    #[cfg(debug_assertions)]
    on::arm();
}

/// Makes the calling thread's `nth` map write from now fail with `errno`
/// (debug builds only; for tests that drive the data plane in their own
/// process, on the thread that writes: other threads are not counted).
#[inline]
pub fn fail_map_write(nth: u64, errno: i32) {
    #[cfg(debug_assertions)]
    on::fail_map_write(nth, errno);
    #[cfg(not(debug_assertions))]
    let _ = (nth, errno);
}

/// Whether the map write failure the calling thread asked for has not
/// happened yet (cancel it with `fail_map_write(0, 0)`).
#[inline]
pub fn pending() -> bool {
    #[cfg(debug_assertions)]
    return on::pending();
    #[cfg(not(debug_assertions))]
    false
}

/// Called before every map write or delete of the writer: the injected
/// failure, if this is the one.
#[inline]
pub fn map_write() -> Option<std::io::Error> {
    #[cfg(debug_assertions)]
    return on::map_write();
    #[cfg(not(debug_assertions))]
    None
}

/// Called before a read-back of counters from `map` (of NIC `nic`, if the
/// map is per NIC): the injected failure, if the environment asked for one
/// there.
#[inline]
pub fn map_read(map: &str, nic: Option<&str>) -> Option<std::io::Error> {
    #[cfg(debug_assertions)]
    return on::map_read(map, nic);
    #[cfg(not(debug_assertions))]
    {
        let _ = (map, nic);
        None
    }
}

/// A named step where a test may have the agent killed.
#[inline]
pub fn point(name: &str) {
    #[cfg(debug_assertions)]
    on::point(name);
    #[cfg(not(debug_assertions))]
    let _ = name;
}

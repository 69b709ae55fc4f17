//! When a table slot that just left service may be written again: after an
//! RCU grace period, a guarantee the kernel gives rather than a guess.
//!
//! XDP and TC programs run inside RCU read-side critical sections (NAPI and
//! the qdisc layer run them with bottom halves disabled, which RCU counts as
//! a reader since the flavours were consolidated in 4.20; test runs take
//! `rcu_read_lock`). A program run that read an interface's old config (and
//! so the old slot) is therefore finished once a grace period that began
//! after the switch has ended. `membarrier(MEMBARRIER_CMD_GLOBAL)` is the
//! system call that waits for one (`synchronize_rcu`); it takes a few
//! milliseconds (8 ms measured here), so one runs in the background after
//! every switch, and a writer that wants the slot waits only for what is
//! left of it.
//!
//! Where the kernel refuses the call (`nohz_full` kernels return `EINVAL`),
//! a conservative sleep stands in, and the agent says so once.

use std::{
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

/// What stands in for a grace period where membarrier is refused: far longer
/// than any program run (microseconds), but not a guarantee.
const FALLBACK: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Counts {
    /// The last ticket handed out.
    requested: u64,
    /// Every ticket up to this one has had its grace period.
    completed: u64,
    /// The data plane is gone: the worker stops.
    closed: bool,
}

#[derive(Default)]
struct Shared {
    counts: Mutex<Counts>,
    changed: Condvar,
}

/// Grace periods on demand, run by a worker thread.
pub struct Grace {
    shared: Arc<Shared>,
}

/// A grace period that begins after the moment it was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Ticket(u64);

impl Grace {
    pub fn new() -> Self {
        let shared = Arc::new(Shared::default());
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("sg-grace".to_owned())
            .spawn(move || run(&worker))
            .expect("spawning the grace period thread");
        Self { shared }
    }

    /// Asks for a grace period that begins after now (call it right after a
    /// switch); [`Grace::wait`] on the ticket returns once it has ended.
    pub fn request(&self) -> Ticket {
        let mut c = self.shared.counts.lock().expect("grace lock");
        c.requested += 1;
        self.shared.changed.notify_all();
        Ticket(c.requested)
    }

    /// Blocks until the grace period of `ticket` has ended.
    pub fn wait(&self, ticket: Ticket) {
        let mut c = self.shared.counts.lock().expect("grace lock");
        while c.completed < ticket.0 {
            c = self.shared.changed.wait(c).expect("grace lock");
        }
    }

    /// [`Grace::request`] and [`Grace::wait`]: for a writer that must reuse
    /// what it just took out of service.
    pub fn synchronize(&self) {
        let t = self.request();
        self.wait(t);
    }
}

impl Default for Grace {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Grace {
    fn drop(&mut self) {
        if let Ok(mut c) = self.shared.counts.lock() {
            c.closed = true;
            self.shared.changed.notify_all();
        }
    }
}

fn run(shared: &Shared) {
    let mut warned = false;
    loop {
        let target = {
            let mut c = shared.counts.lock().expect("grace lock");
            while c.requested == c.completed && !c.closed {
                c = shared.changed.wait(c).expect("grace lock");
            }
            if c.closed {
                return;
            }
            c.requested
        };
        // Begins after every ticket up to `target` was handed out.
        if let Err(e) = synchronize_rcu() {
            if !warned {
                log::warn!(
                    "membarrier(MEMBARRIER_CMD_GLOBAL) refused ({e}): waiting {FALLBACK:?} instead of an RCU grace period before reusing a table slot"
                );
                warned = true;
            }
            std::thread::sleep(FALLBACK);
        }
        let mut c = shared.counts.lock().expect("grace lock");
        c.completed = c.completed.max(target);
        shared.changed.notify_all();
    }
}

/// `membarrier(MEMBARRIER_CMD_GLOBAL, 0, 0)`: returns after an RCU grace
/// period (the kernel calls `synchronize_rcu`).
fn synchronize_rcu() -> std::io::Result<()> {
    const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
    // SAFETY: membarrier takes two integers and a CPU id; none is a pointer.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_waits_for_a_grace_period_that_began_after_it() {
        let g = Grace::new();
        let t = g.request();
        g.wait(t);
        let later = g.request();
        assert!(later > t);
        g.wait(later);
        g.synchronize();
    }
}

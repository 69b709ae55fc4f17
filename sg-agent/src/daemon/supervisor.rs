//! What the daemon tells its service manager (`crate::systemd`): `READY=1`
//! once it serves, a one-line `STATUS=` when what it enforces changes,
//! `WATCHDOG=1` from the owner's loop, `STOPPING=1` when it stops.
//!
//! The watchdog is pinged by a branch of the owner task's loop, the one that
//! handles every change and interface event: if that loop hangs, the pings
//! stop and the manager restarts the agent (the pinned data plane goes on
//! enforcing meanwhile).

use super::Service;
use crate::systemd;

/// What was last told, and the watchdog's timer.
pub struct Supervisor {
    /// NICs bound and degraded, as last put in `STATUS=`.
    told: (usize, usize),
    watchdog: Option<tokio::time::Interval>,
}

impl Supervisor {
    /// Tells the manager the daemon is ready, with its status: call once the
    /// API socket is bound and the stored policy is in force.
    pub fn ready(service: &mut Service) -> Self {
        let told = counts(service);
        systemd::notify(&format!("READY=1\nSTATUS={}", status_text(told.0, told.1)));
        let watchdog = systemd::watchdog_interval().map(|every| {
            log::info!("pinging the service manager's watchdog every {every:?}");
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        Self { told, watchdog }
    }

    /// Whether the manager watches this process.
    pub fn watched(&self) -> bool {
        self.watchdog.is_some()
    }

    /// The watchdog's next tick (pending for ever when there is none; the
    /// loop's branch is disabled then anyway).
    pub async fn tick(&mut self) {
        match &mut self.watchdog {
            Some(t) => {
                t.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// `WATCHDOG=1`: the loop is alive.
    pub fn ping() {
        systemd::notify("WATCHDOG=1");
    }

    /// A new `STATUS=` if the NICs bound or degraded changed (cheap enough to
    /// call after every turn of the loop).
    pub fn update(&mut self, service: &mut Service) {
        let now = counts(service);
        if now != self.told {
            self.told = now;
            systemd::notify(&format!("STATUS={}", status_text(now.0, now.1)));
        }
    }

    /// `STOPPING=1`, when the daemon begins to stop.
    pub fn stopping() {
        systemd::notify("STOPPING=1\nSTATUS=stopping; the data plane stays pinned");
    }
}

/// NICs bound, and how many of them are degraded.
fn counts(service: &mut Service) -> (usize, usize) {
    let bound = service.state().nics.len();
    (bound, service.reconciler().degraded().len())
}

/// The one-line status `systemctl status` shows.
pub fn status_text(bound: usize, degraded: usize) -> String {
    let nics = if bound == 1 { "NIC" } else { "NICs" };
    if degraded == 0 {
        format!("enforcing {bound} {nics}")
    } else {
        format!("enforcing {bound} {nics}, {degraded} degraded (see sg-agent status)")
    }
}

#[cfg(test)]
mod tests {
    use super::status_text;

    #[test]
    fn status_names_the_nics_and_the_degraded() {
        assert_eq!(status_text(0, 0), "enforcing 0 NICs");
        assert_eq!(status_text(1, 0), "enforcing 1 NIC");
        assert_eq!(
            status_text(3, 1),
            "enforcing 3 NICs, 1 degraded (see sg-agent status)"
        );
    }
}

//! Keeping the data plane equal to the policy: every NIC binding whose
//! interface exists in this network namespace is compiled and, if its tables
//! changed, installed with a hitless switch; bindings that went away are
//! unbound.
//!
//! Failures are per NIC: one NIC that cannot be brought to its policy does
//! not stop the others. It keeps the policy it had in force, or, if it never
//! had one, is bound closed (every packet dropped) rather than left passing
//! everything; either way it is reported *degraded* (with the reason) until
//! a later apply or repair succeeds.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::dataplane::{
    AttachMode, Binding, Dataplane, Drift, Error as DataplaneError, Expected, Repair,
};
use sg_policy::compile::{CompileError, Table, compile};
use sg_policy::{Direction, Settings, State, touched::Touched};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The policy cannot be compiled (or held): nothing changed.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// The data plane cannot hold the policy: nothing changed.
    #[error("{0}")]
    Capacity(String),
    /// Some NICs (or the settings) could not be brought to the policy; the
    /// others were. `report` says what was done.
    #[error("{}", .failed.iter().map(|(n, e)| format!("nics[{n}]: {e}")).collect::<Vec<_>>().join("; "))]
    Failed {
        failed: Vec<(String, String)>,
        report: Box<ReconcileReport>,
    },
}

/// What one [`Reconciler::apply`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Switched to new tables, with the version now in force.
    pub installed: Vec<(String, u32)>,
    /// Already in force.
    pub unchanged: Vec<String>,
    /// Bound, but no such interface here (yet).
    pub absent: Vec<String>,
    /// Unbound.
    pub removed: Vec<String>,
    /// Could not be brought to the policy (NIC name, or `settings`), why.
    pub failed: Vec<(String, String)>,
}

/// The name [`ReconcileReport::failed`] and [`Reconciler::degraded`] give the settings.
pub const SETTINGS: &str = "(settings)";
/// … and the pins (map pins, the pin directory).
pub const PINS: &str = "(pins)";

struct Installed {
    binding: Binding,
    /// Shared with the next apply's wants while the NIC is untouched: a
    /// kept NIC's tables are neither copied nor compared (`Arc`'s equality
    /// looks at the pointer first).
    ingress: std::sync::Arc<Table>,
    egress: std::sync::Arc<Table>,
    /// The map entries each table takes (ingress, egress), counted once
    /// when compiled: the capacity check of every apply reads them.
    counts: [crate::dataplane::ImageCounts; 2],
}

pub struct Reconciler {
    dp: Dataplane,
    /// Attach the programs to bound interfaces (tests that only use
    /// `BPF_PROG_TEST_RUN` leave this off).
    attach: Option<AttachMode>,
    /// The compiled policy of every present NIC as of the last apply: what
    /// the kernel must hold (unless the NIC is degraded).
    installed: BTreeMap<String, Installed>,
    /// The settings in force, to see when a change must recheck sessions.
    settings: Option<Settings>,
    /// NICs (and [`SETTINGS`]) not brought to the policy, and why.
    degraded: BTreeMap<String, String>,
    /// The state `installed` was compiled from: the next apply compiles
    /// only the NICs whose inputs differ from it (an interface that came or
    /// went, or a change elsewhere in the fleet, recompiles nothing else).
    compiled_from: Option<State>,
}

impl Reconciler {
    pub fn new(dp: Dataplane, attach: Option<AttachMode>) -> Self {
        Self {
            dp,
            attach,
            installed: BTreeMap::new(),
            settings: None,
            degraded: BTreeMap::new(),
            compiled_from: None,
        }
    }

    /// How interfaces bound from now on are attached (`None`: not at all).
    pub fn set_attach_mode(&mut self, mode: Option<AttachMode>) {
        self.attach = mode;
    }

    pub fn dataplane(&mut self) -> &mut Dataplane {
        &mut self.dp
    }

    /// The compiled tables of NIC `name` (ingress, egress): the images
    /// written to the kernel's maps, unless the NIC is degraded.
    pub fn tables(&self, name: &str) -> Option<(&Table, &Table)> {
        self.installed.get(name).map(|i| (&*i.ingress, &*i.egress))
    }

    /// NICs (and [`SETTINGS`]) whose policy is not in force, with the reason.
    pub fn degraded(&self) -> &BTreeMap<String, String> {
        &self.degraded
    }

    /// Makes the data plane enforce `state`. Every NIC is tried; if any
    /// failed, the error says which (and holds the report of the rest).
    pub fn reconcile(&mut self, state: &State) -> Result<ReconcileReport, ReconcileError> {
        let report = self.apply_all(state)?;
        if report.failed.is_empty() {
            Ok(report)
        } else {
            Err(ReconcileError::Failed {
                failed: report.failed.clone(),
                report: Box::new(report),
            })
        }
    }

    fn apply_all(&mut self, state: &State) -> Result<ReconcileReport, ReconcileError> {
        let mut report = ReconcileReport::default();
        // Compile every present NIC first: a policy the data plane cannot hold
        // is refused before anything in the kernel changes. A NIC none of
        // whose inputs changed since the last apply compiles to the same
        // tables: those are reused (`sg_policy::touched`).
        let touched = self
            .compiled_from
            .as_ref()
            .map(|old| (old, Touched::between(old, state)));
        let keep = |name: &str| {
            touched
                .as_ref()
                .is_some_and(|(old, t)| !t.nic(old.nics.get(name), state, name))
        };
        let mut wanted = Vec::new();
        for (name, b) in &state.nics {
            let Some(ifindex) = crate::iface::index(name) else {
                report.absent.push(name.clone());
                continue;
            };
            let binding = Binding {
                ifindex,
                mode: b.mode,
                anti_spoof: b.anti_spoof_enabled(),
                own: b.own_cidrs(),
            };
            let (ingress, egress, counts) =
                if let Some(i) = self.installed.get(name).filter(|_| keep(name)) {
                    (i.ingress.clone(), i.egress.clone(), i.counts)
                } else {
                    let ingress = compile(state, name, Direction::Ingress)?;
                    let egress = compile(state, name, Direction::Egress)?;
                    let counts = [&ingress, &egress].map(crate::dataplane::table_image_counts);
                    (
                        std::sync::Arc::new(ingress),
                        std::sync::Arc::new(egress),
                        counts,
                    )
                };
            wanted.push((
                name.clone(),
                Installed {
                    binding,
                    ingress,
                    egress,
                    counts,
                },
            ));
        }
        self.check_capacity(&wanted, state)?;
        if touched.is_none_or(|(old, _)| old != state) {
            self.compiled_from = Some(state.clone());
        }
        // The platform addresses and the port-25 block decide packets before
        // sessions do, and so a session's first packet: when they change,
        // every NIC's sessions are checked again (timeouts decide nothing).
        let recheck = self.settings.as_ref().is_some_and(|old| {
            old.block_port_25 != state.settings.block_port_25
                || old.platform_addresses != state.settings.platform_addresses
        });
        // Written only when they changed (or their last write failed).
        if self.settings.as_ref() != Some(&state.settings) {
            match self.dp.maps_mut().set_settings(&state.settings) {
                Ok(()) => {
                    self.degraded.remove(SETTINGS);
                    self.settings = Some(state.settings.clone());
                }
                Err(e) => {
                    self.settings = None;
                    self.fail(&mut report, SETTINGS, &e.to_string());
                }
            }
        }
        let present: Vec<String> = wanted.iter().map(|(n, _)| n.clone()).collect();
        for (name, want) in wanted {
            self.enforce_nic(&name, want, recheck, &mut report);
        }
        // Bound before but not present now; adopted bindings too (a
        // restarted agent finds them in the pinned maps).
        let mut gone: Vec<String> = self
            .installed
            .keys()
            .cloned()
            .chain(self.dp.bound())
            .filter(|n| !present.contains(n))
            .collect();
        gone.sort();
        gone.dedup();
        for name in gone {
            self.installed.remove(&name);
            let r = self
                .dp
                .unbind(&name)
                .and_then(|()| self.dp.detach_from(&name));
            match r {
                Ok(()) => {
                    self.degraded.remove(&name);
                    report.removed.push(name);
                }
                Err(e) => self.fail(&mut report, &name, &e.to_string()),
            }
        }
        Ok(report)
    }

    fn fail(&mut self, report: &mut ReconcileReport, name: &str, why: &str) {
        log::error!("nics[{name}]: {why}");
        self.degraded.insert(name.to_owned(), why.to_owned());
        report.failed.push((name.to_owned(), why.to_owned()));
    }

    /// Brings one present NIC to `want`: installs it if it changed (or a
    /// recheck or an earlier failure asks), binds it closed if it has no
    /// policy in force and its own cannot be written, attaches it.
    fn enforce_nic(
        &mut self,
        name: &str,
        want: Installed,
        recheck: bool,
        report: &mut ReconcileReport,
    ) {
        let same = self.installed.get(name).is_some_and(|i| {
            i.binding == want.binding && i.ingress == want.ingress && i.egress == want.egress
        }) && self.dp.version(name).is_some()
            && !self.degraded.contains_key(name);
        let ifindex_now = want.binding.ifindex;
        let mut problem = None;
        if same && recheck {
            match self.dp.touch(name) {
                Ok(v) => report.installed.extend(v.map(|v| (name.to_owned(), v))),
                Err(e) => problem = Some(e.to_string()),
            }
        } else if same {
            report.unchanged.push(name.to_owned());
        } else {
            match self
                .dp
                .install(name, &want.binding, &want.ingress, &want.egress)
            {
                Ok(v) => report.installed.push((name.to_owned(), v)),
                Err(e) => {
                    let mut why = e.to_string();
                    if self.dp.version(name).is_none() {
                        // Never in force: closed, not open.
                        match self.dp.bind_closed(name, &want.binding) {
                            Ok(_) => why.push_str("; bound closed: every packet is dropped"),
                            Err(e2) => {
                                let _ = write!(
                                    why,
                                    "; could not even bind it closed ({e2}): NOT ENFORCED"
                                );
                            }
                        }
                    } else {
                        why.push_str("; the policy in force before stays in force");
                    }
                    problem = Some(why);
                }
            }
        }
        self.installed.insert(name.to_owned(), want);
        if let Some(mode) = self.attach
            && (!self.dp.is_attached(name) || self.dp.attached_ifindex(name) != Some(ifindex_now))
            && self.dp.version(name).is_some()
        {
            // A new index: the interface was deleted and made again, and
            // the kernel dropped the old attachment with it.
            self.dp.forget(name);
            if let Err(e) = self.dp.attach(name, mode) {
                if crate::iface::index(name) == Some(ifindex_now) {
                    let why = format!("attaching: {e}: NOT ENFORCED");
                    problem = Some(problem.map_or(why.clone(), |p| format!("{p}; {why}")));
                } else {
                    // The interface went (or was made again) while it was
                    // being attached: it is absent for this change, as if
                    // it had gone a moment before, and the link watcher's
                    // event for it brings it in again.
                    log::info!("{name}: gone while being attached ({e}); enforced when it is back");
                }
            }
        }
        match problem {
            Some(why) => self.fail(report, name, &why),
            None => {
                self.degraded.remove(name);
            }
        }
    }

    /// Refuses a policy the maps cannot hold, before anything is written:
    /// each NIC's own addresses, each table's rule bits, and the address
    /// tries over every table of every NIC (both slots).
    fn check_capacity(
        &self,
        wanted: &[(String, Installed)],
        state: &State,
    ) -> Result<(), ReconcileError> {
        use sg_common::maps::{ADDR_ENTRIES, BITS_PER_TABLE, OWN_PER_NIC, PLATFORM_ENTRIES};
        let platform = state.settings.platform_addresses.len();
        if platform > PLATFORM_ENTRIES as usize {
            return Err(ReconcileError::Capacity(format!(
                "settings.platform_addresses: {platform} entries, more than the data plane's {PLATFORM_ENTRIES}"
            )));
        }
        let mut new = Vec::new();
        for (name, w) in wanted {
            if w.binding.own.len() > OWN_PER_NIC as usize {
                return Err(ReconcileError::Capacity(format!(
                    "nics[{name}]: {} addresses and extra allowed prefixes, more than the data plane's {OWN_PER_NIC} per NIC",
                    w.binding.own.len()
                )));
            }
            let mut prefixes = (0, 0);
            for (dir, image) in ["ingress", "egress"].into_iter().zip(w.counts) {
                if image.bits > BITS_PER_TABLE as usize {
                    return Err(ReconcileError::Capacity(format!(
                        "nics[{name}] {dir}: {} rule-bit entries, more than the data plane's {BITS_PER_TABLE} per table",
                        image.bits
                    )));
                }
                prefixes.0 += image.addr4;
                prefixes.1 += image.addr6;
            }
            new.push((name.as_str(), prefixes));
        }
        let (v4, v6) = self.dp.prefixes_after(&new);
        for (family, need) in [("IPv4", v4), ("IPv6", v6)] {
            if need > ADDR_ENTRIES as usize {
                return Err(ReconcileError::Capacity(format!(
                    "the policy needs {need} {family} prefix entries over all NICs' tables (both slots), more than the data plane's {ADDR_ENTRIES}"
                )));
            }
        }
        Ok(())
    }

    /// Reads every map back and compares it with the policy last applied
    /// (see `Dataplane::verify`).
    pub fn verify(&self, state: &State) -> Result<Vec<Drift>, DataplaneError> {
        let expected: BTreeMap<String, Expected<'_>> = self
            .installed
            .iter()
            .map(|(n, i)| {
                (
                    n.clone(),
                    Expected {
                        binding: &i.binding,
                        ingress: &i.ingress,
                        egress: &i.egress,
                    },
                )
            })
            .collect();
        self.dp.verify(&expected, &state.settings)
    }

    /// [`Reconciler::verify`], then puts right what it found: NICs installed
    /// or attached again, unknown entries removed, settings written again.
    /// Returns what was found; what could not be repaired is degraded.
    pub fn verify_and_repair(&mut self, state: &State) -> Result<Vec<Drift>, DataplaneError> {
        let drift = self.verify(state)?;
        let mut unknown = false;
        let mut settings = false;
        let mut repin = false;
        let mut nics: BTreeMap<String, Repair> = BTreeMap::new();
        for d in &drift {
            log::error!(
                "drift{}: {}",
                d.nic
                    .as_deref()
                    .map(|n| format!(" on {n}"))
                    .unwrap_or_default(),
                d.what
            );
            match (d.repair, &d.nic) {
                (Repair::RemoveUnknown, _) => unknown = true,
                (Repair::Settings, _) => settings = true,
                (Repair::Repin, _) => repin = true,
                (r, Some(n)) => {
                    let e = nics.entry(n.clone()).or_insert(r);
                    if r == Repair::Reinstall {
                        *e = r;
                    }
                }
                (_, None) => {}
            }
        }
        if repin {
            match self.dp.repin() {
                Ok(()) => {
                    self.degraded.remove(PINS);
                    // Every link pin went with a removed directory.
                    for name in self.installed.keys().cloned().collect::<Vec<_>>() {
                        nics.entry(name).or_insert(Repair::Reattach);
                    }
                }
                Err(e) => {
                    self.degraded.insert(PINS.to_owned(), e.to_string());
                }
            }
        }
        if unknown && let Err(e) = self.dp.remove_unknown() {
            self.degraded
                .insert("(unknown entries)".to_owned(), e.to_string());
        }
        if settings {
            match self.dp.maps_mut().set_settings(&state.settings) {
                Ok(()) => {
                    self.degraded.remove(SETTINGS);
                }
                Err(e) => {
                    self.degraded.insert(SETTINGS.to_owned(), e.to_string());
                }
            }
        }
        for (name, repair) in nics {
            let Some(i) = self.installed.get(&name) else {
                continue;
            };
            if repair == Repair::Reinstall {
                // Installing again writes the slot out of force and switches:
                // the slot in force is never written in place.
                if let Err(e) = self.dp.install(&name, &i.binding, &i.ingress, &i.egress) {
                    self.degraded.insert(name.clone(), e.to_string());
                    continue;
                }
            }
            if let Some(mode) = self.attach {
                self.dp.reattach(&name);
                if let Err(e) = self.dp.attach(&name, mode) {
                    self.degraded
                        .insert(name.clone(), format!("attaching: {e}: NOT ENFORCED"));
                    continue;
                }
            }
            self.degraded.remove(&name);
        }
        Ok(drift)
    }
}

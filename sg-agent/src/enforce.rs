//! Keeping the data plane equal to the policy: every NIC binding whose
//! interface exists in this network namespace is compiled and, if its tables
//! changed, installed with a hitless switch; bindings that went away are
//! unbound.

use std::{collections::BTreeMap, ffi::CString};

use crate::{
    compile::{CompileError, Table, compile},
    dataplane::{AttachMode, Binding, Dataplane, Error as DataplaneError},
    policy::{Direction, Settings, State},
};

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error("nics[{nic}]: {source}")]
    Dataplane {
        nic: String,
        #[source]
        source: Box<DataplaneError>,
    },
    #[error("settings: {0}")]
    Settings(#[source] Box<DataplaneError>),
}

/// What one [`Enforcer::apply`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Switched to new tables, with the version now in force.
    pub installed: Vec<(String, u32)>,
    /// Already in force.
    pub unchanged: Vec<String>,
    /// Bound, but no such interface here (yet).
    pub absent: Vec<String>,
    /// Unbound.
    pub removed: Vec<String>,
}

struct Installed {
    binding: Binding,
    ingress: Table,
    egress: Table,
}

pub struct Enforcer {
    dp: Dataplane,
    /// Attach the programs to bound interfaces (tests that only use
    /// `BPF_PROG_TEST_RUN` leave this off).
    attach: Option<AttachMode>,
    installed: BTreeMap<String, Installed>,
    /// The settings in force, to see when a change must recheck sessions.
    settings: Option<Settings>,
}

impl Enforcer {
    pub fn new(dp: Dataplane, attach: Option<AttachMode>) -> Self {
        Self {
            dp,
            attach,
            installed: BTreeMap::new(),
            settings: None,
        }
    }

    /// How interfaces bound from now on are attached (`None`: not at all).
    pub fn set_attach_mode(&mut self, mode: Option<AttachMode>) {
        self.attach = mode;
    }

    pub fn dataplane(&mut self) -> &mut Dataplane {
        &mut self.dp
    }

    /// The compiled tables in force on NIC `name` (ingress, egress): the
    /// images written to the kernel's maps.
    pub fn tables(&self, name: &str) -> Option<(&Table, &Table)> {
        self.installed.get(name).map(|i| (&i.ingress, &i.egress))
    }

    /// Makes the data plane enforce `state`.
    pub fn apply(&mut self, state: &State) -> Result<ApplyReport, EnforceError> {
        let mut report = ApplyReport::default();
        // Compile every present NIC first: a policy the data plane cannot hold
        // is refused before anything in the kernel changes.
        let mut wanted = Vec::new();
        for (name, b) in &state.nics {
            let Some(ifindex) = ifindex(name) else {
                report.absent.push(name.clone());
                continue;
            };
            let binding = Binding {
                ifindex,
                mode: b.mode,
                anti_spoof: b.anti_spoof_enabled(),
                own: b.own_cidrs(),
            };
            let ingress = compile(state, name, Direction::Ingress)?;
            let egress = compile(state, name, Direction::Egress)?;
            wanted.push((
                name.clone(),
                Installed {
                    binding,
                    ingress,
                    egress,
                },
            ));
        }
        self.dp
            .set_settings(&state.settings)
            .map_err(|e| EnforceError::Settings(Box::new(e)))?;
        // The platform addresses and the port-25 block decide packets before
        // sessions do, and so a session's first packet: when they change,
        // every NIC's sessions are checked again (timeouts decide nothing).
        let recheck = self.settings.as_ref().is_some_and(|old| {
            old.block_port_25 != state.settings.block_port_25
                || old.platform_addresses != state.settings.platform_addresses
        });
        self.settings = Some(state.settings.clone());
        let present: Vec<String> = wanted.iter().map(|(n, _)| n.clone()).collect();
        for (name, want) in wanted {
            let ifindex_now = want.binding.ifindex;
            let same = self.installed.get(&name).is_some_and(|i| {
                i.binding.ifindex == want.binding.ifindex
                    && i.binding.mode == want.binding.mode
                    && i.binding.anti_spoof == want.binding.anti_spoof
                    && i.binding.own == want.binding.own
                    && i.ingress == want.ingress
                    && i.egress == want.egress
            });
            let err = |source: DataplaneError| EnforceError::Dataplane {
                nic: name.clone(),
                source: Box::new(source),
            };
            if same && recheck {
                let version = self.dp.touch(&name).map_err(err)?;
                report.installed.extend(version.map(|v| (name.clone(), v)));
            } else if same {
                report.unchanged.push(name.clone());
            } else {
                let version = self
                    .dp
                    .install(&name, &want.binding, &want.ingress, &want.egress)
                    .map_err(err)?;
                report.installed.push((name.clone(), version));
                self.installed.insert(name.clone(), want);
            }
            if let Some(mode) = self.attach
                && (!self.dp.is_attached(&name)
                    || self.dp.attached_ifindex(&name) != Some(ifindex_now))
            {
                // A new index: the interface was deleted and made again, and
                // the kernel dropped the old attachment with it.
                self.dp.forget(&name);
                self.dp.attach(&name, mode).map_err(err)?;
            }
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
            let err = |source: DataplaneError| EnforceError::Dataplane {
                nic: name.clone(),
                source: Box::new(source),
            };
            self.dp.unbind(&name).map_err(err)?;
            self.dp.detach_from(&name).map_err(err)?;
            self.installed.remove(&name);
            report.removed.push(name);
        }
        Ok(report)
    }
}

/// The index of interface `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

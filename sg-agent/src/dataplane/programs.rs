//! The object's four programs, by role: XDP and TC ingress decide the
//! receive side (one or the other per interface), TC egress the transmit
//! side, and the tag guard sits on TC ingress beside XDP.

use aya::{
    Ebpf,
    programs::{SchedClassifier, Xdp},
};
use sg_common::maps::{PROG_TC_EGRESS, PROG_TC_INGRESS, PROG_TC_TAG_GUARD, PROG_XDP};

use super::Error;

/// The XDP program.
pub(super) fn xdp(ebpf: &mut Ebpf) -> Result<&mut Xdp, Error> {
    ebpf.program_mut(PROG_XDP)
        .ok_or(Error::MissingProgram(PROG_XDP))?
        .try_into()
        .map_err(|source| Error::Program {
            prog: PROG_XDP,
            source,
        })
}

/// The TC egress program.
pub(super) fn tc_egress(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    ebpf.program_mut(PROG_TC_EGRESS)
        .ok_or(Error::MissingProgram(PROG_TC_EGRESS))?
        .try_into()
        .map_err(|source| Error::Program {
            prog: PROG_TC_EGRESS,
            source,
        })
}

/// The TC ingress program (attach mode `tc`; loaded with the others).
pub(super) fn tc_ingress(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(PROG_TC_INGRESS)
        .ok_or(Error::MissingProgram(PROG_TC_INGRESS))?
        .try_into()
        .map_err(|source| Error::Program {
            prog: PROG_TC_INGRESS,
            source,
        })?;
    if prog.fd().is_err() {
        prog.load().map_err(|source| Error::Program {
            prog: PROG_TC_INGRESS,
            source,
        })?;
    }
    Ok(prog)
}

/// The tag guard (TC ingress beside an XDP receive side; loaded with the
/// others).
pub(super) fn tc_tag_guard(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(PROG_TC_TAG_GUARD)
        .ok_or(Error::MissingProgram(PROG_TC_TAG_GUARD))?
        .try_into()
        .map_err(|source| Error::Program {
            prog: PROG_TC_TAG_GUARD,
            source,
        })?;
    if prog.fd().is_err() {
        prog.load().map_err(|source| Error::Program {
            prog: PROG_TC_TAG_GUARD,
            source,
        })?;
    }
    Ok(prog)
}

/// The loaded programs, by role, with their kernel ids.
pub(super) fn ids(ebpf: &Ebpf) -> Vec<(&'static str, u32)> {
    [
        ("xdp", PROG_XDP),
        ("tc ingress", PROG_TC_INGRESS),
        ("tc egress", PROG_TC_EGRESS),
        ("tc tag guard", PROG_TC_TAG_GUARD),
    ]
    .into_iter()
    .filter_map(|(role, name)| {
        let info = ebpf.program(name)?.info().ok()?;
        Some((role, info.id()))
    })
    .collect()
}

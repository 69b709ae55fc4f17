//! The object's four programs, by role: XDP and TC ingress decide the
//! receive side (one or the other per interface), TC egress the transmit
//! side, and the tag guard sits on TC ingress beside XDP.

use aya::{
    Ebpf,
    programs::{Program, ProgramError, SchedClassifier, Xdp},
};
use sg_common::maps::{PROG_TC_EGRESS, PROG_TC_INGRESS, PROG_TC_TAG_GUARD, PROG_XDP};

use super::Error;

/// Program `prog` of the object, as the kind it is.
fn program<'a, T>(ebpf: &'a mut Ebpf, prog: &'static str) -> Result<&'a mut T, Error>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(prog)
        .ok_or(Error::MissingProgram(prog))?
        .try_into()
        .map_err(|source| Error::Program { prog, source })
}

/// TC program `prog`, loaded into the kernel on first use.
fn loaded_classifier<'a>(
    ebpf: &'a mut Ebpf,
    prog: &'static str,
) -> Result<&'a mut SchedClassifier, Error> {
    let p: &mut SchedClassifier = program(ebpf, prog)?;
    if p.fd().is_err() {
        p.load().map_err(|source| Error::Program { prog, source })?;
    }
    Ok(p)
}

/// The XDP program.
pub(super) fn xdp(ebpf: &mut Ebpf) -> Result<&mut Xdp, Error> {
    program(ebpf, PROG_XDP)
}

/// The TC egress program.
pub(super) fn tc_egress(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    program(ebpf, PROG_TC_EGRESS)
}

/// The TC ingress program (attach mode `tc`; loaded with the others).
pub(super) fn tc_ingress(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    loaded_classifier(ebpf, PROG_TC_INGRESS)
}

/// The tag guard (TC ingress beside an XDP receive side; loaded with the
/// others).
pub(super) fn tc_tag_guard(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    loaded_classifier(ebpf, PROG_TC_TAG_GUARD)
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

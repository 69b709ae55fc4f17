//! Small helpers every part of the data plane uses to touch maps: errors
//! that name the map, and writes that go through the fault injector first
//! (`faults.rs`), so a test can make any one of them fail.

use aya::{maps::MapError, sys::SyscallError};

use super::{Error, faults};

pub(super) fn map_err(map: &'static str) -> impl Fn(MapError) -> Error {
    move |source| Error::Map { map, source }
}

/// The injected failure of the next write to `map`, if a test asked for one.
pub(super) fn injected(map: &'static str) -> Result<(), Error> {
    match faults::map_write() {
        None => Ok(()),
        Some(io_error) => Err(Error::Map {
            map,
            source: MapError::SyscallError(SyscallError {
                call: "bpf_map_update_elem (injected)",
                io_error,
            }),
        }),
    }
}

/// The injected failure of a read-back of `map` (of NIC `nic`), if a test
/// asked for one.
pub(super) fn injected_read(map: &'static str, nic: Option<&str>) -> Result<(), Error> {
    match faults::map_read(map, nic) {
        None => Ok(()),
        Some(io_error) => Err(Error::Map {
            map,
            source: MapError::SyscallError(SyscallError {
                call: "bpf_map_lookup_elem (injected)",
                io_error,
            }),
        }),
    }
}

/// Whether a delete failed only because the key was not there.
pub(super) fn not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(SyscallError { io_error, .. }) => {
            io_error.raw_os_error() == Some(libc::ENOENT)
        }
        _ => false,
    }
}

/// A delete's result with "was not there" counted as done.
pub(super) fn deleted(map: &'static str, r: Result<(), MapError>) -> Result<(), Error> {
    match r {
        Err(e) if !not_found(&e) => Err(Error::Map { map, source: e }),
        _ => Ok(()),
    }
}

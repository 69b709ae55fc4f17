//! The policy library's tests, one binary: each module is one part of SPEC
//! (or of the project's own decisions, `docs/policy.md`), tested through the
//! library's public API only. Pure: no root, no kernel, no disk.

mod apply;
mod decide;
mod fleet;
mod input;
mod io;
mod limits;
mod ops;
mod props;
mod redundancy;
mod sessions;
mod support;
mod use_cases;

#![no_std]
// Exists so sg-agent can name this crate as a build dependency (rebuild tracking).

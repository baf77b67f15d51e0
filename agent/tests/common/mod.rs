//! Helpers for the privileged tests: network namespaces that clean up after themselves, the
//! agent as a child process, and reading its HTTP endpoints.
#![allow(dead_code)] // each test binary uses a different subset

pub mod netns;
pub mod prom;
pub mod siphon;

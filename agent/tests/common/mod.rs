//! Helpers for the privileged tests: the kernel program under BPF_PROG_TEST_RUN, the agent as
//! a child process and reading its HTTP endpoints. Namespaces and veth pairs come from `siphon-testkit`.
#![allow(dead_code)] // each test binary uses a different subset

pub mod bpffs;
pub mod lab_server;
pub mod load;
pub mod prom;
pub mod siphon;
pub mod test_run;

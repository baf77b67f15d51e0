//! Test-support shared by the agent's privileged tests, `siphon-bench` and the lab: network
//! namespaces and veth pairs that are deleted when their guard drops (also when a test panics
//! or a run fails), and `ip` run with its error text kept.

pub mod netns;

pub use netns::{ip, run, LinkStats, NetNs, Pair};

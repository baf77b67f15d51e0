//! The Siphon agent as a library: the `siphon` binary is a thin CLI over it, and the
//! privileged integration tests drive the same loader, maps and pipeline.
//!
//! Data path, one module per step: [`ebpf_object`] (kernel hook) → [`kernel_maps`] (flow and
//! counter maps) → [`flows`] (sweep, totals) → [`metrics`] / [`http`] (export).

pub mod attach;
pub mod cli;
pub mod decode;
pub mod ebpf_object;
pub mod flows;
pub mod http;
pub mod ifaces;
pub mod kernel_maps;
pub mod metrics;
pub mod run;
pub mod service_ports;

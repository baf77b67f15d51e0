//! The Siphon agent as a library: the `siphon` binary is a thin CLI over it, and the
//! privileged integration tests drive the same loader, maps and pipeline.
//!
//! Data path, one module per step: [`ebpf_object`] (kernel hook) → [`kernel_maps`] and the
//! ring buffer ([`events`]) → [`decode`] (HTTP heads, TLS hellos) → [`assemble`] (attribute:
//! key, client, fingerprints) → [`detect`] (entities, windows, scores, events) → [`capacity`] / [`metrics`] / [`http`] (export). [`flows`]
//! sweeps the flow table; [`replay`] drives the same path from a capture.

pub mod assemble;
pub mod attach;
pub mod capacity;
pub mod cli;
pub mod decode;
pub mod detect;
pub mod ebpf_object;
pub mod events;
pub mod flows;
pub mod http;
pub mod ifaces;
pub mod kernel_maps;
pub mod metrics;
pub mod pipeline;
pub mod replay;
pub mod replay_cmd;
pub mod report;
pub mod run;
pub mod service_ports;
pub mod services;

//! The Siphon agent as a library: the `siphon` binary is a thin CLI over it, and the
//! privileged integration tests drive the same loader, maps and pipeline.
//!
//! Data path, one module per step: [`kernel`] (the eBPF object, attachment, maps, the flow-table
//! sweeper) → [`pipeline`] (ring-buffer records, assembly and attribution into reports) with
//! [`decode`] (HTTP heads, TLS hellos, JA4 fingerprints, API keys) → [`detect`] (entities,
//! windows, scores, detection events) → [`export`] (metrics and the HTTP endpoint). [`replay`]
//! drives the same path from a capture; [`cmd`] holds the subcommands.

pub mod cmd;
pub mod decode;
pub mod detect;
pub mod export;
pub mod kernel;
pub mod pipeline;
pub mod replay;

/// mimalloc for every binary built on this library (`siphon`, the benchmark, the tests): the
/// record path allocates and frees small strings and vectors per request, where glibc's malloc
/// took ~8-10% of the agent's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

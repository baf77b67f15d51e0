//! What leaves the agent: the agent's own and per-interface metrics ([`metrics`]), the capacity
//! metrics built from reports ([`capacity`]), the registration helpers they share
//! ([`registry`]), and the HTTP endpoint that serves them ([`server`], its connection bounds in
//! [`limits`]) from the state the sweeper keeps current ([`state`]), behind the TLS and basic
//! auth of `--web-config-file` ([`webconfig`], re-read on change by [`webconfig_reload`]).

pub mod capacity;
pub mod limits;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod state;
pub mod webconfig;
pub mod webconfig_reload;

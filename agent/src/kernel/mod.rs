//! The kernel side, seen from userspace: the embedded eBPF object and its options
//! ([`object`]), interface selection ([`ifaces`]), attaching to interfaces ([`attach`]), the
//! pinned-or-loaded maps ([`maps`]) and the flow-table sweeper that expires flows and reports
//! idle exchanges ([`sweep`]).

pub mod attach;
pub mod ifaces;
pub mod maps;
pub mod object;
pub mod sweep;

//! The kernel side, seen from userspace: the embedded eBPF object and its options
//! ([`object`]), interface selection ([`ifaces`]), attaching to interfaces ([`attach`]), the
//! pinned-or-loaded maps ([`maps`]) and the flow-table sweeper that expires flows and reports
//! idle exchanges ([`sweep`]), and the bpffs pins that carry maps and links across a restart
//! ([`pin`]).

pub mod attach;
pub mod ifaces;
pub mod maps;
pub mod object;
pub mod pin;
pub mod sweep;

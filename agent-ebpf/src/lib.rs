//! Empty library target: it lets `agent` declare this crate as a build-dependency, so cargo
//! rebuilds the agent (and re-embeds the object) when the kernel program's sources change.
#![no_std]

//! Empty library target: it lets `siphon-bench` declare this crate as a build-dependency, so
//! cargo rebuilds the bench (and re-embeds the baselines) when their sources change.
#![no_std]

//! What the endpoint serves, shared by its handlers and the sweeper that keeps it current: the
//! agent's metrics, the kernel's counter maps (read at scrape) and the last sweep's flows.

use std::{
    collections::HashMap,
    sync::{atomic::AtomicBool, Mutex, MutexGuard},
    time::Instant,
};

use crate::{
    export::metrics::Metrics,
    kernel::{maps::CounterMaps, sweep::FlowView},
};

/// State shared by the HTTP handlers and the sweeper.
pub struct Shared {
    inner: Mutex<Inner>,
    pub ready: AtomicBool,
}

pub struct Inner {
    pub metrics: Metrics,
    pub counters: CounterMaps,
    /// Interface names by index, for the metrics' `iface` label.
    pub iface_names: HashMap<u32, String>,
    /// The last sweep's flows, for `/flows`.
    pub flows: Vec<FlowView>,
}

impl Shared {
    pub fn new(metrics: Metrics, counters: CounterMaps) -> Shared {
        Shared {
            inner: Mutex::new(Inner {
                metrics,
                counters,
                iface_names: HashMap::new(),
                flows: Vec::new(),
            }),
            ready: AtomicBool::new(false),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind, still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn scrape(&self, started: Instant) -> anyhow::Result<String> {
        let mut g = self.lock();
        let Inner {
            metrics,
            counters,
            iface_names,
            ..
        } = &mut *g;
        metrics.refresh_kernel(counters, &|ifindex| iface_label(iface_names, ifindex))?;
        metrics.encode(started)
    }

    pub fn flows_snapshot(&self) -> Vec<FlowView> {
        self.lock().flows.clone()
    }
}

fn iface_label(names: &HashMap<u32, String>, ifindex: u32) -> String {
    names
        .get(&ifindex)
        .cloned()
        .unwrap_or_else(|| format!("ifindex{ifindex}"))
}

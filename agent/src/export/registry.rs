//! Registration helpers shared by every metrics family the agent exports (its own, capacity,
//! the detector's): make the collector, register it, keep a handle.

use prometheus::{
    core::Collector, Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry,
};

/// Registers `collector` and returns it for updating (collectors are cheap handles).
pub fn register<T: Collector + Clone + 'static>(
    registry: &Registry,
    collector: T,
) -> prometheus::Result<T> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

pub fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
}

pub fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
) -> prometheus::Result<Histogram> {
    register(
        registry,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?,
    )
}

pub fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> prometheus::Result<HistogramVec> {
    register(
        registry,
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?,
    )
}

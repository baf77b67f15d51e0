//! The detector as one of the pipeline's report sinks: observations in, detection events to a
//! log and scores to the detector's own metrics registry.

use std::io::Write;

use super::{
    export::DetectorMetrics,
    input::{observation_of, observation_of_owned},
    Detector,
};
use crate::pipeline::{report::Report, ReportSink};

/// The detector as a sink of the pipeline's reports: events to a log, scores to metrics.
pub struct DetectorSink {
    pub detector: Detector,
    pub metrics: DetectorMetrics,
    pub log: Option<Box<dyn Write + Send>>,
    last_export: Option<std::time::Instant>,
}

impl DetectorSink {
    pub fn new(
        detector: Detector,
        metrics: DetectorMetrics,
        log: Option<Box<dyn Write + Send>>,
    ) -> DetectorSink {
        DetectorSink {
            detector,
            metrics,
            log,
            last_export: None,
        }
    }

    /// Write new events; refresh the series at most once a second (it walks every entity).
    fn publish(&mut self, force: bool) {
        let events = self.detector.take_events();
        self.metrics.record_events(&events);
        if let Some(w) = self.log.as_mut() {
            for e in &events {
                if let Err(err) = writeln!(w, "{}", e.to_line()) {
                    tracing::error!("writing the detection log failed, stopping it: {err}");
                    self.log = None;
                    break;
                }
            }
        }
        let due = self
            .last_export
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1));
        if force || due || !events.is_empty() {
            self.metrics.update(&self.detector);
            self.last_export = Some(std::time::Instant::now());
        }
    }
}

impl ReportSink for DetectorSink {
    fn take(&mut self, report: &Report) {
        if let Some(obs) = observation_of(report) {
            self.detector.observe(obs);
        }
    }

    fn take_owned(&mut self, report: Report) {
        if let Some(obs) = observation_of_owned(report) {
            self.detector.observe(obs);
        }
    }

    fn batch_done(&mut self) {
        self.publish(false);
    }

    fn finish(&mut self) {
        self.detector.finish();
        self.publish(true);
        if let Err(e) = self.flush() {
            tracing::error!("flushing the detection log failed: {e}");
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.log.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

//! The agent's append-only logs (exchange log, detection log) on a disk that may fill up or
//! turn read-only. A failed write never stops the agent or the log: the lines it held are
//! dropped and counted (`siphon_log_write_errors_total`, `siphon_log_lines_dropped_total`),
//! the error is logged at most once per [`REPORT_EVERY`] with how many followed it, and the
//! next flush tries again, so the log resumes by itself once there is room.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use prometheus::{IntCounter, IntCounterVec, Registry};

use crate::export::registry::counter_vec;

/// At most one error line per log per this interval (a full disk fails every 100 ms flush).
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Lines are buffered in memory up to this size between flushes; past it a write flushes
/// early, so a log that cannot be written holds at most this much.
const MAX_BUFFER: usize = 1 << 20;

/// The counters every log shares, one series per log name.
#[derive(Clone)]
pub struct LogMetrics {
    errors: IntCounterVec,
    dropped: IntCounterVec,
}

impl LogMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<LogMetrics> {
        Ok(LogMetrics {
            errors: counter_vec(
                registry,
                "siphon_log_write_errors_total",
                "Failed writes to a log file (disk full, read-only, removed), by log.",
                &["log"],
            )?,
            dropped: counter_vec(
                registry,
                "siphon_log_lines_dropped_total",
                "Log lines lost to failed writes, by log.",
                &["log"],
            )?,
        })
    }
}

/// A log file that buffers whole lines and writes them at flush.
pub struct LogFile<W: Write = File> {
    name: &'static str,
    out: W,
    buf: Vec<u8>,
    /// A write failed after part of a buffer reached the file: the next write starts with a
    /// newline, so the fragment stays a line of its own that readers skip as malformed.
    broken_line: bool,
    errors: IntCounter,
    dropped: IntCounter,
    last_report: Option<Instant>,
    suppressed: u64,
}

impl LogFile<File> {
    /// Opens `path` for appending (created if missing). `name` is the `log` label.
    pub fn open(path: &Path, name: &'static str, metrics: &LogMetrics) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the {name} log {}", path.display()))?;
        Ok(LogFile::new(file, name, metrics))
    }
}

impl<W: Write> LogFile<W> {
    pub fn new(out: W, name: &'static str, metrics: &LogMetrics) -> Self {
        let errors = metrics.errors.with_label_values(&[name]);
        let dropped = metrics.dropped.with_label_values(&[name]);
        LogFile {
            name,
            out,
            buf: Vec::new(),
            broken_line: false,
            errors,
            dropped,
            last_report: None,
            suppressed: 0,
        }
    }

    /// Writes the buffer; on failure drops it, counts, reports (rate-limited).
    fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if self.broken_line {
            if let Err(e) = self.out.write_all(b"\n") {
                return self.failed(e, 0);
            }
            self.broken_line = false;
        }
        let mut done = 0;
        while done < self.buf.len() {
            match self.out.write(&self.buf[done..]) {
                Ok(0) => return self.failed(io::ErrorKind::WriteZero.into(), done),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.failed(e, done),
            }
        }
        self.buf.clear();
        let _ = self.out.flush();
    }

    fn failed(&mut self, e: io::Error, written: usize) {
        let lost = self.buf[written..].iter().filter(|&&b| b == b'\n').count() as u64;
        self.broken_line |= written > 0 && self.buf.get(written - 1) != Some(&b'\n');
        self.buf.clear();
        self.errors.inc();
        self.dropped.inc_by(lost);
        let due = self.last_report.is_none_or(|t| t.elapsed() >= REPORT_EVERY);
        if due {
            tracing::error!(
                log = self.name,
                "writing the {} log failed ({} more failures since the last report): {e}; \
                 {lost} lines dropped, retrying at the next flush",
                self.name,
                self.suppressed
            );
            self.last_report = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }
}

impl<W: Write> Write for LogFile<W> {
    /// Never fails: the bytes go to the buffer, and errors are handled at flush.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= MAX_BUFFER {
            self.write_out();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out();
        Ok(())
    }
}

impl<W: Write> Drop for LogFile<W> {
    fn drop(&mut self) {
        self.write_out();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts `room` bytes, then fails with ENOSPC until given more room.
    struct Disk {
        room: usize,
        data: Vec<u8>,
    }

    impl Write for Disk {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = b.len().min(self.room);
            self.room -= n;
            self.data.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_drops_and_counts_lines_then_resumes_on_a_line_boundary() {
        let registry = Registry::new();
        let metrics = LogMetrics::new(&registry).expect("metrics");
        let mut log = LogFile::new(
            Disk {
                room: 10,
                data: Vec::new(),
            },
            "exchange",
            &metrics,
        );
        log.write_all(b"aaaaaa\nbbbbbb\ncccccc\n")
            .expect("buffered");
        log.flush().expect("never fails");
        // "aaaaaa\n" and "bbb" reached the disk: two lines lost (b's and c's).
        assert_eq!(log.errors.get(), 1);
        assert_eq!(log.dropped.get(), 2);
        log.write_all(b"dddddd\n").expect("buffered");
        log.flush().expect("never fails");
        assert_eq!(log.errors.get(), 2);
        assert_eq!(log.dropped.get(), 3);
        log.out.room = 1000;
        log.write_all(b"eeeeee\n").expect("buffered");
        log.flush().expect("never fails");
        assert_eq!(
            String::from_utf8_lossy(&log.out.data),
            "aaaaaa\nbbb\neeeeee\n",
            "the fragment is its own line; writing resumed"
        );
        assert_eq!(log.errors.get(), 2);
    }
}

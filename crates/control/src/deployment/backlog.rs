//! What the batches running on a deployment still have to do, and how fast its replicas have
//! been finishing batch lines: the autoscaler's deadline signal ([`BatchBacklog`]).
//!
//! A batch's runner reports its remaining lines and deadline every few seconds
//! ([`Backlogs::report`]); a report not renewed within [`REPORT_TTL`] is dropped (its runner
//! ended or moved to another process). The rate is batch lines completed per second of a
//! replica holding batch work, over the last [`RATE_WINDOW`]: measured, never assumed, so no
//! deadline scale-out happens before the first lines have finished.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::autoscale::BatchBacklog;

/// A batch's report lapses after this long without a new one.
pub const REPORT_TTL: Duration = Duration::from_secs(15);
/// The rate is measured over this much recent time.
pub const RATE_WINDOW: Duration = Duration::from_secs(30);
/// Least replica-time behind a rate before it is used.
const MIN_REPLICA_SECS: f64 = 3.0;
/// Least completions behind a rate before it is used.
const MIN_COMPLETIONS: u64 = 2;

#[derive(Debug, Clone, Copy)]
struct Report {
    lines: usize,
    deadline: Instant,
    at: Instant,
}

/// One tick's sample of the cumulative counters.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    completed: u64,
    replica_secs: f64,
}

#[derive(Debug, Default)]
pub(crate) struct Backlogs {
    reports: HashMap<String, Report>,
    completed: u64,
    replica_secs: f64,
    last_observed: Option<Instant>,
    samples: VecDeque<Sample>,
}

impl Backlogs {
    /// Batch `batch` has `lines` left to finish by `deadline` (0 lines: it is done).
    pub fn report(&mut self, batch: &str, lines: usize, deadline: Instant, now: Instant) {
        if lines == 0 {
            self.reports.remove(batch);
            return;
        }
        let report = Report {
            lines,
            deadline,
            at: now,
        };
        self.reports.insert(batch.to_owned(), report);
    }

    /// A batch line ran to its end on some replica.
    pub fn completed(&mut self) {
        self.completed += 1;
    }

    /// Called every tick: `busy` replicas held batch work since the last call.
    pub fn observe(&mut self, now: Instant, busy: usize) {
        if let Some(last) = self.last_observed {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.replica_secs += dt * busy as f64;
        }
        self.last_observed = Some(now);
        self.samples.push_back(Sample {
            at: now,
            completed: self.completed,
            replica_secs: self.replica_secs,
        });
        while self
            .samples
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.at) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        self.reports
            .retain(|_, r| now.saturating_duration_since(r.at) <= REPORT_TTL);
    }

    /// Batch lines per second of one replica over the window, once enough was seen.
    fn rate(&self) -> Option<f64> {
        let first = self.samples.front()?;
        let replica_secs = self.replica_secs - first.replica_secs;
        let completed = self.completed - first.completed;
        (replica_secs >= MIN_REPLICA_SECS && completed >= MIN_COMPLETIONS)
            .then(|| completed as f64 / replica_secs)
    }

    /// The signal for the autoscaler: every live report's lines against the earliest deadline.
    pub fn signal(&self, now: Instant) -> Option<BatchBacklog> {
        let deadline = self.reports.values().map(|r| r.deadline).min()?;
        Some(BatchBacklog {
            lines: self.reports.values().map(|r| r.lines).sum(),
            deadline_in: deadline.saturating_duration_since(now),
            lines_per_replica_sec: self.rate(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn the_rate_is_lines_per_busy_replica_second_over_the_window() {
        let t0 = Instant::now();
        let mut b = Backlogs::default();
        b.report("batch_a", 50, at(t0, 100), t0);
        b.observe(t0, 0);
        assert_eq!(b.signal(t0).and_then(|s| s.lines_per_replica_sec), None);
        // Two replicas busy for 5 s finish 10 lines: 1 line/s per replica.
        for s in 1..=5 {
            b.completed();
            b.completed();
            b.observe(at(t0, s), 2);
        }
        let signal = b.signal(at(t0, 5)).expect("a report");
        assert_eq!(signal.lines, 50);
        assert_eq!(signal.deadline_in, Duration::from_secs(95));
        let rate = signal.lines_per_replica_sec.expect("measured");
        assert!((rate - 1.0).abs() < 1e-9, "{rate}");
        // Idle time (no replica busy) does not dilute it; old samples leave the window.
        for s in 6..=60 {
            b.report("batch_a", 40, at(t0, 100), at(t0, s));
            b.observe(at(t0, s), 0);
        }
        assert_eq!(
            b.signal(at(t0, 60)).expect("kept").lines_per_replica_sec,
            None
        );
    }

    #[test]
    fn reports_add_up_take_the_earliest_deadline_and_lapse() {
        let t0 = Instant::now();
        let mut b = Backlogs::default();
        b.report("batch_a", 10, at(t0, 300), t0);
        b.report("batch_b", 5, at(t0, 60), t0);
        let s = b.signal(t0).expect("reports");
        assert_eq!((s.lines, s.deadline_in), (15, Duration::from_secs(60)));
        b.report("batch_b", 0, at(t0, 60), at(t0, 1));
        assert_eq!(b.signal(at(t0, 1)).map(|s| s.lines), Some(10));
        b.observe(at(t0, 1) + REPORT_TTL + Duration::from_secs(1), 0);
        assert!(
            b.signal(at(t0, 20)).is_none(),
            "a report not renewed lapses"
        );
    }
}

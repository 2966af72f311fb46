//! A rate of events per second while there was work (a deployment's tokens per second): an
//! exponentially weighted moving average over one-second windows in which work was present.
//! Queue ETAs use the per-slot estimate in `eta.rs` instead.
//!
//! Windows with nothing waiting are not evidence about capacity (nothing *could* complete
//! faster than it arrived), so they are discarded instead of pulling the rate towards zero.
//! Before the first full window the estimate is a configured prior.

use std::time::{Duration, Instant};

/// Length of one measurement window.
const WINDOW: Duration = Duration::from_secs(1);
/// Weight of the newest window in the average.
const ALPHA: f64 = 0.3;
/// The estimate never drops below this, so ETAs and `Retry-After` stay finite.
const FLOOR_PER_SEC: f64 = 0.05;

#[derive(Debug, Clone)]
pub struct DrainRate {
    per_sec: f64,
    observed: bool,
    window_start: Option<Instant>,
    completions: u32,
    backlog_seen: bool,
}

impl DrainRate {
    /// `prior_per_sec`: the estimate before anything was observed.
    pub fn new(prior_per_sec: f64) -> Self {
        let prior = if prior_per_sec.is_finite() {
            prior_per_sec.max(FLOOR_PER_SEC)
        } else {
            1.0
        };
        Self {
            per_sec: prior,
            observed: false,
            window_start: None,
            completions: 0,
            backlog_seen: false,
        }
    }

    /// Completions per second (≥ a small floor).
    pub fn per_sec(&self) -> f64 {
        self.per_sec
    }

    /// Whether the estimate comes from observations rather than the prior.
    pub fn is_observed(&self) -> bool {
        self.observed
    }

    /// `n` requests completed at `now`.
    pub fn record(&mut self, now: Instant, n: u32) {
        self.roll(now);
        self.completions = self.completions.saturating_add(n);
    }

    /// Note at `now` whether requests are waiting; closes finished windows.
    pub fn observe(&mut self, now: Instant, backlog: bool) {
        self.roll(now);
        self.backlog_seen |= backlog;
    }

    fn roll(&mut self, now: Instant) {
        let Some(start) = self.window_start else {
            self.window_start = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < WINDOW {
            return;
        }
        if self.backlog_seen {
            let sample = f64::from(self.completions) / elapsed.as_secs_f64();
            self.per_sec = if self.observed {
                ALPHA * sample + (1.0 - ALPHA) * self.per_sec
            } else {
                sample
            }
            .max(FLOOR_PER_SEC);
            self.observed = true;
        }
        self.window_start = Some(now);
        self.completions = 0;
        self.backlog_seen = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prior_until_a_busy_window_is_observed() {
        let t0 = Instant::now();
        let mut d = DrainRate::new(2.0);
        d.observe(t0, false);
        d.record(t0 + Duration::from_millis(500), 10);
        // The window closes without a backlog: discarded.
        d.observe(t0 + Duration::from_secs(1), false);
        assert!(!d.is_observed());
        assert_eq!(d.per_sec(), 2.0);
        d.observe(t0 + Duration::from_secs(1), true);
        d.record(t0 + Duration::from_millis(1500), 5);
        d.observe(t0 + Duration::from_secs(2), true);
        assert!(d.is_observed());
        assert_eq!(d.per_sec(), 5.0);
    }

    #[test]
    fn a_stalled_queue_keeps_a_finite_estimate() {
        let t0 = Instant::now();
        let mut d = DrainRate::new(1.0);
        for s in 0..60 {
            d.observe(t0 + Duration::from_secs(s), true);
        }
        assert!(d.per_sec() >= FLOOR_PER_SEC);
    }
}

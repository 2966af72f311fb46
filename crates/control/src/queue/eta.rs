//! How fast a deployment's queue drains, per serving slot: the basis of queue ETAs and of
//! `Retry-After`.
//!
//! The rate is kept *per slot* so an estimate follows the capacity: after a scale-up from one
//! replica to two the same per-slot rate predicts twice the drain. Evidence, best first:
//! 1. completions per slot-second *while work was waiting*, an exponentially weighted average
//!    over one-second windows. Only time with a backlog counts, and only ready slots: then every
//!    slot is busy and completions measure capacity. Time spent loading a replica says nothing
//!    about how fast a loaded one drains, and time with nothing waiting says nothing about
//!    capacity (nothing could complete faster than it arrived);
//! 2. before such a window: the average service time (dispatch to end, also an exponentially
//!    weighted average) scaled by how busy the replica was when the request ended — known
//!    after the first completion. Sequences batched on one replica share its machine, so a
//!    request served alone on a 4-slot replica in 50 ms says the replica completes about one
//!    request per 50 ms, not four: its sample counts as 200 ms of one slot. Counting it as
//!    four slots' worth made the first ETAs of a burst 4× optimistic;
//! 3. before any completion: a configured prior.
//!
//! With no ready slot (a cold start), estimates use the slots being loaded, at least
//! one replica's worth: a request at zero replicas starts one.

use std::time::{Duration, Instant};

/// Length of one measurement window.
const WINDOW: Duration = Duration::from_secs(1);
/// Weight of the newest sample in the averages.
const ALPHA: f64 = 0.3;
/// The estimate never drops below this, so ETAs and `Retry-After` stay finite.
const FLOOR_PER_SEC: f64 = 0.05;
/// Service times below this are treated as this (a division guard, not a model).
const MIN_SERVICE_SECS: f64 = 0.001;

#[derive(Debug, Clone)]
pub struct QueueDrain {
    prior_per_slot: f64,
    /// Observed completions per slot-second.
    per_slot: Option<f64>,
    /// Average slot-seconds one completion takes: a request's service time over the share
    /// of its replica's slots that were busy when it ended.
    service_secs: Option<f64>,
    ready_slots: usize,
    planned_slots: usize,
    window_start: Option<Instant>,
    last: Option<Instant>,
    /// Whether requests were waiting since `last`.
    backlog: bool,
    /// Ready slot-seconds with a backlog in the current window, and completions in them.
    slot_secs: f64,
    completions: u32,
}

impl QueueDrain {
    /// `prior_per_slot`: completions per second per slot assumed before any were seen.
    /// Until told otherwise ([`QueueDrain::set_slots`]) there is one slot.
    pub fn new(prior_per_slot: f64) -> Self {
        let prior = if prior_per_slot.is_finite() {
            prior_per_slot.max(FLOOR_PER_SEC)
        } else {
            1.0
        };
        Self {
            prior_per_slot: prior,
            per_slot: None,
            service_secs: None,
            ready_slots: 1,
            planned_slots: 1,
            window_start: None,
            last: None,
            backlog: false,
            slot_secs: 0.0,
            completions: 0,
        }
    }

    /// The capacity from `now` on: slots on ready replicas, and slots that will serve the queue
    /// once the replicas being loaded are ready (ready ones included).
    pub fn set_slots(&mut self, now: Instant, ready: usize, planned: usize) {
        self.roll(now);
        self.ready_slots = ready;
        self.planned_slots = planned.max(ready);
    }

    /// Completions per second at the current capacity (≥ a small floor).
    pub fn per_sec(&self) -> f64 {
        let slots = if self.ready_slots > 0 {
            self.ready_slots
        } else {
            self.planned_slots.max(1)
        };
        (self.per_slot_rate() * slots as f64).max(FLOOR_PER_SEC)
    }

    /// Completions per second of one slot, from the best evidence at hand.
    pub fn per_slot_rate(&self) -> f64 {
        self.per_slot
            .or(self.service_secs.map(|s| 1.0 / s.max(MIN_SERVICE_SECS)))
            .unwrap_or(self.prior_per_slot)
    }

    /// Whether the estimate comes from time with a backlog rather than service times or the prior.
    pub fn is_observed(&self) -> bool {
        self.per_slot.is_some()
    }

    /// A request that held a slot for `service` completed at `now`, while `busy` of its
    /// replica's `slots` were serving (itself included).
    pub fn record(&mut self, now: Instant, service: Duration, busy: usize, slots: usize) {
        self.roll(now);
        if self.backlog {
            self.completions = self.completions.saturating_add(1);
        }
        let occupancy = if slots == 0 {
            1.0
        } else {
            (busy.clamp(1, slots) as f64) / slots as f64
        };
        let s = service.as_secs_f64() / occupancy;
        self.service_secs = Some(match self.service_secs {
            Some(avg) => ALPHA * s + (1.0 - ALPHA) * avg,
            None => s,
        });
    }

    /// From `now` on, requests are (`backlog`) or are not waiting; closes finished windows.
    pub fn observe(&mut self, now: Instant, backlog: bool) {
        self.roll(now);
        self.backlog = backlog;
    }

    fn roll(&mut self, now: Instant) {
        if let (Some(last), true) = (self.last, self.backlog) {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.slot_secs += dt * self.ready_slots as f64;
        }
        self.last = Some(now);
        let Some(start) = self.window_start else {
            self.window_start = Some(now);
            return;
        };
        if now.saturating_duration_since(start) < WINDOW {
            return;
        }
        if self.slot_secs > 0.0 {
            let sample = f64::from(self.completions) / self.slot_secs;
            self.per_slot = Some(match self.per_slot {
                Some(avg) => ALPHA * sample + (1.0 - ALPHA) * avg,
                None => sample,
            });
        }
        self.window_start = Some(now);
        self.slot_secs = 0.0;
        self.completions = 0;
    }

    /// Milliseconds until `ahead` requests (including this one) have drained.
    pub fn eta_ms(&self, ahead: usize) -> u64 {
        let secs = ahead as f64 / self.per_sec();
        (secs * 1000.0).min(u64::MAX as f64 / 2.0) as u64
    }

    /// Seconds a refused client should wait: the time for `backlog` requests to drain,
    /// at least 1 and at most `cap_secs`.
    pub fn retry_after_secs(&self, backlog: usize, cap_secs: u64) -> u64 {
        let secs = (backlog as f64 / self.per_sec()).ceil();
        (secs.min(cap_secs as f64) as u64).clamp(1, cap_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn prior_then_service_time_then_busy_windows() {
        let t0 = Instant::now();
        let mut d = QueueDrain::new(2.0);
        d.set_slots(t0, 4, 4);
        assert_eq!(d.per_sec(), 8.0);
        // One completion that held its slot 100 ms: 10/s per slot.
        d.record(t0 + ms(500), ms(100), 4, 4);
        assert!(!d.is_observed());
        assert!((d.per_sec() - 40.0).abs() < 1e-9);
        // A window without a backlog is no evidence of capacity.
        d.observe(t0 + ms(1000), false);
        assert!(!d.is_observed());
        // A second with a backlog: 20 completions over 4 slots × 1 s = 5 per slot-second.
        d.observe(t0 + ms(1000), true);
        for i in 0..20 {
            d.record(t0 + ms(1000 + 40 * i), ms(800), 4, 4);
        }
        d.observe(t0 + ms(2000), true);
        assert!(d.is_observed());
        assert!((d.per_sec() - 20.0).abs() < 1e-9, "{}", d.per_sec());
    }

    #[test]
    fn a_cold_start_is_not_evidence_and_estimates_use_the_planned_slots() {
        let t0 = Instant::now();
        let mut d = QueueDrain::new(0.5);
        // Zero replicas, one of 4 slots loading; a request waits 900 ms for it.
        d.set_slots(t0, 0, 4);
        d.observe(t0, true);
        assert_eq!(d.per_sec(), 2.0);
        d.set_slots(t0 + ms(900), 4, 4);
        d.observe(t0 + ms(900), false);
        d.record(t0 + ms(950), ms(50), 4, 4);
        d.observe(t0 + ms(1100), false);
        // The wait for the load did not count: the estimate is the service time's, 20/s a slot.
        assert!(!d.is_observed());
        assert!((d.per_sec() - 80.0).abs() < 1e-9, "{}", d.per_sec());
        // Scaled to zero: one replica's worth, not the floor.
        d.set_slots(t0 + ms(5000), 0, 4);
        assert!((d.per_sec() - 80.0).abs() < 1e-9);
    }

    #[test]
    fn a_scale_up_doubles_the_estimate() {
        let t0 = Instant::now();
        let mut d = QueueDrain::new(1.0);
        d.set_slots(t0, 2, 2);
        d.observe(t0, true);
        for i in 0..10 {
            d.record(t0 + ms(100 * i), ms(200), 2, 2);
        }
        d.observe(t0 + ms(1000), true);
        let before = d.per_sec();
        d.set_slots(t0 + ms(1000), 4, 4);
        assert!((d.per_sec() - 2.0 * before).abs() < 1e-9);
    }

    #[test]
    fn a_request_served_alone_speaks_for_one_slot_only() {
        let t0 = Instant::now();
        let mut d = QueueDrain::new(1.0);
        d.set_slots(t0, 4, 4);
        // Alone on a 4-slot replica for 50 ms: the replica completes ~20/s, not 80/s.
        d.record(t0 + ms(50), ms(50), 1, 4);
        assert!((d.per_sec() - 20.0).abs() < 1e-9, "{}", d.per_sec());
        assert_eq!(d.eta_ms(10), 500);
        // Then two 100 ms requests side by side (half the slots): 20/s as well.
        let mut e = QueueDrain::new(1.0);
        e.set_slots(t0, 4, 4);
        e.record(t0 + ms(100), ms(100), 2, 4);
        assert!((e.per_sec() - 20.0).abs() < 1e-9, "{}", e.per_sec());
        // Nonsense counts are bounded, not a division by zero.
        e.record(t0 + ms(200), ms(100), 0, 0);
        e.record(t0 + ms(300), ms(100), 9, 4);
        assert!(e.per_sec().is_finite() && e.per_sec() > 0.0);
    }

    #[test]
    fn eta_and_retry_after_follow_the_rate() {
        let d = QueueDrain::new(4.0);
        assert_eq!(d.eta_ms(8), 2000);
        assert_eq!(d.retry_after_secs(10, 300), 3);
        assert_eq!(d.retry_after_secs(0, 300), 1);
        assert_eq!(d.retry_after_secs(100_000, 300), 300);
    }

    #[test]
    fn a_stalled_queue_keeps_a_finite_estimate() {
        let t0 = Instant::now();
        let mut d = QueueDrain::new(1.0);
        for s in 0..60 {
            d.observe(t0 + Duration::from_secs(s), true);
        }
        assert!(d.per_sec() >= FLOOR_PER_SEC);
        assert!(d.retry_after_secs(10, 300) <= 300);
        let mut zero = QueueDrain::new(1.0);
        zero.set_slots(t0, 0, 0);
        assert!(zero.retry_after_secs(10, 300) <= 300);
    }
}

//! The policy stepped with an injected clock.

use std::time::{Duration, Instant};

use super::*;

fn policy() -> ScalePolicy {
    ScalePolicy {
        idle: Duration::from_secs(60),
        ..ScalePolicy::new(0, 4, 2, 1)
    }
}

fn signals(now: Instant, ready: usize, queued: usize, in_flight: usize) -> Signals {
    Signals {
        now,
        queued,
        in_flight,
        batch_queued: 0,
        batch_in_flight: 0,
        replicas_ready: ready,
        replicas_loading: 0,
        threads_free: 8,
        last_traffic: Some(now),
        throughput_per_sec: 0.0,
        batch_backlog: None,
    }
}

fn at(t0: Instant, secs: u64) -> Instant {
    t0 + Duration::from_secs(secs)
}

#[test]
fn a_burst_scales_up_at_the_next_tick() {
    let t0 = Instant::now();
    let mut a = Autoscaler::new(policy());
    assert_eq!(a.decide(&signals(t0, 1, 0, 1)).to, 1);
    let d = a.decide(&signals(at(t0, 1), 1, 40, 2));
    assert_eq!((d.from, d.to), (1, 4), "{}", d.reason);
    assert!(d.reason.contains("40 waiting"), "{}", d.reason);
}

#[test]
fn scale_up_waits_for_its_cooldown() {
    let t0 = Instant::now();
    let mut a = Autoscaler::new(ScalePolicy {
        max_replicas: 8,
        ..policy()
    });
    assert_eq!(a.decide(&signals(t0, 1, 4, 2)).to, 3);
    let mut s = signals(at(t0, 2), 3, 20, 6);
    assert_eq!(a.decide(&s).to, 3, "within the up cooldown");
    s.now = at(t0, 5);
    assert_eq!(a.decide(&s).to, 8);
}

#[test]
fn a_request_at_zero_starts_one_replica() {
    let t0 = Instant::now();
    let mut a = Autoscaler::new(policy());
    let d = a.decide(&signals(t0, 0, 0, 0));
    assert_eq!(d.to, 0);
    let d = a.decide(&signals(t0, 0, 3, 0));
    assert_eq!((d.from, d.to), (0, 1));
    assert!(d.reason.contains("cold start"));
    // The burst behind it scales further at the next tick: no cooldown after a cold start.
    let d = a.decide(&signals(at(t0, 1), 1, 30, 2));
    assert_eq!((d.from, d.to), (1, 4), "{}", d.reason);
}

#[test]
fn idle_for_idle_seconds_scales_to_zero() {
    let t0 = Instant::now();
    let mut a = Autoscaler::new(policy());
    let mut s = signals(t0, 1, 0, 0);
    s.last_traffic = Some(t0);
    s.now = at(t0, 59);
    assert_eq!(a.decide(&s).to, 1);
    s.now = at(t0, 60);
    let d = a.decide(&s);
    assert_eq!((d.from, d.to), (1, 0));
    assert!(d.reason.contains("no traffic for 60 s"), "{}", d.reason);
}

#[test]
fn min_replicas_pins_and_is_restored() {
    let t0 = Instant::now();
    let mut a = Autoscaler::new(ScalePolicy {
        min_replicas: 1,
        ..policy()
    });
    let mut s = signals(at(t0, 1000), 1, 0, 0);
    s.last_traffic = None;
    assert_eq!(a.decide(&s).to, 1, "pinned: never to zero");
    let d = a.decide(&signals(at(t0, 1001), 0, 0, 0));
    assert_eq!((d.from, d.to), (0, 1));
}

#[test]
fn down_slowly_one_at_a_time_after_a_stable_low() {
    let t0 = Instant::now();
    let mut a = Autoscaler::new(policy());
    // Scaled to 4 at t0.
    assert_eq!(a.decide(&signals(t0, 1, 20, 2)).to, 4);
    // Demand falls to 1 in flight: fits in fewer, but must stay low for 30 s and respect the
    // down cooldown (30 s since the scale-up).
    for t in 1..30 {
        assert_eq!(a.decide(&signals(at(t0, t), 4, 0, 1)).to, 4, "t={t}");
    }
    let d = a.decide(&signals(at(t0, 31), 4, 0, 1));
    assert_eq!((d.from, d.to), (4, 3), "{}", d.reason);
    // The next step down waits for the cooldown again.
    assert_eq!(a.decide(&signals(at(t0, 40), 3, 0, 1)).to, 3);
    assert_eq!(
        a.decide(&signals(at(t0, 69), 3, 0, 1)).to,
        3,
        "low again only since t=40"
    );
    let d = a.decide(&signals(at(t0, 70), 3, 0, 1));
    assert_eq!(d.to, 2, "{}", d.reason);
}

#[test]
fn hysteresis_keeps_replicas_that_are_half_busy() {
    let t0 = Instant::now();
    let mut a = Autoscaler::new(policy());
    // 2 replicas × 2 slots, 3 in flight: one replica fewer would be 150% busy.
    for t in 0..200 {
        assert_eq!(a.decide(&signals(at(t0, t), 2, 0, 3)).to, 2);
    }
}

#[test]
fn traffic_keeps_one_replica_even_when_demand_is_low() {
    let t0 = Instant::now();
    let mut a = Autoscaler::new(policy());
    for t in 0..200 {
        let mut s = signals(at(t0, t), 1, 0, 0);
        s.last_traffic = Some(at(t0, t.saturating_sub(10)));
        assert_eq!(a.decide(&s).to, 1);
    }
}

#[test]
fn the_thread_budget_caps_scale_up() {
    let t0 = Instant::now();
    let mut a = Autoscaler::new(ScalePolicy {
        threads_per_replica: 2,
        ..policy()
    });
    let mut s = signals(t0, 1, 40, 2);
    s.threads_free = 3;
    let d = a.decide(&s);
    assert_eq!(d.to, 2, "only one more replica of 2 threads fits in 3 free");
    let mut s = signals(at(t0, 10), 2, 40, 4);
    s.threads_free = 1;
    let d = a.decide(&s);
    assert_eq!(d.to, 2);
    assert!(
        d.reason.contains("thread budget is exhausted"),
        "{}",
        d.reason
    );
    let mut s = signals(at(t0, 20), 0, 5, 0);
    s.threads_free = 0;
    assert_eq!(a.decide(&s).to, 0, "no cold start without threads");
}

#[test]
fn max_replicas_bounds_and_lowering_it_scales_down() {
    let t0 = Instant::now();
    let mut a = Autoscaler::new(policy());
    assert_eq!(a.decide(&signals(t0, 1, 1000, 2)).to, 4);
    a.set_policy(ScalePolicy {
        max_replicas: 2,
        ..policy()
    });
    assert_eq!(a.decide(&signals(at(t0, 1), 4, 1000, 8)).to, 2);
}

fn with_batch(mut s: Signals, queued: usize, in_flight: usize) -> Signals {
    s.batch_queued = queued;
    s.batch_in_flight = in_flight;
    s
}

#[test]
fn a_batch_backlog_alone_never_scales_up() {
    let t0 = Instant::now();
    let mut a = Autoscaler::new(policy());
    for secs in 0..120 {
        let d = a.decide(&with_batch(signals(at(t0, secs), 1, 0, 0), 500, 2));
        assert_eq!((d.from, d.to), (1, 1), "at {secs} s: {}", d.reason);
    }
}

#[test]
fn a_batch_waiting_at_zero_starts_one_replica() {
    let t0 = Instant::now();
    let mut a = Autoscaler::new(policy());
    let d = a.decide(&with_batch(signals(t0, 0, 0, 0), 40, 0));
    assert_eq!(d.to, 1, "{}", d.reason);
    assert!(d.reason.contains("40 batch"), "{}", d.reason);
}

#[test]
fn batch_work_keeps_replicas_from_scaling_down_or_to_zero() {
    let t0 = Instant::now();
    let mut a = Autoscaler::new(policy());
    // Three replicas an interactive peak asked for; then only batch work is left.
    for secs in 0..600 {
        let mut s = with_batch(signals(at(t0, secs), 3, 0, 0), 30, 6);
        s.last_traffic = Some(t0);
        let d = a.decide(&s);
        assert_eq!(d.to, 3, "at {secs} s: {}", d.reason);
    }
    // The batch is done: down one at a time, then to zero once idle.
    let mut replicas = 3;
    for secs in 600..2000 {
        let mut s = signals(at(t0, secs), replicas, 0, 0);
        s.last_traffic = Some(at(t0, 600));
        replicas = a.decide(&s).to;
    }
    assert_eq!(replicas, 0);
}

#[test]
fn interactive_load_scales_up_regardless_of_the_batch_work_it_preempts() {
    let t0 = Instant::now();
    let mut a = Autoscaler::new(policy());
    // Two slots per replica: both hold interactive work, three more wait; the batch work the
    // replica also holds neither hides nor adds to that.
    let d = a.decide(&with_batch(signals(t0, 1, 3, 2), 100, 2));
    assert_eq!((d.from, d.to), (1, 3), "{}", d.reason);
    // Interactive work in one slot with batch work in the other is not "all busy".
    let mut a = Autoscaler::new(policy());
    let d = a.decide(&with_batch(signals(t0, 1, 1, 1), 100, 1));
    assert_eq!(d.to, 1, "{}", d.reason);
}

fn backlog(lines: usize, deadline_secs: u64, rate: Option<f64>) -> Option<BatchBacklog> {
    Some(BatchBacklog {
        lines,
        deadline_in: Duration::from_secs(deadline_secs),
        lines_per_replica_sec: rate,
    })
}

/// One replica running batch lines (its two slots busy with them), nothing interactive.
fn batch_signals(now: Instant, ready: usize, b: Option<BatchBacklog>) -> Signals {
    Signals {
        batch_in_flight: 2 * ready,
        batch_backlog: b,
        ..signals(now, ready, 0, 0)
    }
}

#[test]
fn a_batch_that_would_miss_its_deadline_scales_out_to_what_finishes_it() {
    let t0 = Instant::now();
    let mut a = Autoscaler::new(policy());
    // 100 lines at 1 line/s per replica, 50 s left: 40 s planned (0.8) → 3 replicas.
    let d = a.decide(&batch_signals(t0, 1, backlog(100, 50, Some(1.0))));
    assert_eq!((d.from, d.to), (1, 3), "{}", d.reason);
    assert!(d.reason.contains("miss its deadline"), "{}", d.reason);
    assert!(d.reason.contains("100 lines"), "{}", d.reason);
    // Bounded by max_replicas (4).
    let mut a = Autoscaler::new(policy());
    let d = a.decide(&batch_signals(t0, 1, backlog(1000, 50, Some(1.0))));
    assert_eq!(d.to, 4, "{}", d.reason);
}

#[test]
fn a_batch_that_fits_its_window_or_has_no_rate_yet_adds_nothing() {
    let t0 = Instant::now();
    let mut a = Autoscaler::new(policy());
    // 30 lines at 1/s with 50 s left: done in 30 s ≤ 40 s.
    let d = a.decide(&batch_signals(t0, 1, backlog(30, 50, Some(1.0))));
    assert_eq!(d.to, 1, "{}", d.reason);
    // No rate measured yet: no guess.
    let d = a.decide(&batch_signals(t0, 1, backlog(10_000, 50, None)));
    assert_eq!(d.to, 1, "{}", d.reason);
    // Past the deadline: the runner expires it; nothing to scale for.
    let d = a.decide(&batch_signals(t0, 1, backlog(10_000, 0, Some(1.0))));
    assert_eq!(d.to, 1, "{}", d.reason);
}

#[test]
fn a_deadline_scale_out_keeps_to_the_node_threads_and_the_cooldown() {
    let t0 = Instant::now();
    let mut a = Autoscaler::new(policy());
    let mut s = batch_signals(t0, 1, backlog(100, 50, Some(1.0)));
    s.threads_free = 1;
    let d = a.decide(&s);
    assert_eq!(d.to, 2, "one more replica fits: {}", d.reason);
    let mut s = batch_signals(at(t0, 2), 2, backlog(100, 48, Some(1.0)));
    s.threads_free = 8;
    let d = a.decide(&s);
    assert_eq!(d.to, 2, "within the up cooldown: {}", d.reason);
    s.now = at(t0, 6);
    s.threads_free = 0;
    let d = a.decide(&s);
    assert_eq!(d.to, 2, "{}", d.reason);
    assert!(d.reason.contains("thread budget"), "{}", d.reason);
}

#[test]
fn replicas_a_deadline_needs_are_not_scaled_down() {
    let t0 = Instant::now();
    let mut a = Autoscaler::new(policy());
    // Three replicas, two batch lines running (fits one replica at 50%), but the backlog
    // needs three to finish in time.
    let mut s = Signals {
        batch_in_flight: 1,
        ..batch_signals(t0, 3, backlog(100, 50, Some(1.0)))
    };
    for secs in [0, 40, 80, 120] {
        s.now = at(t0, secs);
        let d = a.decide(&s);
        assert_eq!(d.to, 3, "at {secs} s: {}", d.reason);
    }
    // Once the backlog is gone, the usual slow scale-down applies.
    s.batch_backlog = None;
    let down = [130, 170, 210].into_iter().find_map(|secs| {
        s.now = at(t0, secs);
        let d = a.decide(&s);
        d.is_change().then_some(d.to)
    });
    assert_eq!(down, Some(2), "scaled down once the backlog was done");
}

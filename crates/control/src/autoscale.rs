//! The autoscaler policy: from what a deployment observes to how many replicas it wants.
//!
//! Pure: [`Autoscaler::decide`] takes the signals (with `now`) and remembers only its own
//! cooldown marks, so tests step it with an injected clock. The rules, in order:
//!
//! 1. never below `min_replicas` (a pinned deployment has `min_replicas ≥ 1`);
//! 2. at zero, a waiting request asks for one replica (cold start);
//! 3. up quickly: when requests wait and every slot is busy, jump to the count the demand
//!    needs (bounded by `max_replicas` and by the node's free threads: on a saturated node
//!    another replica adds no compute), unless a scale-up happened within `up_cooldown`;
//! 4. out for a batch's deadline: when the batches' remaining lines, at the rate one replica
//!    has been finishing batch lines, would not be done within [`DEADLINE_SHARE`] of the time
//!    left before the earliest batch deadline, scale to the count that would (same bounds and
//!    cooldown as rule 3);
//! 5. to zero after `idle` without traffic (unless `min_replicas > 0`);
//! 6. down slowly: one replica at a time, only when the demand would fit in one replica fewer
//!    at `down_utilization` (hysteresis), has done so for `down_stable`, and no change
//!    happened within `down_cooldown`. Never below one replica while there is traffic, nor
//!    below what a batch's deadline needs (rule 4).
//!
//! Batch work (lines of a batch, [`backend::Priority::Batch`]) runs in what interactive
//! requests leave: it counts as demand that *keeps* replicas (rules 5 and 6: a running or
//! waiting batch keeps a deployment from scaling down or to zero) and a batch waiting at zero
//! replicas cold-starts one (rule 2: it could never finish otherwise). Its queue never asks
//! for a scale-up (rule 3 counts interactive requests only); only a deadline that the replicas
//! up now would miss does (rule 4), since that batch would otherwise expire unfinished.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct ScalePolicy {
    pub min_replicas: usize,
    pub max_replicas: usize,
    pub slots_per_replica: usize,
    pub threads_per_replica: usize,
    /// No traffic for this long → zero replicas (when `min_replicas == 0`).
    pub idle: Duration,
    /// Least time between two scale-ups.
    pub up_cooldown: Duration,
    /// Least time between any change and a scale-down.
    pub down_cooldown: Duration,
    /// How long the demand must stay low before a scale-down.
    pub down_stable: Duration,
    /// Scale down only if the remaining replicas would be at most this busy (0..1).
    pub down_utilization: f64,
}

impl ScalePolicy {
    /// Sensible cooldowns for the given bounds.
    pub fn new(min_replicas: usize, max_replicas: usize, slots: usize, threads: usize) -> Self {
        Self {
            min_replicas,
            max_replicas: max_replicas.max(min_replicas).max(1),
            slots_per_replica: slots.max(1),
            threads_per_replica: threads.max(1),
            idle: Duration::from_secs(300),
            up_cooldown: Duration::from_secs(5),
            down_cooldown: Duration::from_secs(30),
            down_stable: Duration::from_secs(30),
            down_utilization: 0.5,
        }
    }
}

/// What the deployment observes at one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Signals {
    pub now: Instant,
    /// Interactive requests waiting in the admission queue.
    pub queued: usize,
    /// Interactive requests running on replicas (busy slots).
    pub in_flight: usize,
    /// Batch requests waiting in the admission queue.
    pub batch_queued: usize,
    /// Batch requests on replicas (running, or pre-empted there and waiting to resume).
    pub batch_in_flight: usize,
    pub replicas_ready: usize,
    pub replicas_loading: usize,
    /// Threads this deployment could still get on the node (free, or held by idle replicas of
    /// other deployments that may be unloaded).
    pub threads_free: usize,
    /// Last time a request arrived or ran.
    pub last_traffic: Option<Instant>,
    /// Recent completions per second (for the reason text).
    pub throughput_per_sec: f64,
    /// What the batches running on this deployment still have to do, when any reported it.
    pub batch_backlog: Option<BatchBacklog>,
}

/// The batches' remaining work against their deadline (rule 4).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchBacklog {
    /// Lines not yet finished, over every batch that reported.
    pub lines: usize,
    /// Time left before the earliest of their deadlines.
    pub deadline_in: Duration,
    /// Batch lines one replica finished per second lately; `None` until measured.
    pub lines_per_replica_sec: Option<f64>,
}

/// Rule 4 plans to finish a batch backlog within this share of the time left, so that a
/// replica's load time and a slower stretch do not make it miss its deadline.
pub const DEADLINE_SHARE: f64 = 0.8;

impl BatchBacklog {
    /// Replicas that would finish the backlog within [`DEADLINE_SHARE`] of the time left, at
    /// the measured rate; `None` while there is no rate, nothing left or no time left.
    pub fn replicas_needed(&self) -> Option<usize> {
        let rate = self.lines_per_replica_sec.filter(|r| *r > 0.0)?;
        let secs = self.deadline_in.as_secs_f64() * DEADLINE_SHARE;
        if self.lines == 0 || secs <= 0.0 {
            return None;
        }
        let needed = (self.lines as f64 / (rate * secs)).ceil();
        // Bounded: the caller caps it by max_replicas anyway.
        Some(needed.min(1e6) as usize)
    }
}

/// A desired replica count and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub from: usize,
    pub to: usize,
    pub reason: String,
}

impl Decision {
    pub fn is_change(&self) -> bool {
        self.from != self.to
    }
}

#[derive(Debug, Clone)]
pub struct Autoscaler {
    policy: ScalePolicy,
    last_up: Option<Instant>,
    last_change: Option<Instant>,
    low_since: Option<Instant>,
}

impl Autoscaler {
    pub fn new(policy: ScalePolicy) -> Self {
        Self {
            policy,
            last_up: None,
            last_change: None,
            low_since: None,
        }
    }

    pub fn policy(&self) -> &ScalePolicy {
        &self.policy
    }

    /// New bounds; cooldown marks are kept.
    pub fn set_policy(&mut self, policy: ScalePolicy) {
        self.policy = policy;
    }

    /// The last scale-up could not be carried out (no room yet): do not let its cooldown
    /// delay the next try.
    pub fn forget_scale_up(&mut self) {
        self.last_up = None;
    }

    pub fn decide(&mut self, s: &Signals) -> Decision {
        let current = s.replicas_ready + s.replicas_loading;
        let (to, reason) = self.target(s, current);
        let decision = Decision {
            from: current,
            to,
            reason,
        };
        if decision.is_change() {
            self.last_change = Some(s.now);
            self.low_since = None;
            // A cold start (0 → n) sets no cooldown: a burst that arrives at zero gets its
            // next replicas at the next tick.
            if to > current && current > 0 {
                self.last_up = Some(s.now);
            }
        }
        decision
    }

    fn target(&mut self, s: &Signals, current: usize) -> (usize, String) {
        let p = &self.policy;
        let slots = p.slots_per_replica;
        // Interactive demand scales up; batch demand only keeps what is there.
        let demand = s.queued + s.in_flight;
        let needed = demand.div_ceil(slots);
        let batch = s.batch_queued + s.batch_in_flight;
        let can_add = s.threads_free / p.threads_per_replica;
        let threads_note = || {
            format!(
                "the node's thread budget is exhausted: a replica needs {} threads, {} free",
                p.threads_per_replica, s.threads_free
            )
        };

        if current < p.min_replicas {
            let to = p.min_replicas.min(current + can_add);
            if to == current {
                return (
                    current,
                    format!(
                        "below min_replicas {}, but {}",
                        p.min_replicas,
                        threads_note()
                    ),
                );
            }
            return (to, format!("below min_replicas {}", p.min_replicas));
        }
        if current == 0 {
            let waiting = s.queued + s.batch_queued;
            if waiting == 0 {
                return (0, "idle at zero".into());
            }
            if can_add == 0 {
                return (
                    0,
                    format!("{waiting} waiting at zero replicas, but {}", threads_note()),
                );
            }
            return (
                1,
                format!(
                    "{waiting} request(s) waiting at zero replicas ({} batch): cold start",
                    s.batch_queued
                ),
            );
        }

        let all_busy = s.in_flight >= s.replicas_ready * slots;
        if s.queued > 0 && all_busy && needed > current && current < p.max_replicas {
            if self.cooling(self.last_up, p.up_cooldown, s.now) {
                return (current, "scale-up cooldown".into());
            }
            if can_add == 0 {
                return (
                    current,
                    format!(
                        "{} waiting and all slots busy, but {}",
                        s.queued,
                        threads_note()
                    ),
                );
            }
            let to = needed.min(p.max_replicas).min(current + can_add);
            return (
                to,
                format!(
                    "{} waiting, {}/{} slots busy, {:.1} req/s: {} replicas of {} slots needed",
                    s.queued,
                    s.in_flight,
                    s.replicas_ready * slots,
                    s.throughput_per_sec,
                    needed,
                    slots
                ),
            );
        }

        // Rule 4: the batches' backlog and the replicas its deadline needs.
        let deadline = s
            .batch_backlog
            .as_ref()
            .and_then(|b| Some((b, b.replicas_needed()?)));
        let for_deadline = deadline.map_or(0, |(_, needed)| needed);
        if let Some((b, needed)) = deadline.filter(|_| for_deadline > current) {
            if current < p.max_replicas {
                let why = format!(
                    "a batch backlog of {} lines at {:.2} lines/s per replica would miss its \
                     deadline in {} s",
                    b.lines,
                    b.lines_per_replica_sec.unwrap_or(0.0),
                    b.deadline_in.as_secs()
                );
                if self.cooling(self.last_up, p.up_cooldown, s.now) {
                    return (current, "scale-up cooldown".into());
                }
                if can_add == 0 {
                    return (current, format!("{why}, but {}", threads_note()));
                }
                let to = needed.min(p.max_replicas).min(current + can_add);
                return (
                    to,
                    format!("{why}: {needed} replicas needed to finish it in time"),
                );
            }
        }

        let busy = demand + batch > 0;
        let idle_for = s
            .last_traffic
            .map_or(p.idle, |t| s.now.saturating_duration_since(t));
        if !busy && p.min_replicas == 0 && idle_for >= p.idle {
            return (
                0,
                format!(
                    "no traffic for {} s (idle_seconds {})",
                    idle_for.as_secs(),
                    p.idle.as_secs()
                ),
            );
        }

        let floor = p.min_replicas.max(1).max(for_deadline.min(p.max_replicas));
        let fits_in_fewer = current > floor
            && ((demand + batch) as f64) <= ((current - 1) * slots) as f64 * p.down_utilization;
        let over_max = current > p.max_replicas;
        if !fits_in_fewer && !over_max {
            self.low_since = None;
            return (current, "steady".into());
        }
        let low_since = *self.low_since.get_or_insert(s.now);
        if over_max {
            return (
                p.max_replicas,
                format!("above max_replicas {}", p.max_replicas),
            );
        }
        if s.now.saturating_duration_since(low_since) < p.down_stable
            || self.cooling(self.last_change, p.down_cooldown, s.now)
        {
            return (current, "low demand, waiting for it to last".into());
        }
        (
            current - 1,
            format!(
                "{} in flight and {} waiting fit in {} replica(s) at ≤{:.0}% of {} slots for {} s",
                s.in_flight + s.batch_in_flight,
                s.queued + s.batch_queued,
                current - 1,
                p.down_utilization * 100.0,
                slots,
                s.now.saturating_duration_since(low_since).as_secs()
            ),
        )
    }

    fn cooling(&self, mark: Option<Instant>, cooldown: Duration, now: Instant) -> bool {
        mark.is_some_and(|t| now.saturating_duration_since(t) < cooldown)
    }
}

#[cfg(test)]
#[path = "autoscale_tests.rs"]
mod tests;

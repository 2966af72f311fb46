//! A member's health: a short cool-down after a failure (or as long as its `Retry-After`
//! says), and a circuit that opens after [`Policy::trip_after`] failures in a row, keeping the
//! member out for a cool-down that doubles each time it trips again, then lets one probe
//! request through (half-open): its success closes the circuit, its failure opens it again.
//! Pure: the time is passed in, so tests drive it with their own clock.

use std::time::{Duration, Instant};

/// Thresholds and cool-downs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures in a row that open the circuit.
    pub trip_after: u32,
    /// How long a member rests after a single failure that named no `Retry-After`.
    pub cool_down: Duration,
    /// How long an opened circuit stays open the first time; doubled for each further trip.
    pub open_for: Duration,
    /// The longest an opened circuit stays open.
    pub max_open_for: Duration,
    /// The longest `Retry-After` honoured.
    pub max_retry_after: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            trip_after: 3,
            cool_down: Duration::from_millis(500),
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// Whether a member may take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// It may.
    Ready,
    /// Its circuit was open and has waited long enough: one request may probe it.
    Probe,
    /// Not before this instant.
    Resting(Instant),
    /// Its probe is in flight; no other request goes to it meanwhile.
    Probing,
}

impl Health {
    pub fn usable(self) -> bool {
        matches!(self, Health::Ready | Health::Probe)
    }
}

/// One member's breaker.
#[derive(Debug, Clone, Default)]
pub struct Breaker {
    /// Failures in a row.
    failures: u32,
    /// Times the circuit opened since the member last succeeded.
    trips: u32,
    /// Not usable before this (a cool-down or an open circuit).
    until: Option<Instant>,
    /// The circuit is open (a request after `until` is a probe).
    open: bool,
    /// A probe is in flight.
    probing: bool,
}

impl Breaker {
    pub fn health(&self, now: Instant) -> Health {
        match self.until {
            Some(until) if now < until => Health::Resting(until),
            _ if self.probing => Health::Probing,
            _ if self.open => Health::Probe,
            _ => Health::Ready,
        }
    }

    /// A request goes to the member now (a probe, when the circuit is open).
    pub fn attempt(&mut self, now: Instant) {
        if self.health(now) == Health::Probe {
            self.probing = true;
        }
    }

    /// The member answered: the circuit closes.
    pub fn success(&mut self) {
        *self = Self::default();
    }

    /// The member failed; `retry_after`: how long it asked to be left alone.
    pub fn failure(&mut self, now: Instant, retry_after: Option<Duration>, policy: &Policy) {
        self.failures = self.failures.saturating_add(1);
        let probe_failed = std::mem::take(&mut self.probing);
        let asked = retry_after.map(|d| d.min(policy.max_retry_after));
        if probe_failed || self.failures >= policy.trip_after {
            self.trips = self.trips.saturating_add(1);
            let doubled = policy
                .open_for
                .saturating_mul(1u32 << (self.trips - 1).min(16))
                .min(policy.max_open_for);
            self.open = true;
            self.until = Some(now + doubled.max(asked.unwrap_or_default()));
        } else {
            self.until = Some(now + asked.unwrap_or(policy.cool_down));
        }
    }

    /// The request sent as a probe ended without a verdict (the client left): others may
    /// probe.
    pub fn abandon(&mut self) {
        self.probing = false;
    }

    pub fn is_open(&self) -> bool {
        self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            trip_after: 3,
            cool_down: Duration::from_secs(1),
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(25),
            max_retry_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn a_failure_rests_the_member_briefly() {
        let (p, t0) = (policy(), Instant::now());
        let mut b = Breaker::default();
        assert_eq!(b.health(t0), Health::Ready);
        b.failure(t0, None, &p);
        assert_eq!(b.health(t0), Health::Resting(t0 + Duration::from_secs(1)));
        assert_eq!(b.health(t0 + Duration::from_secs(1)), Health::Ready);
        assert!(!b.is_open());
    }

    #[test]
    fn retry_after_is_honoured_within_its_cap() {
        let (p, t0) = (policy(), Instant::now());
        let mut b = Breaker::default();
        b.failure(t0, Some(Duration::from_secs(7)), &p);
        assert_eq!(
            b.health(t0 + Duration::from_secs(6)),
            Health::Resting(t0 + Duration::from_secs(7))
        );
        let mut b = Breaker::default();
        b.failure(t0, Some(Duration::from_secs(3600)), &p);
        assert_eq!(b.health(t0), Health::Resting(t0 + Duration::from_secs(30)));
    }

    #[test]
    fn repeated_failures_open_the_circuit_and_a_probe_closes_it() {
        let (p, t0) = (policy(), Instant::now());
        let mut b = Breaker::default();
        for i in 0..3 {
            b.failure(t0 + Duration::from_secs(2 * i), None, &p);
        }
        assert!(b.is_open());
        let t = t0 + Duration::from_secs(4);
        assert_eq!(b.health(t), Health::Resting(t + Duration::from_secs(10)));
        let later = t + Duration::from_secs(10);
        assert_eq!(b.health(later), Health::Probe);
        b.attempt(later);
        // One probe at a time.
        assert_eq!(b.health(later), Health::Probing);
        b.success();
        assert_eq!(b.health(later), Health::Ready);
        assert!(!b.is_open());
    }

    #[test]
    fn a_failed_probe_opens_it_for_longer_up_to_the_cap() {
        let (p, t0) = (policy(), Instant::now());
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.failure(t0, None, &p);
        }
        let t1 = t0 + Duration::from_secs(10);
        b.attempt(t1);
        b.failure(t1, None, &p);
        assert_eq!(b.health(t1), Health::Resting(t1 + Duration::from_secs(20)));
        let t2 = t1 + Duration::from_secs(20);
        b.attempt(t2);
        b.failure(t2, None, &p);
        assert_eq!(b.health(t2), Health::Resting(t2 + Duration::from_secs(25)));
        // An abandoned probe lets the next request probe.
        let t3 = t2 + Duration::from_secs(25);
        b.attempt(t3);
        b.abandon();
        assert_eq!(b.health(t3), Health::Probe);
    }
}

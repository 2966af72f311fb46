//! Which member takes the next attempt: each member's live state (breaker, requests in flight,
//! recent latencies, its own RPM/TPM window) and the group's strategy. Pure apart from the
//! state it updates; the time is passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::breaker::{Breaker, Health};

/// How a group spreads requests over its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// In proportion to the weights (smooth weighted round robin: exact over any run of
    /// requests, no bursts).
    #[default]
    Weighted,
    /// The member with the fewest requests in flight here (the weights break ties).
    LeastBusy,
    /// The member with the lowest mean time to first token over its last
    /// [`LATENCY_WINDOW`] answers; a member without any is tried first.
    Latency,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Weighted => "weighted",
            Strategy::LeastBusy => "least_busy",
            Strategy::Latency => "latency",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "weighted" => Some(Self::Weighted),
            "least_busy" => Some(Self::LeastBusy),
            "latency" => Some(Self::Latency),
            _ => None,
        }
    }
}

/// Answers whose latency the `latency` strategy averages.
pub const LATENCY_WINDOW: usize = 16;
/// The span of a member's RPM/TPM window.
const MINUTE: Duration = Duration::from_secs(60);

/// One member's state in this process.
#[derive(Debug, Clone)]
pub struct MemberState {
    pub weight: u32,
    /// Requests per minute this member (an upstream key) takes; `None`: any.
    pub rpm: Option<u32>,
    /// Tokens per minute; `None`: any.
    pub tpm: Option<u64>,
    pub breaker: Breaker,
    pub in_flight: u32,
    latencies: VecDeque<Duration>,
    /// Requests sent in the last minute, with the tokens each used (0 until it ends).
    window: VecDeque<(Instant, u64)>,
    /// Smooth weighted round robin's running credit.
    credit: i64,
}

impl MemberState {
    pub fn new(weight: u32, rpm: Option<u32>, tpm: Option<u64>) -> Self {
        Self {
            weight: weight.max(1),
            rpm,
            tpm,
            breaker: Breaker::default(),
            in_flight: 0,
            latencies: VecDeque::new(),
            window: VecDeque::new(),
            credit: 0,
        }
    }

    /// Whether its RPM and TPM windows have room at `now`.
    pub fn has_room(&mut self, now: Instant) -> bool {
        while let Some(&(at, _)) = self.window.front() {
            if now.duration_since(at) < MINUTE {
                break;
            }
            self.window.pop_front();
        }
        let requests = self.window.len();
        let tokens: u64 = self.window.iter().map(|&(_, t)| t).sum();
        self.rpm.is_none_or(|rpm| requests < rpm as usize)
            && self.tpm.is_none_or(|tpm| tokens < tpm)
    }

    /// Why it cannot take a request now, if it cannot: when it may again.
    pub fn available_at(&mut self, now: Instant) -> Option<Instant> {
        match self.breaker.health(now) {
            Health::Resting(until) => return Some(until),
            Health::Probing => return Some(now + Duration::from_secs(1)),
            Health::Ready | Health::Probe => {}
        }
        if self.has_room(now) {
            None
        } else {
            let oldest = self.window.front().map_or(now, |&(at, _)| at);
            Some(oldest + MINUTE)
        }
    }

    /// An attempt starts on it.
    pub fn start(&mut self, now: Instant) {
        self.breaker.attempt(now);
        self.in_flight += 1;
        self.window.push_back((now, 0));
    }

    /// An attempt on it ended (whatever its outcome); `tokens`: what it used.
    pub fn end(&mut self, tokens: u64) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if tokens > 0 {
            if let Some(last) = self.window.back_mut() {
                last.1 = last.1.saturating_add(tokens);
            }
        }
    }

    pub fn record_latency(&mut self, ttft: Duration) {
        if self.latencies.len() == LATENCY_WINDOW {
            self.latencies.pop_front();
        }
        self.latencies.push_back(ttft);
    }

    /// Mean latency over the window; `None` before its first answer.
    pub fn mean_latency(&self) -> Option<Duration> {
        let n = u32::try_from(self.latencies.len())
            .ok()
            .filter(|&n| n > 0)?;
        Some(self.latencies.iter().sum::<Duration>() / n)
    }
}

/// The member for the next attempt among `members` whose `eligible` flag is set (not tried
/// yet by this request, served here), or `None` when none can take it now.
pub fn pick(
    strategy: Strategy,
    members: &mut [MemberState],
    eligible: &[bool],
    now: Instant,
) -> Option<usize> {
    let mut ready: Vec<usize> = (0..members.len())
        .filter(|&i| eligible.get(i).copied().unwrap_or(false))
        .filter(|&i| members[i].available_at(now).is_none())
        .collect();
    match strategy {
        Strategy::Weighted => {}
        Strategy::LeastBusy => {
            let least = ready.iter().map(|&i| members[i].in_flight).min()?;
            ready.retain(|&i| members[i].in_flight == least);
        }
        Strategy::Latency => {
            if let Some(&fresh) = ready.iter().find(|&&i| members[i].mean_latency().is_none()) {
                return Some(fresh);
            }
            let best = ready
                .iter()
                .filter_map(|&i| members[i].mean_latency())
                .min()?;
            ready.retain(|&i| members[i].mean_latency() == Some(best));
        }
    }
    round_robin(members, &ready)
}

/// Smooth weighted round robin (nginx's) among `ready`.
fn round_robin(members: &mut [MemberState], ready: &[usize]) -> Option<usize> {
    let total: i64 = ready.iter().map(|&i| i64::from(members[i].weight)).sum();
    let mut best: Option<usize> = None;
    for &i in ready {
        members[i].credit += i64::from(members[i].weight);
        if best.is_none_or(|b| members[i].credit > members[b].credit) {
            best = Some(i);
        }
    }
    let chosen = best?;
    members[chosen].credit -= total;
    Some(chosen)
}

/// The earliest instant any of `members` may take a request again (for `Retry-After`).
pub fn next_available(members: &mut [MemberState], now: Instant) -> Option<Instant> {
    members.iter_mut().filter_map(|m| m.available_at(now)).min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::Policy;

    fn group(weights: &[u32]) -> Vec<MemberState> {
        weights
            .iter()
            .map(|&w| MemberState::new(w, None, None))
            .collect()
    }

    #[test]
    fn weighted_is_exact_and_smooth() {
        let mut members = group(&[3, 1]);
        let now = Instant::now();
        let picks: Vec<usize> = (0..8)
            .filter_map(|_| pick(Strategy::Weighted, &mut members, &[true, true], now))
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 0, 0, 1, 0]);
        let mut counts = [0; 2];
        for _ in 0..400 {
            if let Some(i) = pick(Strategy::Weighted, &mut members, &[true, true], now) {
                counts[i] += 1;
            }
        }
        assert_eq!(counts, [300, 100]);
    }

    #[test]
    fn ineligible_and_resting_members_are_skipped() {
        let mut members = group(&[5, 1, 1]);
        let now = Instant::now();
        members[1].breaker.failure(now, None, &Policy::default());
        for _ in 0..5 {
            assert_eq!(
                pick(Strategy::Weighted, &mut members, &[false, true, true], now),
                Some(2)
            );
        }
        assert_eq!(
            pick(Strategy::Weighted, &mut members, &[false, true, false], now),
            None
        );
        let later = now + Policy::default().cool_down;
        assert_eq!(
            pick(
                Strategy::Weighted,
                &mut members,
                &[false, true, false],
                later
            ),
            Some(1)
        );
        assert_eq!(next_available(&mut members, now), Some(later));
    }

    #[test]
    fn least_busy_takes_the_idlest() {
        let mut members = group(&[1, 1, 1]);
        let now = Instant::now();
        members[0].start(now);
        members[0].start(now);
        members[2].start(now);
        assert_eq!(
            pick(Strategy::LeastBusy, &mut members, &[true; 3], now),
            Some(1)
        );
        members[1].start(now);
        members[1].start(now);
        assert_eq!(
            pick(Strategy::LeastBusy, &mut members, &[true; 3], now),
            Some(2)
        );
        members[0].end(0);
        members[0].end(0);
        assert_eq!(
            pick(Strategy::LeastBusy, &mut members, &[true; 3], now),
            Some(0)
        );
    }

    #[test]
    fn latency_explores_then_takes_the_fastest_window() {
        let mut members = group(&[1, 1]);
        let now = Instant::now();
        members[0].record_latency(Duration::from_millis(50));
        assert_eq!(
            pick(Strategy::Latency, &mut members, &[true, true], now),
            Some(1)
        );
        members[1].record_latency(Duration::from_millis(20));
        assert_eq!(
            pick(Strategy::Latency, &mut members, &[true, true], now),
            Some(1)
        );
        // A moving window: old answers leave it.
        for _ in 0..LATENCY_WINDOW {
            members[1].record_latency(Duration::from_millis(90));
        }
        assert_eq!(members[1].mean_latency(), Some(Duration::from_millis(90)));
        assert_eq!(
            pick(Strategy::Latency, &mut members, &[true, true], now),
            Some(0)
        );
    }

    #[test]
    fn rpm_and_tpm_windows_take_a_member_out_for_a_minute() {
        let now = Instant::now();
        let mut m = MemberState::new(1, Some(2), None);
        m.start(now);
        m.end(0);
        m.start(now);
        m.end(0);
        assert_eq!(m.available_at(now), Some(now + MINUTE));
        assert_eq!(m.available_at(now + MINUTE), None);
        let mut t = MemberState::new(1, None, Some(100));
        t.start(now);
        t.end(120);
        assert!(!t.has_room(now + Duration::from_secs(59)));
        assert!(t.has_room(now + MINUTE));
    }
}

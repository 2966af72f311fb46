//! Sliding-window rate limits over one-second buckets. Pure: the stores read a subject's buckets
//! inside a transaction that serialises admissions of that subject, call [`check`], and write.
//!
//! A request admitted at second `s` counts in the window until second `s + 60`: at time `t` the
//! window holds the buckets `t − 59 ..= t`.

use crate::model::LimitSubject;

/// The window length in seconds.
pub const WINDOW_SECS: i64 = 60;

/// One second's admissions for a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub second: i64,
    pub requests: i64,
    pub tokens: i64,
}

/// `(second, requests, tokens)`, as the stores select a bucket row.
impl From<(i64, i64, i64)> for Bucket {
    fn from((second, requests, tokens): (i64, i64, i64)) -> Self {
        Self {
            second,
            requests,
            tokens,
        }
    }
}

/// The oldest bucket second still inside the window at `now_sec`.
pub fn window_start(now_sec: i64) -> i64 {
    now_sec - WINDOW_SECS + 1
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over a limit now; enough of the window expires after this many seconds.
    RateLimited { retry_after_secs: u64 },
    /// The request alone is larger than the TPM limit: it can never be admitted.
    TooLarge { tpm: i64 },
}

/// Whether one more request of `tokens` fits `limits`, given the subject's buckets (any order;
/// buckets outside the window are ignored).
pub fn check(
    buckets: &[Bucket],
    now_sec: i64,
    limits: &LimitSubject,
    tokens: i64,
) -> Result<(), Refusal> {
    let start = window_start(now_sec);
    let mut live: Vec<Bucket> = buckets
        .iter()
        .copied()
        .filter(|b| b.second >= start && b.second <= now_sec)
        .collect();
    live.sort_by_key(|b| b.second);
    let mut wait = 0;
    if let Some(rpm) = limits.rpm {
        let used: i64 = live.iter().map(|b| b.requests).sum();
        wait = wait.max(wait_to_free(&live, now_sec, used + 1 - rpm, |b| b.requests));
    }
    if let Some(tpm) = limits.tpm {
        if tokens > tpm {
            return Err(Refusal::TooLarge { tpm });
        }
        let used: i64 = live.iter().map(|b| b.tokens).sum();
        wait = wait.max(wait_to_free(&live, now_sec, used + tokens - tpm, |b| {
            b.tokens
        }));
    }
    if wait > 0 {
        return Err(Refusal::RateLimited {
            retry_after_secs: u64::try_from(wait).unwrap_or(1),
        });
    }
    Ok(())
}

/// Seconds until the oldest buckets holding at least `excess` of `measure` leave the window; 0
/// when nothing is in excess.
fn wait_to_free(live: &[Bucket], now_sec: i64, excess: i64, measure: fn(&Bucket) -> i64) -> i64 {
    if excess <= 0 {
        return 0;
    }
    let mut freed = 0;
    for b in live {
        freed += measure(b);
        if freed >= excess {
            return (b.second + WINDOW_SECS - now_sec).max(1);
        }
    }
    // Counters were corrected below what they held; the whole window must pass.
    WINDOW_SECS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rpm: Option<i64>, tpm: Option<i64>) -> LimitSubject {
        LimitSubject {
            subject: "key:k".into(),
            rpm,
            tpm,
        }
    }

    fn bucket(second: i64, requests: i64, tokens: i64) -> Bucket {
        Bucket {
            second,
            requests,
            tokens,
        }
    }

    #[test]
    fn admits_up_to_the_limit_then_waits_for_the_oldest_bucket() {
        let l = limits(Some(3), None);
        let now = 1_000;
        assert_eq!(check(&[], now, &l, 0), Ok(()));
        let b = [bucket(now - 50, 1, 0), bucket(now - 10, 1, 0)];
        assert_eq!(check(&b, now, &l, 0), Ok(()));
        let b = [bucket(now - 50, 1, 0), bucket(now - 10, 2, 0)];
        // The bucket at now − 50 leaves the window at now + 10.
        assert_eq!(
            check(&b, now, &l, 0),
            Err(Refusal::RateLimited {
                retry_after_secs: 10
            })
        );
    }

    #[test]
    fn buckets_outside_the_window_do_not_count() {
        let l = limits(Some(1), None);
        let now = 1_000;
        assert_eq!(check(&[bucket(now - 60, 5, 0)], now, &l, 0), Ok(()));
        assert_eq!(
            check(&[bucket(now - 59, 1, 0)], now, &l, 0),
            Err(Refusal::RateLimited {
                retry_after_secs: 1
            })
        );
    }

    #[test]
    fn tokens_wait_until_enough_have_expired() {
        let l = limits(None, Some(100));
        let now = 1_000;
        let b = [bucket(now - 40, 1, 30), bucket(now - 20, 1, 50)];
        assert_eq!(check(&b, now, &l, 20), Ok(()));
        // 80 + 50 − 100 = 30 must expire: the first bucket (30) suffices, at now + 20.
        assert_eq!(
            check(&b, now, &l, 50),
            Err(Refusal::RateLimited {
                retry_after_secs: 20
            })
        );
        assert_eq!(check(&b, now, &l, 101), Err(Refusal::TooLarge { tpm: 100 }));
    }
}

//! When a stream persists its progress, so that a crash loses at most K tokens of evidence.
//!
//! The ledger bills a crashed stream from the last persisted mark. To keep
//! `tokens the client received ≤ tokens billed ≤ received + K`, the gateway persists a mark
//! *before* sending the tokens it covers, and a mark runs at most K tokens ahead of what was
//! sent. [`ProgressMarks`] decides when: call [`ProgressMarks::before_send`] before each chunk;
//! when it returns a mark, await [`crate::Ledger::progress`] with it, then send. With one-token
//! chunks that is one write per K tokens.

/// K: the most completion tokens a crash can bill beyond what the client received.
pub const PROGRESS_INTERVAL_TOKENS: i64 = 16;

/// The persisted high-water mark of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgressMarks {
    recorded: i64,
}

impl ProgressMarks {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last mark persisted.
    pub fn recorded(&self) -> i64 {
        self.recorded
    }

    /// Called before sending `chunk` completion tokens after `sent` were sent. Returns the
    /// completion-token mark to persist first, or `None` when the last mark still covers the
    /// chunk. A chunk longer than K is covered exactly (the bound then grows to the chunk).
    pub fn before_send(&mut self, sent: i64, chunk: i64) -> Option<i64> {
        let after = sent + chunk.max(0);
        if after <= self.recorded {
            return None;
        }
        self.recorded = after.max(sent + PROGRESS_INTERVAL_TOKENS);
        Some(self.recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_run_ahead_of_what_was_sent_by_at_most_k() {
        let mut marks = ProgressMarks::new();
        let mut writes = 0;
        for sent in 0..1_000 {
            if marks.before_send(sent, 1).is_some() {
                writes += 1;
            }
            // A crash right now: `sent` tokens were received, `recorded` billed.
            assert!(marks.recorded() > sent, "the chunk being sent is covered");
            assert!(marks.recorded() <= sent + PROGRESS_INTERVAL_TOKENS);
        }
        assert_eq!(writes, 1_000 / PROGRESS_INTERVAL_TOKENS + 1);
    }

    #[test]
    fn a_large_chunk_is_covered_whole() {
        let mut marks = ProgressMarks::new();
        assert_eq!(marks.before_send(0, 40), Some(40));
        assert_eq!(marks.before_send(40, 1), Some(56));
        assert_eq!(marks.before_send(41, 3), None);
    }
}

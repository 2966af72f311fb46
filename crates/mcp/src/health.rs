//! Per-process health of servers: one that fails is skipped by `tools/list` for a backoff
//! (1 s doubling to 60 s) and tried again after it; a success clears it. Calls still go to it,
//! so a caller gets the server's own error rather than a guess.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_secs(1);
const LONGEST: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct Down {
    failures: u32,
    until: Instant,
    error: String,
}

#[derive(Default)]
pub(crate) struct Health(Mutex<HashMap<String, Down>>);

impl Health {
    /// Whether `tools/list` should skip the server now, and why.
    pub(crate) fn skip(&self, server_id: &str) -> Option<String> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(server_id)
            .filter(|d| Instant::now() < d.until)
            .map(|d| d.error.clone())
    }

    pub(crate) fn failed(&self, server_id: &str, error: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let failures = map.get(server_id).map_or(0, |d| d.failures) + 1;
        let wait = FIRST
            .saturating_mul(1 << (failures - 1).min(6))
            .min(LONGEST);
        tracing::warn!(
            server = server_id,
            failures,
            retry_in_s = wait.as_secs(),
            error,
            "MCP server failed"
        );
        map.insert(
            server_id.to_owned(),
            Down {
                failures,
                until: Instant::now() + wait,
                error: error.to_owned(),
            },
        );
    }

    pub(crate) fn ok(&self, server_id: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.remove(server_id).is_some() {
            tracing::info!(server = server_id, "MCP server is back");
        }
    }

    pub(crate) fn forget(&self, server_id: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(server_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_server_is_skipped_until_it_succeeds() {
        let h = Health::default();
        assert_eq!(h.skip("a"), None);
        h.failed("a", "refused");
        assert_eq!(h.skip("a").as_deref(), Some("refused"));
        assert_eq!(h.skip("b"), None);
        h.ok("a");
        assert_eq!(h.skip("a"), None);
    }
}

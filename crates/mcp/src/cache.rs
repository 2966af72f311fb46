//! Small in-process caches of what every `/mcp` request reads: who may see which servers, a
//! client session's record and the upstream session it pinned. Entries live a few seconds (so
//! a change made by another process is seen that late at worst) and a change made here drops
//! them at once; a stale pin is harmless (the upstream answers 404 and the pin is renewed).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept at most; beyond it, stale ones are dropped, then all.
const MAX_ENTRIES: usize = 4096;

pub(crate) struct Ttl<K, V> {
    ttl: Duration,
    map: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> Ttl<K, V> {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, V)>> {
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        let map = self.map();
        let (at, value) = map.get(key)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    pub(crate) fn put(&self, key: K, value: V) {
        let mut map = self.map();
        if map.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() < ttl);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, (Instant::now(), value));
    }

    pub(crate) fn remove(&self, key: &K) {
        self.map().remove(key);
    }

    pub(crate) fn clear(&self) {
        self.map().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_are_bounded() {
        let cache = Ttl::new(Duration::from_millis(30));
        cache.put(1, "a");
        assert_eq!(cache.get(&1), Some("a"));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(&1), None);
        for i in 0..(MAX_ENTRIES + 10) {
            cache.put(i, "b");
        }
        assert!(cache.map().len() <= MAX_ENTRIES);
        cache.remove(&(MAX_ENTRIES + 9));
        assert_eq!(cache.get(&(MAX_ENTRIES + 9)), None);
        cache.clear();
        assert!(cache.map().is_empty());
    }
}

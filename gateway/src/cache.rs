//! The short-lived, bounded lookup cache behind credentials, org plans and webhook endpoints:
//! entries live [`TTL`] at most (a `NOTIFY` clears them sooner across replicas), and memory
//! stays bounded under a flood of distinct (bogus) keys.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// How long a looked-up value may be served from memory.
pub const TTL: Duration = Duration::from_secs(5);
const MAX_ENTRIES: usize = 100_000;

pub struct TtlCache<K, V> {
    map: RwLock<HashMap<K, (V, Instant)>>,
    ttl: Duration,
}

impl<K, V> Default for TtlCache<K, V> {
    fn default() -> Self {
        TtlCache::with_ttl(TTL)
    }
}

impl<K, V> TtlCache<K, V> {
    /// A cache whose entries live `ttl` (for what is not a looked-up value that may change,
    /// such as "this credential was valid").
    pub fn with_ttl(ttl: Duration) -> Self {
        TtlCache { map: RwLock::new(HashMap::new()), ttl }
    }
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    /// The cached value, if it is younger than the cache's TTL ([`TTL`] by default).
    pub fn get(&self, key: &K) -> Option<V> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(key).filter(|(_, at)| at.elapsed() < self.ttl).map(|(v, _)| v.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            // Drop what is stale, and if that is not enough, start over.
            let ttl = self.ttl;
            map.retain(|_, (_, at)| at.elapsed() < ttl);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, (value, Instant::now()));
    }

    pub fn remove(&self, key: &K) {
        self.map.write().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    pub fn clear(&self) {
        self.map.write().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

//! [`KeyedLocks`]: one async mutex per key, created on demand and forgotten when unused.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// One async lock per key (a connection's token refresh), shared by clones.
pub struct KeyedLocks<K> {
    locks: Arc<Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>>,
}

impl<K> Clone for KeyedLocks<K> {
    fn clone(&self) -> Self {
        Self {
            locks: self.locks.clone(),
        }
    }
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        Self {
            locks: Arc::default(),
        }
    }
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    /// Runs `work` while holding the lock of `key`.
    pub async fn with<T>(&self, key: &K, work: impl std::future::Future<Output = T>) -> T {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(key.clone()).or_default().clone()
        };
        let result = {
            let _held = lock.lock().await;
            work.await
        };
        drop(lock);
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(key);
        }
        result
    }
}

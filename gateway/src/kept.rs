//! Region streams kept open between the pages of a query.
//!
//! When a page fills, the regions' calls are usually still streaming: their
//! next rows are in flight or already buffered. Instead of cancelling those
//! calls and asking again for the next page, the gateway keeps them, for a
//! short while, under the page token it handed out. The next page with
//! that token (on this gateway process) takes them back and carries on
//! where they stopped; a page on another replica, a retried page or one
//! that comes too late asks the regions again from the cursors in the
//! token, as before. Keeping is an optimisation only: the answer is the
//! same either way.
//!
//! Bounded: at most `max` pages' streams are kept (the oldest is dropped,
//! cancelling its calls), each for at most `ttl`. A kept call holds one of
//! its node's query slots, which is why both bounds are small.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The key of a page's kept streams: a digest of the token that resumes it
/// (the token binds the query, the application and its purpose).
pub type Key = [u8; 32];

/// The key of page token `token`.
pub fn key_of(token: &str) -> Key {
    Sha256::digest(token.as_bytes()).into()
}

/// Kept values of type `T` (a page's region runs), by token.
#[derive(Debug)]
pub struct Kept<T> {
    inner: Arc<Mutex<Entries<T>>>,
    ttl: Duration,
    max: usize,
}

#[derive(Debug)]
struct Entries<T> {
    map: HashMap<Key, (u64, Instant, T)>,
    next: u64,
}

impl<T: Send + 'static> Kept<T> {
    /// Keeps at most `max` entries, each for `ttl`; zero of either keeps none.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Entries {
                map: HashMap::new(),
                next: 0,
            })),
            ttl,
            max,
        }
    }

    /// Whether anything is kept at all.
    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.max > 0
    }

    /// Keeps `value` under `key` for the ttl; the oldest entry goes when
    /// full. Dropping a value cancels what it holds. Needs a tokio runtime.
    pub fn keep(&self, key: Key, value: T) {
        if !self.enabled() {
            return;
        }
        let (generation, evicted) = {
            let Ok(mut e) = self.inner.lock() else { return };
            let mut evicted = None;
            if e.map.len() >= self.max && !e.map.contains_key(&key) {
                let oldest = e.map.iter().min_by_key(|(_, (_, at, _))| *at).map(|(k, _)| *k);
                evicted = oldest.and_then(|k| e.map.remove(&k));
            }
            e.next += 1;
            let generation = e.next;
            e.map.insert(key, (generation, Instant::now(), value));
            (generation, evicted)
        };
        // Dropped outside the lock: dropping cancels calls.
        drop(evicted);
        let weak: Weak<Mutex<Entries<T>>> = Arc::downgrade(&self.inner);
        let ttl = self.ttl;
        tokio::spawn(async move {
            tokio::time::sleep(ttl).await;
            let Some(inner) = weak.upgrade() else { return };
            let expired = {
                let Ok(mut e) = inner.lock() else { return };
                match e.map.get(&key) {
                    Some((g, _, _)) if *g == generation => e.map.remove(&key),
                    _ => None,
                }
            };
            drop(expired);
        });
    }

    /// Takes what was kept under `key`, if it is still there.
    pub fn take(&self, key: &Key) -> Option<T> {
        let mut e = self.inner.lock().ok()?;
        e.map.remove(key).map(|(_, _, v)| v)
    }

    /// How many entries are kept now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|e| e.map.len()).unwrap_or(0)
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kept_values_are_taken_once_and_expire() {
        let kept = Kept::new(Duration::from_millis(50), 2);
        kept.keep(key_of("a"), 1);
        kept.keep(key_of("b"), 2);
        assert_eq!(kept.take(&key_of("a")), Some(1));
        assert_eq!(kept.take(&key_of("a")), None, "taken once");
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(kept.take(&key_of("b")), None, "expired");
    }

    #[tokio::test]
    async fn the_oldest_goes_when_full() {
        let kept = Kept::new(Duration::from_secs(10), 2);
        kept.keep(key_of("a"), 1);
        tokio::time::sleep(Duration::from_millis(2)).await;
        kept.keep(key_of("b"), 2);
        tokio::time::sleep(Duration::from_millis(2)).await;
        kept.keep(key_of("c"), 3);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept.take(&key_of("a")), None);
        assert_eq!(kept.take(&key_of("c")), Some(3));
    }

    #[tokio::test]
    async fn nothing_is_kept_when_disabled() {
        let kept = Kept::new(Duration::ZERO, 8);
        kept.keep(key_of("a"), 1);
        assert!(kept.is_empty());
    }
}

//! What a grant's use costs: a token bucket per (grant, application) for
//! `rate_per_minute`, and a use count per (grant, application) for
//! `max_uses` behind the [`UseLedger`] trait (in memory here; the node's
//! store keeps one that survives restarts).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use futures::future::BoxFuture;

use super::grant::UseLedger;
use crate::error::NodeError;

/// Buckets kept at most; beyond, full buckets (which cost nothing to
/// forget: a new one starts full) are dropped first.
pub const MAX_BUCKETS: usize = 10_000;
/// Use counts kept in memory at most.
pub const MAX_LEDGER_ENTRIES: usize = 100_000;

/// Token buckets of grants' `rate_per_minute`, per (grant, application):
/// a bucket holds up to `rate` queries and refills `rate` per minute.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// Takes one token from the bucket of (`grant`, `subject`) of `rate`
    /// per minute at `now`; `false` when it is empty.
    pub fn take(&self, grant: &str, subject: &str, rate: u32, now: Instant) -> bool {
        let capacity = f64::from(rate.max(1));
        let per_sec = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_sec < capacity);
            if buckets.len() >= MAX_BUCKETS {
                // Every bucket is in use: refuse new keys rather than grow.
                if !buckets.contains_key(&(grant.to_owned(), subject.to_owned())) {
                    return false;
                }
            }
        }
        let b = buckets.entry((grant.to_owned(), subject.to_owned())).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_sec).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Use counts in memory: the default ledger, and the one tests use. Counts
/// are lost at restart.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    uses: Mutex<HashMap<(String, String), u64>>,
}

impl UseLedger for MemoryLedger {
    fn take<'a>(&'a self, grant: &'a str, subject: &'a str, max: u64) -> BoxFuture<'a, Result<bool, NodeError>> {
        let mut uses = self.uses.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (grant.to_owned(), subject.to_owned());
        let full = uses.len() >= MAX_LEDGER_ENTRIES;
        let taken = match uses.get_mut(&key) {
            Some(n) if *n >= max => false,
            Some(n) => {
                *n += 1;
                true
            }
            // A full ledger refuses new keys rather than forget counts.
            None if full || max == 0 => false,
            None => {
                uses.insert(key, 1);
                true
            }
        };
        drop(uses);
        Box::pin(std::future::ready(Ok(taken)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_holds_a_minute_and_refills() {
        let r = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(r.take("g", "a", 3, t0));
        }
        assert!(!r.take("g", "a", 3, t0));
        // Another application, another bucket.
        assert!(r.take("g", "b", 3, t0));
        // One token comes back every 20 s at 3 per minute.
        assert!(!r.take("g", "a", 3, t0 + Duration::from_secs(10)));
        assert!(r.take("g", "a", 3, t0 + Duration::from_secs(31)));
        assert!(!r.take("g", "a", 3, t0 + Duration::from_secs(31)));
    }

    #[tokio::test]
    async fn the_memory_ledger_counts_per_grant_and_application() {
        let l = MemoryLedger::default();
        assert!(l.take("g", "a", 2).await.unwrap());
        assert!(l.take("g", "a", 2).await.unwrap());
        assert!(!l.take("g", "a", 2).await.unwrap());
        assert!(l.take("g", "b", 2).await.unwrap());
        assert!(l.take("h", "a", 2).await.unwrap());
    }
}

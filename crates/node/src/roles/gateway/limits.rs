//! Per-key rate limits: a token bucket per API key.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Token buckets, one per key.
pub struct RateLimiter {
    per_minute: u32,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_minute` requests a minute per key, in bursts of up to `burst`.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        RateLimiter {
            per_minute,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket; `Err(seconds)` to wait when empty.
    pub fn take(&self, key: &str) -> Result<(), u64> {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        let rate = f64::from(self.per_minute) / 60.0;
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = b.entry(key.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else if rate <= 0.0 {
            Err(60)
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let l = RateLimiter::new(60, 3);
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.take_at("k", t), Ok(()));
        }
        assert_eq!(l.take_at("k", t), Err(1));
        // Other keys have their own bucket.
        assert_eq!(l.take_at("other", t), Ok(()));
        assert_eq!(l.take_at("k", t + Duration::from_millis(1100)), Ok(()));
        assert!(l.take_at("k", t + Duration::from_millis(1200)).is_err());
    }
}

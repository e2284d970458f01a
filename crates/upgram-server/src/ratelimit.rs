//! Per-source rate limiting with bounded state (S5): a fixed table of token buckets indexed by
//! a keyed hash of the source address. Memory never grows with the number of sources; sources
//! that share a slot share its budget, which only makes the limiter stricter for them. Each
//! worker has its own table with its share of the budget (the kernel spreads a source's
//! queries over the workers), so no lock is taken per query.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;

/// Slots in the table.
const SLOTS: usize = 4096;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    tokens: f64,
    updated: f64,
}

/// A token bucket per (hashed) source address.
#[derive(Debug)]
pub struct RateLimiter {
    slots: Vec<Bucket>,
    hasher: RandomState,
    rate: f64,
    burst: f64,
}

impl RateLimiter {
    /// `rate` queries per second per source, with bursts of `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self { slots: vec![Bucket { tokens: burst, updated: 0.0 }; SLOTS], hasher: RandomState::new(), rate, burst }
    }

    /// Whether a query from `ip` at time `now` (seconds, any fixed origin) is allowed; takes one
    /// token if so.
    pub fn allow(&mut self, ip: IpAddr, now: f64) -> bool {
        let slot = (self.hasher.hash_one(ip) as usize) % SLOTS;
        let bucket = &mut self.slots[slot];
        let elapsed = (now - bucket.updated).max(0.0);
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills() {
        let mut limiter = RateLimiter::new(10.0, 5.0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let allowed = (0..20).filter(|_| limiter.allow(ip, 0.0)).count();
        assert_eq!(allowed, 5, "the burst");
        assert!(limiter.allow(ip, 0.1), "one more token after 0.1 s at 10/s");
        assert!(!limiter.allow(ip, 0.1));
    }

    #[test]
    fn memory_does_not_grow_with_sources() {
        let mut limiter = RateLimiter::new(1.0, 1.0);
        for i in 0..100_000u32 {
            limiter.allow(IpAddr::from(i.to_be_bytes()), 0.0);
        }
        assert_eq!(limiter.slots.len(), SLOTS);
    }
}

//! Per-source rate limiting with bounded state: a fixed table of cells indexed by a keyed
//! hash of the source address. Memory never grows with the number of sources; sources that
//! share a slot share its budget, which only makes the limiter stricter for them.
//!
//! One table serves every worker, so a source gets its budget whatever the number of workers
//! and however the kernel spreads its queries over them. Each cell is one atomic word (the
//! generic cell rate algorithm: the time at which the source's bucket is next empty), updated
//! by compare-and-swap: no lock is taken per query.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots in the table.
const SLOTS: usize = 4096;

/// Most attempts at updating one cell when other workers change it at the same moment; a
/// query that loses them all is refused (the source is sending from several workers at once).
const MAX_ATTEMPTS: usize = 64;

/// A token bucket per (hashed) source address, shared by every worker.
#[derive(Debug)]
pub struct RateLimiter {
    /// Per slot: the theoretical arrival time of the next query, in nanoseconds since the time
    /// origin of `now`; 0 when unused.
    slots: Vec<AtomicU64>,
    hasher: RandomState,
    /// Nanoseconds a query costs (1 / rate).
    interval: u64,
    /// How far ahead of now the next arrival time may run: (burst - 1) × interval.
    tolerance: u64,
}

impl RateLimiter {
    /// `rate` queries per second per source, with bursts of `burst` (at least 1).
    pub fn new(rate: f64, burst: f64) -> Self {
        // At least 1 ns, and the tolerance from that: a rate above 1e9/s must not leave a
        // burst of nothing.
        let interval = if rate > 0.0 { (1e9 / rate).min(u64::MAX as f64) as u64 } else { u64::MAX }.max(1);
        let tolerance = ((burst.max(1.0) - 1.0) * interval as f64).min(u64::MAX as f64) as u64;
        Self { slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(), hasher: RandomState::new(), interval, tolerance }
    }

    /// Whether a query from `ip` at time `now` (seconds, any fixed origin) is allowed; takes one
    /// token if so. Safe to call from every worker at once.
    pub fn allow(&self, ip: IpAddr, now: f64) -> bool {
        let slot = &self.slots[(self.hasher.hash_one(ip) as usize) % SLOTS];
        let now = (now.max(0.0) * 1e9) as u64;
        let mut current = slot.load(Ordering::Relaxed);
        for _ in 0..MAX_ATTEMPTS {
            let next = current.max(now);
            if next - now > self.tolerance {
                return false;
            }
            match slot.compare_exchange_weak(
                current,
                next.saturating_add(self.interval),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills() {
        let limiter = RateLimiter::new(10.0, 5.0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let allowed = (0..20).filter(|_| limiter.allow(ip, 1.0)).count();
        assert_eq!(allowed, 5, "the burst");
        assert!(limiter.allow(ip, 1.1), "one more token after 0.1 s at 10/s");
        assert!(!limiter.allow(ip, 1.1));
    }

    #[test]
    fn a_rate_above_one_per_nanosecond_still_has_its_burst() {
        let limiter = RateLimiter::new(1e12, 1e12);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!((0..1000).filter(|_| limiter.allow(ip, 1.0)).count(), 1000, "all at the same instant");
    }

    #[test]
    fn threads_share_one_budget() {
        let limiter = std::sync::Arc::new(RateLimiter::new(1.0, 100.0));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let limiter = limiter.clone();
                std::thread::spawn(move || (0..100).filter(|_| limiter.allow(ip, 5.0)).count())
            })
            .collect();
        let allowed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(allowed, 100, "the burst, once, over every thread");
    }

    #[test]
    fn memory_does_not_grow_with_sources() {
        let limiter = RateLimiter::new(1.0, 1.0);
        for i in 0..100_000u32 {
            limiter.allow(IpAddr::from(i.to_be_bytes()), 0.0);
        }
        assert_eq!(limiter.slots.len(), SLOTS);
    }
}

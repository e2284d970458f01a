//! Server counters and the reply latency histogram, written in the Prometheus text format
//! (S6). Plain atomics: every worker updates them without locks.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in microseconds.
const LATENCY_BUCKETS_US: [u64; 10] = [5, 10, 25, 50, 100, 250, 500, 1000, 5000, 25000];

/// Everything the server counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Query datagrams received (decodable or not).
    pub datagrams: AtomicU64,
    /// Queries decoded.
    pub queries: AtomicU64,
    /// Inline signed responses sent.
    pub responses: AtomicU64,
    /// Signed fallbacks sent.
    pub fallbacks: AtomicU64,
    /// Error replies sent.
    pub errors: AtomicU64,
    /// Cookie challenges sent.
    pub cookie_challenges: AtomicU64,
    /// Queries refused by the rate limiter.
    pub rate_limited: AtomicU64,
    /// Datagrams that did not decode.
    pub malformed: AtomicU64,
    /// Datagrams dropped without any reply (garbage, other kinds, over the size limits).
    pub dropped: AtomicU64,
    /// Replies served from a cached signature.
    pub cache_hits: AtomicU64,
    /// Signatures made.
    pub signatures: AtomicU64,
    /// Successful catalog reloads.
    pub reloads: AtomicU64,
    /// Failed catalog reloads (the old catalog stays).
    pub reload_failures: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Records the time from receiving a datagram to handing its reply to the socket.
    pub fn observe_latency(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        for (bound, bucket) in LATENCY_BUCKETS_US.iter().zip(&self.latency_buckets) {
            if micros <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counters: [(&str, &str, u64); 9] = [
            (
                "upgram_datagrams_received_total",
                "Datagrams received on the UDP sockets.",
                get(&self.datagrams),
            ),
            (
                "upgram_queries_total",
                "Query datagrams decoded.",
                get(&self.queries),
            ),
            (
                "upgram_fallbacks_total",
                "Answers too large for a datagram, sent as a signed fallback.",
                get(&self.fallbacks),
            ),
            (
                "upgram_cookie_challenges_total",
                "Cookie challenges sent (3x rule).",
                get(&self.cookie_challenges),
            ),
            (
                "upgram_rate_limited_total",
                "Queries refused by the per-source rate limiter.",
                get(&self.rate_limited),
            ),
            (
                "upgram_malformed_total",
                "Datagrams that did not decode.",
                get(&self.malformed),
            ),
            (
                "upgram_dropped_total",
                "Datagrams dropped without a reply.",
                get(&self.dropped),
            ),
            (
                "upgram_signature_cache_hits_total",
                "Replies served with a cached signature.",
                get(&self.cache_hits),
            ),
            (
                "upgram_signatures_total",
                "Ed25519 signatures made.",
                get(&self.signatures),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP upgram_replies_total Replies sent, by kind.\n# TYPE upgram_replies_total counter"
        );
        for (kind, counter) in [
            ("response", &self.responses),
            ("fallback", &self.fallbacks),
            ("error", &self.errors),
            ("cookie-challenge", &self.cookie_challenges),
        ] {
            let _ = writeln!(
                out,
                "upgram_replies_total{{kind=\"{kind}\"}} {}",
                get(counter)
            );
        }
        let _ = writeln!(
            out,
            "# HELP upgram_catalog_reloads_total Catalog reloads, by outcome.\n# TYPE upgram_catalog_reloads_total counter"
        );
        let _ = writeln!(
            out,
            "upgram_catalog_reloads_total{{outcome=\"ok\"}} {}",
            get(&self.reloads)
        );
        let _ = writeln!(
            out,
            "upgram_catalog_reloads_total{{outcome=\"failed\"}} {}",
            get(&self.reload_failures)
        );
        let name = "upgram_reply_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from receiving a query to sending its reply.\n# TYPE {name} histogram"
        );
        for (bound, bucket) in LATENCY_BUCKETS_US.iter().zip(&self.latency_buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {}",
                *bound as f64 / 1e6,
                get(bucket)
            );
        }
        let count = get(&self.latency_count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", get(&self.latency_sum_us) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

//! Server counters and the reply latency histogram, written in the Prometheus text format.
//! Each worker has its own [`Metrics`] (relaxed atomics no other core writes, so no cache
//! line bounces between cores on the hot path); [`render`] adds them up.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use upgram_core::body::OutcomeKind;

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
    /// Answers signed, alone or in a batch.
    pub signatures: AtomicU64,
    /// Answers signed in a batch, sharing one Ed25519 signature with others.
    pub batch_signed: AtomicU64,
    /// Ed25519 signatures made: one per answer signed alone, one per batch.
    pub ed25519_signatures: AtomicU64,
    /// Queries from unvalidated sources answered with a cookie challenge before any answer was
    /// built, because the answer could not be sent to them (SPEC.md §10.6).
    pub unvalidated_refused: AtomicU64,
    /// Fallback documents dropped before their time to respect the store's bounds.
    pub documents_evicted: AtomicU64,
    /// Successful catalog reloads.
    pub reloads: AtomicU64,
    /// Failed catalog reloads (the old catalog stays).
    pub reload_failures: AtomicU64,
    /// Report datagrams received (whose layout decoded).
    pub reports: AtomicU64,
    /// Reports acknowledged: handed to the sink, or repeats of reports already handed over.
    pub reports_accepted: AtomicU64,
    /// Reports from unvalidated sources, answered with a cookie challenge.
    pub reports_refused: AtomicU64,
    /// Reports refused by the per-source rate limiter.
    pub reports_rate_limited: AtomicU64,
    /// Reports the sink dropped because the store is behind (not acknowledged).
    pub reports_dropped: AtomicU64,
    /// Report acknowledgements sent.
    pub report_acks: AtomicU64,
    /// Outcomes handed to the sink, by kind, in the order of [`OutcomeKind::ALL`].
    pub outcomes: [AtomicU64; 4],
    /// Non-cumulative: index i counts latencies in (bound i-1, bound i]; the last, above all.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Counts `evicted` documents the store dropped before their time (none: nothing to add).
    pub fn count_evictions(&self, evicted: usize) {
        if evicted > 0 {
            self.documents_evicted.fetch_add(evicted as u64, Ordering::Relaxed);
        }
    }

    /// Records the time from receiving a datagram to handing its reply to the socket.
    pub fn observe_latency(&self, elapsed: Duration) {
        self.observe_latencies(elapsed, 1);
    }

    /// Records `count` replies that each took `elapsed` from receiving their datagram to
    /// handing the reply to the socket (the replies of one gathering).
    pub fn observe_latencies(&self, elapsed: Duration, count: u64) {
        if count == 0 {
            return;
        }
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_US.iter().position(|bound| micros <= *bound).unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency_buckets[bucket].fetch_add(count, Ordering::Relaxed);
        self.latency_count.fetch_add(count, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(micros.saturating_mul(count), Ordering::Relaxed);
    }
}

/// The sum of several workers' metrics at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// See [`Metrics::datagrams`].
    pub datagrams: u64,
    /// See [`Metrics::queries`].
    pub queries: u64,
    /// See [`Metrics::responses`].
    pub responses: u64,
    /// See [`Metrics::fallbacks`].
    pub fallbacks: u64,
    /// See [`Metrics::errors`].
    pub errors: u64,
    /// See [`Metrics::cookie_challenges`].
    pub cookie_challenges: u64,
    /// See [`Metrics::rate_limited`].
    pub rate_limited: u64,
    /// See [`Metrics::malformed`].
    pub malformed: u64,
    /// See [`Metrics::dropped`].
    pub dropped: u64,
    /// See [`Metrics::cache_hits`].
    pub cache_hits: u64,
    /// See [`Metrics::signatures`].
    pub signatures: u64,
    /// See [`Metrics::batch_signed`].
    pub batch_signed: u64,
    /// See [`Metrics::ed25519_signatures`].
    pub ed25519_signatures: u64,
    /// See [`Metrics::unvalidated_refused`].
    pub unvalidated_refused: u64,
    /// See [`Metrics::documents_evicted`].
    pub documents_evicted: u64,
    /// See [`Metrics::reloads`].
    pub reloads: u64,
    /// See [`Metrics::reload_failures`].
    pub reload_failures: u64,
    /// See [`Metrics::reports`].
    pub reports: u64,
    /// See [`Metrics::reports_accepted`].
    pub reports_accepted: u64,
    /// See [`Metrics::reports_refused`].
    pub reports_refused: u64,
    /// See [`Metrics::reports_rate_limited`].
    pub reports_rate_limited: u64,
    /// See [`Metrics::reports_dropped`].
    pub reports_dropped: u64,
    /// See [`Metrics::report_acks`].
    pub report_acks: u64,
    /// See [`Metrics::outcomes`].
    pub outcomes: [u64; 4],
    /// Latency histogram, non-cumulative, last bucket above every bound.
    pub latency_buckets: [u64; LATENCY_BUCKETS_US.len() + 1],
    /// Latencies observed.
    pub latency_count: u64,
    /// Their sum, in microseconds.
    pub latency_sum_us: u64,
    /// Modules in the catalog in use.
    pub catalog_modules: u64,
    /// Releases in the catalog in use, over every module.
    pub catalog_releases: u64,
    /// HTTP responses under `store/`, as (status code, count), by status code.
    pub downloads: Vec<(u16, u64)>,
}

/// Adds up `parts`.
pub fn snapshot<'m>(parts: impl IntoIterator<Item = &'m Metrics>) -> Snapshot {
    let mut total = Snapshot::default();
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    for m in parts {
        total.datagrams += get(&m.datagrams);
        total.queries += get(&m.queries);
        total.responses += get(&m.responses);
        total.fallbacks += get(&m.fallbacks);
        total.errors += get(&m.errors);
        total.cookie_challenges += get(&m.cookie_challenges);
        total.rate_limited += get(&m.rate_limited);
        total.malformed += get(&m.malformed);
        total.dropped += get(&m.dropped);
        total.cache_hits += get(&m.cache_hits);
        total.signatures += get(&m.signatures);
        total.batch_signed += get(&m.batch_signed);
        total.ed25519_signatures += get(&m.ed25519_signatures);
        total.unvalidated_refused += get(&m.unvalidated_refused);
        total.documents_evicted += get(&m.documents_evicted);
        total.reloads += get(&m.reloads);
        total.reload_failures += get(&m.reload_failures);
        total.reports += get(&m.reports);
        total.reports_accepted += get(&m.reports_accepted);
        total.reports_refused += get(&m.reports_refused);
        total.reports_rate_limited += get(&m.reports_rate_limited);
        total.reports_dropped += get(&m.reports_dropped);
        total.report_acks += get(&m.report_acks);
        for (sum, count) in total.outcomes.iter_mut().zip(&m.outcomes) {
            *sum += get(count);
        }
        for (sum, bucket) in total.latency_buckets.iter_mut().zip(&m.latency_buckets) {
            *sum += get(bucket);
        }
        total.latency_count += get(&m.latency_count);
        total.latency_sum_us += get(&m.latency_sum_us);
    }
    total
}

/// The Prometheus text exposition of `total`. Replies are counted once, by kind, in
/// `upgram_replies_total`.
pub fn render(total: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP upgram_build_info The server's version.\n# TYPE upgram_build_info gauge\nupgram_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let gauges = [
        ("upgram_catalog_modules", "Modules in the catalog being served.", total.catalog_modules),
        ("upgram_catalog_releases", "Releases in the catalog being served, over every module.", total.catalog_releases),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
    let counters: [(&str, &str, u64); 16] = [
        ("upgram_datagrams_received_total", "Datagrams received on the UDP sockets.", total.datagrams),
        ("upgram_queries_total", "Query datagrams decoded.", total.queries),
        ("upgram_rate_limited_total", "Queries refused by the per-source rate limiter.", total.rate_limited),
        ("upgram_malformed_total", "Datagrams that did not decode.", total.malformed),
        ("upgram_dropped_total", "Datagrams dropped without a reply.", total.dropped),
        ("upgram_signature_cache_hits_total", "Replies served with a cached signature.", total.cache_hits),
        ("upgram_signatures_total", "Answers signed, alone or in a batch.", total.signatures),
        (
            "upgram_batch_signed_total",
            "Answers signed in a batch, sharing one Ed25519 signature with others.",
            total.batch_signed,
        ),
        (
            "upgram_ed25519_signatures_total",
            "Ed25519 signatures made: one per answer signed alone, one per batch.",
            total.ed25519_signatures,
        ),
        (
            "upgram_unvalidated_refused_total",
            "Queries from unvalidated sources challenged before any answer was built.",
            total.unvalidated_refused,
        ),
        (
            "upgram_documents_evicted_total",
            "Fallback documents dropped before expiry to keep the store within its bounds.",
            total.documents_evicted,
        ),
        ("upgram_reports_received_total", "Install report datagrams received.", total.reports),
        ("upgram_reports_accepted_total", "Install reports acknowledged.", total.reports_accepted),
        (
            "upgram_reports_refused_total",
            "Install reports from unvalidated sources, answered with a cookie challenge.",
            total.reports_refused,
        ),
        (
            "upgram_reports_rate_limited_total",
            "Install reports refused by the per-source rate limiter.",
            total.reports_rate_limited,
        ),
        (
            "upgram_reports_dropped_total",
            "Install reports dropped because the report store is behind.",
            total.reports_dropped,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    }
    let _ = writeln!(out, "# HELP upgram_replies_total Replies sent, by kind.\n# TYPE upgram_replies_total counter");
    for (kind, value) in [
        ("response", total.responses),
        ("fallback", total.fallbacks),
        ("error", total.errors),
        ("cookie-challenge", total.cookie_challenges),
        ("report-ack", total.report_acks),
    ] {
        let _ = writeln!(out, "upgram_replies_total{{kind=\"{kind}\"}} {value}");
    }
    let name = "upgram_report_outcomes_total";
    let _ = writeln!(out, "# HELP {name} Outcomes of accepted install reports, by result.\n# TYPE {name} counter");
    for (kind, value) in OutcomeKind::ALL.iter().zip(total.outcomes) {
        let _ = writeln!(out, "{name}{{result=\"{}\"}} {value}", kind.name());
    }
    let name = "upgram_http_downloads_total";
    let _ = writeln!(out, "# HELP {name} HTTP responses for store/ files, by status.\n# TYPE {name} counter");
    for (status, value) in &total.downloads {
        let _ = writeln!(out, "{name}{{status=\"{status}\"}} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP upgram_catalog_reloads_total Catalog reloads, by outcome.\n# TYPE upgram_catalog_reloads_total counter"
    );
    let _ = writeln!(out, "upgram_catalog_reloads_total{{outcome=\"ok\"}} {}", total.reloads);
    let _ = writeln!(out, "upgram_catalog_reloads_total{{outcome=\"failed\"}} {}", total.reload_failures);
    let name = "upgram_reply_latency_seconds";
    let _ = writeln!(out, "# HELP {name} Time from receiving a query to sending its reply.\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (bound, count) in LATENCY_BUCKETS_US.iter().zip(&total.latency_buckets) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 / 1e6);
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", total.latency_count);
    let _ = writeln!(out, "{name}_sum {}", total.latency_sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {}", total.latency_count);
    out
}

/// The Prometheus text of the install report writer: its counters, and per release of
/// `catalog` its installs, failures (from `counts`, as last read from the store) and state.
pub fn render_reports(
    counters: &crate::reports::WriterCounters,
    counts: &[crate::reports::ReleaseSummary],
    catalog: &crate::catalog::Catalog,
    now: u64,
) -> String {
    use crate::reports::WriterCounters as C;
    let mut out = String::new();
    let name = "upgram_reports_outcomes_total";
    let _ = writeln!(out, "# HELP {name} Install report outcomes, by what became of them.\n# TYPE {name} counter");
    for (what, value) in [
        ("queued", C::get(&counters.queued)),
        ("stored", C::get(&counters.stored)),
        ("duplicate", C::get(&counters.duplicates)),
        ("dropped", C::get(&counters.dropped)),
        ("lost", C::get(&counters.lost)),
    ] {
        let _ = writeln!(out, "{name}{{outcome=\"{what}\"}} {value}");
    }
    for (name, help, value) in [
        ("upgram_reports_batches_total", "Batches of install reports written to the store.", C::get(&counters.batches)),
        (
            "upgram_reports_store_errors_total",
            "Install report store operations that failed.",
            C::get(&counters.store_errors),
        ),
        ("upgram_reports_halts_total", "Releases halted by their failure reports.", C::get(&counters.halts)),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    }
    let series = [
        ("upgram_release_installs", "Installs reported per release (applied or deferred)."),
        ("upgram_release_failures", "Failures reported per release (failed or rolled back)."),
        ("upgram_release_percent", "Percentage of installations a release is offered to now."),
        ("upgram_release_state", "A release's rollout state: 1 for the state it is in."),
    ];
    let mut lines = [String::new(), String::new(), String::new(), String::new()];
    for module in catalog.modules.values() {
        for release in &module.releases {
            let version = release.version.to_string();
            let found = counts.iter().find(|c| c.module == module.id && c.version == version);
            let (installs, failures) = found.map_or((0, 0), |c| (c.counts.installs, c.counts.failures));
            let labels =
                format!("module=\"{}\",version=\"{version}\",channels=\"{}\"", module.id, release.channels.join(","));
            let percent = if release.forced { 100 } else { release.rollout.percent_at(now) };
            let _ = writeln!(lines[0], "{}{{{labels}}} {installs}", series[0].0);
            let _ = writeln!(lines[1], "{}{{{labels}}} {failures}", series[1].0);
            let _ = writeln!(lines[2], "{}{{{labels}}} {percent}", series[2].0);
            let state = crate::rollout::summary(release, now);
            let _ = writeln!(lines[3], "{}{{{labels},state=\"{state}\"}} 1", series[3].0);
        }
    }
    for ((name, help), lines) in series.iter().zip(&lines) {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{lines}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_add_up_and_the_histogram_is_cumulative() {
        let (a, b) = (Metrics::default(), Metrics::default());
        bump(&a.queries);
        bump(&b.queries);
        a.observe_latency(Duration::from_micros(3));
        b.observe_latency(Duration::from_micros(30));
        b.observe_latency(Duration::from_secs(1));
        let total = snapshot([&a, &b]);
        assert_eq!(total.queries, 2);
        let text = render(&total);
        assert!(text.contains("upgram_queries_total 2"), "{text}");
        assert!(text.contains("upgram_reply_latency_seconds_bucket{le=\"0.000005\"} 1"), "{text}");
        assert!(text.contains("upgram_reply_latency_seconds_bucket{le=\"0.00005\"} 2"), "{text}");
        assert!(text.contains("upgram_reply_latency_seconds_bucket{le=\"+Inf\"} 3"), "{text}");
    }

    #[test]
    fn the_replies_of_one_gathering_are_recorded_at_once_as_many() {
        let one_by_one = Metrics::default();
        for _ in 0..3 {
            one_by_one.observe_latency(Duration::from_micros(40));
        }
        let at_once = Metrics::default();
        at_once.observe_latencies(Duration::from_micros(40), 3);
        at_once.observe_latencies(Duration::from_secs(1), 0);
        assert_eq!(render(&snapshot([&at_once])), render(&snapshot([&one_by_one])));
        let text = render(&snapshot([&at_once]));
        assert!(text.contains("upgram_reply_latency_seconds_bucket{le=\"0.00005\"} 3"), "{text}");
        assert!(text.contains("upgram_reply_latency_seconds_bucket{le=\"0.000025\"} 0"), "{text}");
        assert!(text.contains("upgram_reply_latency_seconds_count 3"), "{text}");
    }

    #[test]
    fn each_series_appears_once() {
        let text = render(&Snapshot { downloads: vec![(200, 3), (404, 1)], ..Snapshot::default() });
        for gone in ["upgram_fallbacks_total", "upgram_cookie_challenges_total"] {
            assert!(!text.contains(gone), "{gone} repeats upgram_replies_total: {text}");
        }
        for wanted in [
            "upgram_build_info{version=",
            "upgram_catalog_modules 0",
            "upgram_catalog_releases 0",
            "upgram_http_downloads_total{status=\"200\"} 3",
            "upgram_http_downloads_total{status=\"404\"} 1",
            "upgram_replies_total{kind=\"fallback\"} 0",
        ] {
            assert!(text.contains(wanted), "{wanted} missing: {text}");
        }
        let mut names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a series declared twice: {text}");
    }
}

//! Client benchmark: checking an installation of 1 000 and of 10 000 modules (10% behind, file
//! lists of two files) against the reference server on loopback, with many query datagrams in
//! flight. Reports the time per check as a caller sees it, reading the merged answers once
//! included (every caller reads them), with the split between the exchanges and the reading;
//! the datagrams (exchanges) per check, the share of answers that came inline, the HTTP fetches
//! of fallback documents, and the bytes on the wire per check, up and down; each beside its goal
//! (MET / NOT MET), and the machine's load average around each size's runs (the cores are
//! shared: the figures mean little under a high load). Between checks the installation
//! remembers the parts that fell back, as `upgram check` does, so they are split further.
//!
//! Run: `cargo bench -p upgram-benches --bench check`. UPGRAM_CHECK_RUNS sets the number of
//! checks per size (default 20). Every check is bounded by the client's deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use upgram_client::Client;
use upgram_client::state::{InstalledModule, InstalledState};
use upgram_core::Sha256Digest;
use upgram_core::cookie::CookieSecret;
use upgram_core::sign::ReplySigner;
use upgram_server::catalog::{Blob, Catalog, Module, Release, ReleaseFile};
use upgram_server::server::{Config, CookieSecrets, Shared};

/// The installation sizes measured.
const SIZES: [usize; 2] = [1_000, 10_000];

/// Before compact answers, a check of 1 000 modules sent this many query datagrams and every
/// answer came as a fallback document.
const BEFORE_DATAGRAMS: usize = 42;

fn release(version: &str, files: &[(&str, &str)]) -> Release {
    let files = files
        .iter()
        .map(|(id, v)| ReleaseFile {
            id: (*id).into(),
            version: v.parse().expect("version"),
            blob: Blob { sha256: Sha256Digest::of(format!("{id}{v}").as_bytes()), size: 100 },
            executable: false,
        })
        .collect();
    Release::new(version.parse().expect("version"), files)
}

/// `modules` modules with two releases each; the installation has 90% at the latest, 10% behind.
fn catalog_and_installation(modules: usize) -> (Catalog, InstalledState) {
    let mut catalog = Catalog::default();
    let mut state = InstalledState::default();
    for i in 0..modules {
        let id = format!("module-{i:04}");
        let releases = vec![
            release("1.0", &[("bin/a", "1.0"), ("lib/b", "1.0")]),
            release("1.1", &[("bin/a", "1.1"), ("lib/b", "1.0")]),
        ];
        catalog.modules.insert(id.clone(), Module::new(id.clone(), releases));
        let version = if i % 10 == 0 { "1.0" } else { "1.1" };
        state.modules.insert(
            id,
            InstalledModule { version: version.into(), files: BTreeMap::new(), frequent: vec![], ..Default::default() },
        );
    }
    (catalog, state)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("UPGRAM_CHECK_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    println!("before compact answers: 1000 modules took {BEFORE_DATAGRAMS} query datagrams per check, 0% inline");
    for modules in SIZES {
        bench(&runtime, modules, runs);
    }
}

/// What one check cost.
#[derive(Debug, Default, Clone, Copy)]
struct Cost {
    exchanges: usize,
    fallbacks: usize,
    sent: u64,
    received: u64,
}

fn bench(runtime: &tokio::runtime::Runtime, modules: usize, runs: usize) {
    let (catalog, mut state) = catalog_and_installation(modules);
    let scratch = std::env::temp_dir().join(format!("upgram-check-bench-{}-{modules}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch");
    let signer = ReplySigner::from_seed(&[3; 32]);
    let key = signer.verifying_key().to_bytes();
    let (udp, _stop) = runtime.block_on(async {
        let listener = upgram_server::http::bind("127.0.0.1:0".parse().expect("addr")).await.expect("http");
        let http = listener.local_addr().expect("addr");
        let sockets = upgram_server::udp::bind("127.0.0.1:0".parse().expect("addr"), 2).expect("udp");
        let udp = sockets[0].local_addr().expect("addr");
        let secrets = CookieSecrets { current: CookieSecret([1; 32]), previous: None };
        let config = Config {
            public_url: format!("http://{http}/"),
            rate_per_source: 1e9,
            burst_per_source: 1e9,
            ..Config::default()
        };
        let shared = Arc::new(Shared::new(catalog, signer, secrets, config));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        upgram_server::udp::serve(shared.clone(), sockets, stopped.clone());
        tokio::spawn(upgram_server::http::serve(listener, upgram_server::http::router(shared, &scratch), stopped));
        (udp, stop)
    });
    let client =
        Client::builder().server(udp).public_key(key).deadline(Duration::from_secs(20)).build().expect("client");
    let load_before = load_average();
    let mut times = Vec::new();
    let mut exchanges_only = Vec::new();
    let mut readings = Vec::new();
    let mut costs = Vec::new();
    for run in 0..=runs {
        let started = Instant::now();
        let report = runtime.block_on(client.check(&state)).expect("the check succeeds");
        let exchanged = started.elapsed();
        // What every caller does next: read the merged answers once. Part of the check's time.
        let reading = Instant::now();
        let answers = report.modules();
        assert_eq!(answers.len(), modules, "every module answered");
        drop(answers);
        let read = reading.elapsed();
        let elapsed = started.elapsed();
        // As `upgram check` saves it in the installation's state: parts that fell back are
        // split further next time.
        report.remember_fallbacks(&mut state);
        let cost = Cost {
            exchanges: report.exchanges,
            fallbacks: report.fallbacks,
            sent: report.bytes_sent,
            received: report.bytes_received,
        };
        if run > 0 {
            // The first check, with no server cookie yet, pays the cookie round trips: reported apart.
            times.push(elapsed);
            exchanges_only.push(exchanged);
            readings.push(read);
            costs.push(cost);
        } else {
            println!(
                "{modules} modules, first check (cold: no server cookie yet, no cached signatures): {elapsed:?}, \
                 {} datagrams, {} fallbacks",
                cost.exchanges, cost.fallbacks
            );
        }
    }
    let load_after = load_average();
    let median = |durations: &mut Vec<Duration>| {
        durations.sort();
        durations[durations.len() / 2]
    };
    let (check, exchanged, read) = (median(&mut times), median(&mut exchanges_only), median(&mut readings));
    let n = costs.len().max(1) as f64;
    let mean = |f: fn(&Cost) -> f64| costs.iter().map(f).sum::<f64>() / n;
    let (exchanges, fallbacks) = (mean(|c| c.exchanges as f64), mean(|c| c.fallbacks as f64));
    let inline = if exchanges > 0.0 { 100.0 * (exchanges - fallbacks) / exchanges } else { 0.0 };
    let goal = Goal::for_size(modules);
    println!("== upgram check of {modules} modules (10% behind) against the reference server on loopback ==");
    println!(
        "median of {runs} checks, reading the merged answers once included: {check:?} per check ({:?} .. {:?}); \
         goal <= {:?}: {}",
        times[0],
        times[times.len() - 1],
        goal.median,
        met(check <= goal.median)
    );
    println!(
        "  of which (medians, for information): exchanges and verification {exchanged:?}, reading the answers {read:?}"
    );
    println!(
        "per check: {exchanges:.1} query datagrams, all in flight at once (up to 32); {inline:.1}% of answers inline \
         (goal >= {}%: {}); {fallbacks:.1} HTTP fetches of fallback documents{}; \
         {:.0} bytes up, {:.0} bytes down",
        goal.inline_percent,
        met(inline >= goal.inline_percent),
        goal.fetches.map_or(String::new(), |most| format!(" (goal <= {most}: {})", met(fallbacks <= most))),
        mean(|c| c.sent as f64),
        mean(|c| c.received as f64)
    );
    println!(
        "load average (1, 5, 15 min) before: {load_before}, after: {load_after} (2 cores: above 2 the figures are inflated)"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The goals of a check of one size (issue "answers that fit", point 3).
struct Goal {
    median: Duration,
    inline_percent: f64,
    /// At most this many HTTP fetches per check, where the issue sets a bound.
    fetches: Option<f64>,
}

impl Goal {
    fn for_size(modules: usize) -> Self {
        if modules <= 1_000 {
            Goal { median: Duration::from_millis(5), inline_percent: 95.0, fetches: Some(2.0) }
        } else {
            Goal { median: Duration::from_millis(25), inline_percent: 95.0, fetches: None }
        }
    }
}

fn met(yes: bool) -> &'static str {
    if yes { "MET" } else { "NOT MET" }
}

/// The load averages of `/proc/loadavg`, or `unknown` where there is none.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    if fields.len() == 3 { fields.join(" ") } else { "unknown".to_owned() }
}

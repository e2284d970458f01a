//! Install reports stored per second through the report writer (bounded queue, one thread,
//! batched inserts), by SQLite (a temporary file, WAL) and by PostgreSQL, with batches of 1 and
//! of 256 outcomes. Each run offers up to UPGRAM_REPORTS_COUNT outcomes (default 20 000; a
//! full queue is retried) for at most UPGRAM_REPORTS_SECONDS (default 10), then shuts the
//! writer down (which stores what is queued) and divides the outcomes stored by the time from
//! the first offer to the end of the flush.
//!
//! PostgreSQL is measured when UPGRAM_TEST_POSTGRES names a server (a fresh database is made
//! per run; `source .ci/postgres.sh && pg_start` starts a throwaway one); otherwise it says
//! SKIPPED.
//!
//! Run: `cargo bench -p upgram-benches --bench reports`.

use std::time::{Duration, Instant, SystemTime};

use upgram_core::body::report::{FailureCode, Outcome, OutcomeKind, Report};
use upgram_server::reports::writer::WriterCounters;
use upgram_server::reports::{ReportWriter, ReportsConfig, WriterOptions};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn report(attempt: u64) -> Report<'static> {
    let failed = attempt.is_multiple_of(10);
    Report {
        channel: Some("stable".into()),
        band: Some((attempt % 10) as u8),
        outcomes: vec![Outcome {
            attempt,
            module: "core".into(),
            from: Some("1.0".into()),
            to: "2.0".into(),
            result: if failed { OutcomeKind::Failed } else { OutcomeKind::Applied },
            code: failed.then_some(FailureCode::Installer),
        }],
    }
}

/// Stores up to `count` outcomes through a writer with batches of `batch`; returns the
/// outcomes stored and the seconds taken.
fn measure(config: &ReportsConfig, dir: &std::path::Path, batch: usize, count: u64, limit: Duration) -> (u64, f64) {
    let store = config.open(dir).expect("open the store").expect("a store");
    let options = WriterOptions { queue: 8192, batch, linger: Duration::from_millis(5), ..WriterOptions::default() };
    let writer = ReportWriter::start(store, options).expect("start the writer");
    let start = Instant::now();
    let mut attempt = 0;
    while attempt < count && start.elapsed() < limit {
        if writer.offer(&report(attempt + 1), SystemTime::now()) {
            attempt += 1;
        } else {
            // The queue is full: the store is the bottleneck being measured.
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    writer.shutdown();
    let seconds = start.elapsed().as_secs_f64();
    (WriterCounters::get(&writer.counters().stored), seconds)
}

fn postgres_database(base: &str, name: &str) -> String {
    let mut admin = postgres::Client::connect(base, postgres::NoTls).expect("connect to UPGRAM_TEST_POSTGRES");
    // Two statements: neither may run inside the transaction a multi-statement batch is.
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).expect("drop database");
    admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
    match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("UPGRAM_TEST_POSTGRES {base:?} has no database path"),
    }
}

fn main() {
    let count = env_number("UPGRAM_REPORTS_COUNT", 20_000);
    let limit = Duration::from_secs(env_number("UPGRAM_REPORTS_SECONDS", 10));
    let postgres = std::env::var("UPGRAM_TEST_POSTGRES").ok();
    println!("reports: up to {count} outcomes, at most {} s per run", limit.as_secs());
    for batch in [1usize, 256] {
        let dir = tempfile::tempdir().expect("temporary folder");
        let config = ReportsConfig::Sqlite(dir.path().join("reports.sqlite"));
        let (stored, seconds) = measure(&config, dir.path(), batch, count, limit);
        println!(
            "sqlite     batch {batch:>3}: {stored:>7} outcomes in {seconds:6.2} s = {:>8.0} outcomes/s",
            stored as f64 / seconds
        );
        match &postgres {
            Some(base) => {
                let url = postgres_database(base, &format!("upgram_bench_reports_{batch}"));
                let config = ReportsConfig::Postgres(url);
                let (stored, seconds) = measure(&config, dir.path(), batch, count, limit);
                println!(
                    "postgresql batch {batch:>3}: {stored:>7} outcomes in {seconds:6.2} s = {:>8.0} outcomes/s",
                    stored as f64 / seconds
                );
            }
            None => println!("postgresql batch {batch:>3}: SKIPPED (UPGRAM_TEST_POSTGRES is not set)"),
        }
    }
}

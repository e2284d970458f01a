//! The install report store: the same tests against SQLite (a temporary file) and PostgreSQL
//! (a fresh database per test on the server `UPGRAM_TEST_POSTGRES` names; `.ci/run` starts
//! one). Without that variable the PostgreSQL tests print SKIPPED, and fail when `CI` is set.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use upgram_core::body::report::{FailureCode, Outcome, OutcomeKind, Report};
use upgram_server::catalog::RolloutState;
use upgram_server::reports::writer::WriterCounters;
use upgram_server::reports::{
    RecentShare, ReleaseCounts, ReportStore, ReportWriter, ReportsConfig, StoredOutcome, WriterOptions,
};
use upgram_server::rollout;

const BIN: &str = env!("CARGO_BIN_EXE_upgram-server");
const POSTGRES_VAR: &str = "UPGRAM_TEST_POSTGRES";

/// A store to test: a temporary folder (the catalog's, and the SQLite file's) and the
/// `--reports` value naming the store.
struct Target {
    dir: tempfile::TempDir,
    config: ReportsConfig,
}

impl Target {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = ReportsConfig::Sqlite(dir.path().join("reports.sqlite"));
        Self { dir, config }
    }

    /// A fresh database on the test server, or `None` (loudly) without one.
    fn postgres(test: &str) -> Option<Self> {
        let Ok(base) = std::env::var(POSTGRES_VAR) else {
            if std::env::var_os("CI").is_some() {
                panic!("{POSTGRES_VAR} is not set while CI is: .ci/run starts PostgreSQL and sets it");
            }
            // Straight to standard error, past the test harness's capture: a skip is seen.
            let _ = writeln!(
                std::io::stderr(),
                "\n!!! SKIPPED {test} against PostgreSQL: {POSTGRES_VAR} is not set (source .ci/postgres.sh && pg_start)\n"
            );
            return None;
        };
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("upgram_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let mut url = url::Url::parse(&base).unwrap();
        url.set_path(&name);
        Some(Self { dir: tempfile::tempdir().unwrap(), config: ReportsConfig::Postgres(url.to_string()) })
    }

    fn open(&self) -> Box<dyn ReportStore> {
        self.config.open(self.dir.path()).unwrap().unwrap()
    }

    fn catalog(&self) -> PathBuf {
        self.dir.path().join("catalog")
    }

    /// Holds the outcomes table's write lock from another connection until dropped: the
    /// writer's next insert waits for it.
    fn stall(&self) -> Stall {
        match &self.config {
            ReportsConfig::Sqlite(path) => {
                let connection = rusqlite::Connection::open(path).unwrap();
                connection.execute_batch("BEGIN EXCLUSIVE").unwrap();
                Stall::Sqlite(connection)
            }
            ReportsConfig::Postgres(url) => {
                let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
                client.batch_execute("BEGIN; LOCK TABLE outcomes IN ACCESS EXCLUSIVE MODE").unwrap();
                Stall::Postgres(client)
            }
            other => panic!("no stall for {other}"),
        }
    }
}

/// A held lock (see [`Target::stall`]); released by [`Stall::release`].
enum Stall {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
}

impl Stall {
    fn release(self) {
        match self {
            Self::Sqlite(connection) => connection.execute_batch("COMMIT").unwrap(),
            Self::Postgres(mut client) => client.batch_execute("COMMIT").unwrap(),
        }
    }
}

/// Each test function, run against both back ends.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[test]
            fn sqlite() {
                super::$name(&super::Target::sqlite());
            }
            #[test]
            fn postgres() {
                if let Some(target) = super::Target::postgres(stringify!($name)) {
                    super::$name(&target);
                }
            }
        })*
    };
}

both!(
    migrations_run_once,
    batches_count_each_attempt_once,
    a_completed_deferred_attempt_replaces_its_deferred_result,
    a_stalled_store_drops_and_counts,
    failures_halt_a_release,
    a_resumed_release_is_judged_on_reports_after_the_resume,
    a_serving_server_picks_up_a_halt,
);

fn outcome(attempt: u64, module: &str, to: &str, result: OutcomeKind) -> StoredOutcome {
    let code = matches!(result, OutcomeKind::Failed | OutcomeKind::RolledBack).then_some(FailureCode::Installer);
    StoredOutcome {
        attempt,
        module: module.into(),
        from: Some("1.0".into()),
        to: to.into(),
        result,
        code,
        channel: Some("beta".into()),
        band: Some(3),
        received_ms: 1_796_119_200_000,
    }
}

fn migrations_run_once(target: &Target) {
    let mut store = target.open();
    assert_eq!(store.migrate().unwrap(), 1, "migrating again changes nothing");
    assert_eq!(store.insert_batch(&[outcome(1, "core", "2.0", OutcomeKind::Applied)]).unwrap(), 1);
    // A second server starting on the same database: the table and its rows stay.
    let mut again = target.open();
    assert_eq!(again.migrate().unwrap(), 1);
    assert_eq!(again.release_counts("core", "2.0").unwrap(), ReleaseCounts { installs: 1, failures: 0, total: 1 });
}

fn batches_count_each_attempt_once(target: &Target) {
    use OutcomeKind::{Applied, Deferred, Failed, RolledBack};
    let mut store = target.open();
    let first = [
        outcome(u64::MAX, "core", "2.0", Applied),
        outcome(2, "core", "2.0", Deferred),
        outcome(3, "core", "2.0", Failed),
        outcome(3, "core", "2.0", Failed),
        outcome(4, "core", "3.0", RolledBack),
        outcome(5, "plugin", "2.0", Applied),
    ];
    assert_eq!(store.insert_batch(&first).unwrap(), 5, "the attempt repeated in the batch is stored once");
    // A retransmission of two attempts, and two new ones.
    let second = [
        outcome(2, "core", "2.0", Deferred),
        outcome(u64::MAX, "core", "2.0", Applied),
        outcome(6, "core", "2.0", RolledBack),
        outcome(7, "core", "2.0", Failed),
    ];
    assert_eq!(store.insert_batch(&second).unwrap(), 2);
    assert_eq!(store.insert_batch(&[]).unwrap(), 0);

    assert_eq!(store.release_counts("core", "2.0").unwrap(), ReleaseCounts { installs: 2, failures: 3, total: 5 });
    assert_eq!(store.release_counts("core", "3.0").unwrap(), ReleaseCounts { installs: 0, failures: 1, total: 1 });
    assert_eq!(store.release_counts("core", "9.9").unwrap(), ReleaseCounts::default());
    // Arrival order of core 2.0: applied, deferred, failed, rolled back, failed.
    assert_eq!(store.recent_failure_share("core", "2.0", 2, 0).unwrap(), RecentShare { reports: 2, failures: 2 });
    assert_eq!(store.recent_failure_share("core", "2.0", 4, 0).unwrap(), RecentShare { reports: 4, failures: 3 });
    assert_eq!(store.recent_failure_share("core", "2.0", 50, 0).unwrap(), RecentShare { reports: 5, failures: 3 });
    assert_eq!(store.recent_failure_share("none", "1.0", 50, 0).unwrap(), RecentShare::default());

    let summary: Vec<(String, String, ReleaseCounts)> =
        store.summary().unwrap().into_iter().map(|s| (s.module, s.version, s.counts)).collect();
    assert_eq!(
        summary,
        vec![
            ("core".into(), "2.0".into(), ReleaseCounts { installs: 2, failures: 3, total: 5 }),
            ("core".into(), "3.0".into(), ReleaseCounts { installs: 0, failures: 1, total: 1 }),
            ("plugin".into(), "2.0".into(), ReleaseCounts { installs: 1, failures: 0, total: 1 }),
        ]
    );
}

fn a_completed_deferred_attempt_replaces_its_deferred_result(target: &Target) {
    use OutcomeKind::{Applied, Deferred, Failed, RolledBack};
    let mut store = target.open();
    let first = [
        outcome(1, "core", "2.0", Deferred),
        outcome(2, "core", "2.0", Deferred),
        outcome(3, "core", "2.0", Applied),
        outcome(4, "core", "2.0", Deferred),
    ];
    assert_eq!(store.insert_batch(&first).unwrap(), 4);
    // Attempt 1 completes, 2 is rolled back at its completion, 3 (applied) is not replaced, 4
    // is deferred and completed within one batch, 5 is new, its deferral and completion in one
    // batch too.
    let second = [
        outcome(1, "core", "2.0", Applied),
        outcome(2, "core", "2.0", RolledBack),
        outcome(3, "core", "2.0", Failed),
        outcome(4, "core", "2.0", Deferred),
        outcome(4, "core", "2.0", Applied),
        outcome(5, "core", "2.0", Deferred),
        outcome(5, "core", "2.0", Applied),
    ];
    assert_eq!(store.insert_batch(&second).unwrap(), 4, "three replaced, one new");
    assert_eq!(store.release_counts("core", "2.0").unwrap(), ReleaseCounts { installs: 4, failures: 1, total: 5 });
    // A late retransmission of the deferred results changes nothing.
    let late = [outcome(1, "core", "2.0", Deferred), outcome(4, "core", "2.0", Deferred)];
    assert_eq!(store.insert_batch(&late).unwrap(), 0);
    assert_eq!(store.release_counts("core", "2.0").unwrap(), ReleaseCounts { installs: 4, failures: 1, total: 5 });
    assert_eq!(store.recent_failure_share("core", "2.0", 50, 0).unwrap(), RecentShare { reports: 5, failures: 1 });
}

fn report(attempt: u64, to: &str, result: OutcomeKind) -> Report<'static> {
    Report {
        channel: None,
        band: Some(1),
        outcomes: vec![Outcome {
            attempt,
            module: "core".into(),
            from: Some("1.0".into()),
            to: to.to_owned().into(),
            result,
            code: (result == OutcomeKind::Failed).then_some(FailureCode::Installer),
        }],
    }
}

fn a_stalled_store_drops_and_counts(target: &Target) {
    let store = target.open();
    let stall = target.stall();
    let options = WriterOptions { queue: 4, batch: 1, linger: Duration::from_millis(1), ..WriterOptions::default() };
    let writer = ReportWriter::start(store, options).unwrap();
    let offered = 100;
    let accepted = (0..offered)
        .filter(|&i| writer.offer(&report(i, "2.0", OutcomeKind::Applied), SystemTime::now()))
        .count() as u64;
    let counters = writer.counters();
    // The writer holds at most the report it is storing, the queue four more.
    assert!(accepted <= 6, "{accepted} of {offered} accepted by a queue of 4 while the store is stalled");
    assert_eq!(WriterCounters::get(&counters.dropped), offered - accepted);
    assert_eq!(WriterCounters::get(&counters.queued), accepted);
    // The store is really stalled: nothing gets through while the lock is held.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(WriterCounters::get(&counters.stored), 0, "stored through a held lock");
    stall.release();
    writer.shutdown();
    assert!(!writer.offer(&report(1000, "2.0", OutcomeKind::Applied), SystemTime::now()), "offered after shutdown");
    assert_eq!(WriterCounters::get(&counters.stored), accepted, "shutdown stores what was queued");
    assert_eq!(WriterCounters::get(&counters.store_errors), 0);
    let mut store = target.open();
    assert_eq!(store.release_counts("core", "2.0").unwrap().installs, accepted);
}

fn run(args: &[&str]) -> String {
    let output = Command::new(BIN).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "upgram-server {args:?}: {text}");
    text
}

fn publish(catalog: &Path, version: &str, scratch: &Path) {
    let from = scratch.join(format!("release-{version}"));
    std::fs::create_dir_all(&from).unwrap();
    std::fs::write(from.join("a.txt"), version).unwrap();
    let catalog = catalog.to_str().unwrap();
    run(&["publish", "--catalog", catalog, "--module", "core", "--version", version, "--from", from.to_str().unwrap()]);
}

fn failures_halt_a_release(target: &Target) {
    let catalog = target.catalog();
    for version in ["1.0", "2.0", "3.0"] {
        publish(&catalog, version, target.dir.path());
    }
    let dir = catalog.to_str().unwrap();
    let text = run(&[
        "rollout",
        "set",
        "--catalog",
        dir,
        "--module",
        "core",
        "--version",
        "2.0",
        "--halt-share",
        "0.3",
        "--halt-window",
        "20",
        "--halt-min",
        "10",
    ]);
    assert!(text.contains("halts at 30% failures over the last 20 reports (from 10 on)"), "{text}");
    run(&["rollout", "pause", "--catalog", dir, "--module", "core", "--version", "3.0"]);

    let options = WriterOptions { catalog: Some(catalog.clone()), ..WriterOptions::default() };
    let writer = ReportWriter::start(target.open(), options).unwrap();
    // 2.0: 12 installs then 8 failures, 40 % of the last 20; 3.0 (paused) fails alike but is
    // not judged.
    let mut attempt = 0;
    for result in std::iter::repeat_n(OutcomeKind::Applied, 12).chain(std::iter::repeat_n(OutcomeKind::Failed, 8)) {
        for to in ["2.0", "3.0"] {
            attempt += 1;
            assert!(writer.offer(&report(attempt, to, result), SystemTime::now()));
        }
    }
    // Bounded wait for the writer to store and judge (the halt needs no shutdown).
    let start = Instant::now();
    while WriterCounters::get(&writer.counters().halts) == 0 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.shutdown();
    assert_eq!(WriterCounters::get(&writer.counters().halts), 1);

    let mut store = target.open();
    let status = rollout::status_with_reports(&catalog, "core", None, 0, store.as_mut()).unwrap();
    let row = |v: &str| status.iter().find(|s| s.version.to_string() == v).unwrap();
    assert_eq!(row("2.0").state, RolloutState::Halted);
    assert_eq!((row("2.0").summary, row("2.0").installs, row("2.0").failures), ("halted", Some(12), Some(8)));
    assert_eq!((row("3.0").summary, row("3.0").failures), ("paused", Some(8)));
    assert_eq!((row("1.0").summary, row("1.0").installs), ("complete", Some(0)));

    let reports = reports_flag(target);
    let text = run(&["rollout", "status", "--catalog", dir, "--module", "core", "--reports", &reports]);
    assert!(
        text.contains("core 2.0: halted, 100% of installations, channels stable, 12 installs, 8 failures reported"),
        "{text}"
    );
    let text = run(&["rollout", "resume", "--catalog", dir, "--module", "core", "--version", "2.0"]);
    assert!(text.contains("core 2.0: complete"), "{text}");
}

/// Waits (bounded) until the writer has stored `n` outcomes and judged their releases.
fn wait_judged(writer: &ReportWriter, n: u64) {
    wait_stored(writer, n);
    // The counts are read after the releases of a batch are judged.
    let start = Instant::now();
    while writer.releases().iter().map(|r| r.counts.total).sum::<u64>() < n && start.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// After `rollout resume`, the failures that halted a release are not judged again: a success
/// reported next leaves it rolling, and only enough failures reported after the resume halt it
/// once more.
fn a_resumed_release_is_judged_on_reports_after_the_resume(target: &Target) {
    let catalog = target.catalog();
    for version in ["1.0", "2.0"] {
        publish(&catalog, version, target.dir.path());
    }
    let dir = catalog.to_str().unwrap();
    let release = ["--catalog", dir, "--module", "core", "--version", "2.0"];
    let mut set = vec!["rollout", "set"];
    set.extend(release);
    set.extend(["--halt-share", "0.5", "--halt-window", "10", "--halt-min", "4"]);
    run(&set);
    let options = WriterOptions {
        catalog: Some(catalog.clone()),
        summary_every: Duration::ZERO,
        linger: Duration::from_millis(1),
        ..WriterOptions::default()
    };
    let writer = ReportWriter::start(target.open(), options).unwrap();
    let state = || rollout::status(&catalog, "core", Some(&"2.0".parse().unwrap()), 0).unwrap()[0].state;
    let mut attempt = 0;
    let mut offer = |result: OutcomeKind, n: u64| {
        for _ in 0..n {
            attempt += 1;
            assert!(writer.offer(&report(attempt, "2.0", result), SystemTime::now()));
            // One at a time, each judged before the next.
            wait_judged(&writer, attempt);
        }
    };
    offer(OutcomeKind::Failed, 4);
    assert_eq!(state(), RolloutState::Halted);

    // The resume is recorded at a whole second; reports received from the next one on count.
    let mut resume = vec!["rollout", "resume"];
    resume.extend(release);
    run(&resume);
    let resumed = SystemTime::now();
    while SystemTime::now().duration_since(resumed).unwrap() < Duration::from_millis(1100) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(state(), RolloutState::Rolling);
    offer(OutcomeKind::Applied, 1);
    assert_eq!(state(), RolloutState::Rolling, "the failures before the resume halted it again");
    offer(OutcomeKind::Failed, 2);
    assert_eq!(state(), RolloutState::Rolling, "3 reports since the resume, fewer than the minimum of 4");
    offer(OutcomeKind::Failed, 1);
    assert_eq!(state(), RolloutState::Halted, "3 failures of the 4 reports since the resume");
    writer.shutdown();
    assert_eq!(WriterCounters::get(&writer.counters().halts), 2);
}

/// `upgram-server serve` on ports the system picks; killed when dropped.
struct Server {
    child: std::process::Child,
    http: std::net::SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metrics(server: &Server) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let response = reqwest::get(format!("http://{}/metrics", server.http)).await.expect("HTTP request");
        response.text().await.unwrap()
    })
}

fn reports_flag(target: &Target) -> String {
    match &target.config {
        ReportsConfig::Postgres(url) => url.clone(),
        other => other.to_string(),
    }
}

fn a_serving_server_picks_up_a_halt(target: &Target) {
    use std::io::BufRead as _;
    let catalog = target.catalog();
    for version in ["1.0", "2.0"] {
        publish(&catalog, version, target.dir.path());
    }
    let key = target.dir.path().join("server.key");
    run(&["keygen", "--out", key.to_str().unwrap()]);
    let reports = reports_flag(target);
    let mut child = Command::new(BIN)
        .args(["serve", "--catalog", catalog.to_str().unwrap(), "--key", key.to_str().unwrap()])
        .args(["--udp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--public-url", "http://{http}/"])
        .args(["--reports", &reports])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let http = line.split_whitespace().nth(1).unwrap().trim_start_matches("http=").parse().unwrap();
    let server = Server { child, http };
    let labels = "module=\"core\",version=\"2.0\",channels=\"stable\"";
    let text = metrics(&server);
    assert!(text.contains(&format!("upgram_release_state{{{labels},state=\"complete\"}} 1")), "{text}");

    // Another writer on the same store (as another instance would be) judges 2.0 by the
    // default rule: 20 failures of 20 reports.
    let options = WriterOptions { catalog: Some(catalog.clone()), ..WriterOptions::default() };
    let writer = ReportWriter::start(target.open(), options).unwrap();
    for attempt in 0..20 {
        assert!(writer.offer(&report(attempt, "2.0", OutcomeKind::Failed), SystemTime::now()));
    }
    writer.shutdown();
    assert_eq!(WriterCounters::get(&writer.counters().halts), 1);

    // The server reloads the changed catalog by itself and reads the counts again.
    let wanted = [
        format!("upgram_release_state{{{labels},state=\"halted\"}} 1"),
        format!("upgram_release_failures{{{labels}}} 20"),
        format!("upgram_release_installs{{{labels}}} 0"),
        "upgram_reports_outcomes_total{outcome=\"dropped\"} 0".to_owned(),
    ];
    let start = Instant::now();
    let mut text = metrics(&server);
    while !wanted.iter().all(|w| text.contains(w.as_str())) && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
        text = metrics(&server);
    }
    for wanted in &wanted {
        assert!(text.contains(wanted.as_str()), "{wanted} missing: {text}");
    }
}

/// Waits (bounded) until the writer stored `n` outcomes.
fn wait_stored(writer: &ReportWriter, n: u64) {
    let start = Instant::now();
    while WriterCounters::get(&writer.counters().stored) < n && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(WriterCounters::get(&writer.counters().stored), n);
}

#[test]
fn the_writer_connects_again_after_postgres_drops_it() {
    let Some(target) = Target::postgres("the_writer_connects_again_after_postgres_drops_it") else { return };
    let ReportsConfig::Postgres(url) = &target.config else { unreachable!() };
    let writer = ReportWriter::start(target.open(), WriterOptions::default()).unwrap();
    assert!(writer.offer(&report(1, "2.0", OutcomeKind::Applied), SystemTime::now()));
    wait_stored(&writer, 1);
    let mut admin = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let ended = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap();
    assert_eq!(ended.len(), 1, "the writer's connection");
    assert!(writer.offer(&report(2, "2.0", OutcomeKind::Failed), SystemTime::now()));
    wait_stored(&writer, 2);
    writer.shutdown();
    assert_eq!(WriterCounters::get(&writer.counters().lost), 0);
    assert_eq!(
        target.open().release_counts("core", "2.0").unwrap(),
        ReleaseCounts { installs: 1, failures: 1, total: 2 }
    );
}

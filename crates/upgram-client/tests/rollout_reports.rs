//! Phased rollouts steered by install reports, end to end: the real publisher, the real server
//! over UDP and HTTP on 127.0.0.1 with the real report writer behind it (SQLite in a temporary
//! file, and PostgreSQL when `UPGRAM_TEST_POSTGRES` names a server), and 200 installations in
//! temporary folders changed through the library API.
//!
//! Release 2.0 rolls out to 10 %, 50 % and 100 %: at each step exactly the installations whose
//! bucket is below the percentage upgrade, and the store counts their `applied` reports.
//! Release 3.0, whose installer fails on installations with an even bucket, rolls out to 10 %
//! and then 50 %: it halts itself on the failure reports before half of the installations got
//! it, after which no installation upgrades to it; withdrawing it brings the installations on it
//! back to 2.0 byte for byte. And `upgram-server serve` stores what the `upgram` command
//! reports in the SQLite file beside its catalog, and halts a failing release while it runs.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::rollout::{
    Files, MODULE, Release, Served, Site, V1, expected, in_parallel, installed_files, now, publish_release,
    serve_releases, serve_reporting, update_all,
};
use common::{binaries, client_runtime};
use upgram_client::flows::Outcome as FlowOutcome;
use upgram_server::catalog::{HaltRule, RolloutStep};
use upgram_server::reports::{ReleaseCounts, ReportStore, ReportWriter, ReportsConfig, WriterCounters, WriterOptions};
use upgram_server::rollout::{self, Change};

const POSTGRES_VAR: &str = "UPGRAM_TEST_POSTGRES";

// `plugin.dll` is critical (SPEC.md §5.3): an upgrade to or from a release that changes it is
// done by the release's install package.
const V2: Files = &[
    ("keep.txt", b"kept by every release"),
    ("change.txt", b"two"),
    ("added.txt", b"new in 2.0"),
    ("new/deep/added.txt", b"also new in 2.0"),
    ("plugin.dll", b"plugin 2"),
];
const V3: Files = &[("keep.txt", b"kept by every release"), ("change.txt", b"three"), ("plugin.dll", b"plugin 3")];

/// The install package of a release of `files`: a shell script run in the installation's root
/// that writes them and removes the files of the other releases; with `fail_even`, it first
/// reads the installation's bucket from its state file and exits 1 when it is even.
fn installer(files: Files, fail_even: bool) -> String {
    let mut script = String::from("#!/bin/sh\nset -e\n");
    if fail_even {
        script.push_str(concat!(
            "bucket=$(sed -n 's/^ *\"bucket\": *\\([0-9]*\\).*/\\1/p' .upgram/state.json)\n",
            "[ -n \"$bucket\" ] || { echo 'no bucket in the state file' >&2; exit 2; }\n",
            "case \"$bucket\" in *[02468]) echo \"this installer fails on bucket $bucket\" >&2; exit 1;; esac\n",
        ));
    }
    for release in [V1, V2, V3] {
        for (id, _) in release {
            if !files.iter().any(|(other, _)| other == id) {
                script.push_str(&format!("rm -f '{id}'\n"));
            }
        }
    }
    for (id, content) in files {
        if let Some((dir, _)) = id.rsplit_once('/') {
            script.push_str(&format!("mkdir -p '{dir}'\n"));
        }
        let text = std::str::from_utf8(content).unwrap();
        assert!(!text.contains('\''), "the script quotes contents in single quotes");
        script.push_str(&format!("printf '%s' '{text}' > '{id}'\n"));
    }
    script
}

/// A report store to run against: the `--reports` value and, for PostgreSQL, the database made
/// for this run.
struct Target {
    name: &'static str,
    config: ReportsConfig,
    _dir: tempfile::TempDir,
}

impl Target {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self { name: "SQLite", config: ReportsConfig::Sqlite(dir.path().join("reports.sqlite")), _dir: dir }
    }

    /// A fresh database on the server `UPGRAM_TEST_POSTGRES` names, or `None` (loudly) without
    /// one; a failure when `CI` is set.
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
        let name = format!("upgram_e2e_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let mut url = url::Url::parse(&base).unwrap();
        url.set_path(&name);
        Some(Self {
            name: "PostgreSQL",
            config: ReportsConfig::Postgres(url.to_string()),
            _dir: tempfile::tempdir().unwrap(),
        })
    }

    fn open(&self, catalog: &Path) -> Box<dyn ReportStore> {
        self.config.open(catalog).unwrap().unwrap()
    }
}

/// The server with the report writer of `target` as its sink; the writer halts the releases
/// of the catalog served.
struct Reporting {
    served: Served,
    writer: Arc<ReportWriter>,
    store: Box<dyn ReportStore>,
}

impl Reporting {
    fn start(target: &Target, dir: tempfile::TempDir, catalog: &Path) -> Self {
        let options = WriterOptions {
            catalog: Some(catalog.to_owned()),
            linger: Duration::from_millis(2),
            // Counts read after every batch: the test waits for them (see `settle`).
            summary_every: Duration::ZERO,
            ..WriterOptions::default()
        };
        let writer = Arc::new(ReportWriter::start(target.open(catalog), options).unwrap());
        let served = serve_reporting(dir, catalog, Some(writer.clone()));
        Self { served, writer, store: target.open(catalog) }
    }

    /// Waits until the writer has stored every outcome the server accepted and judged the
    /// releases they count for (it reads the counts after judging), then loads the catalog
    /// again, as `serve` does when a halt changes its files.
    fn settle(&self) {
        let counters = self.writer.counters();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let queued = WriterCounters::get(&counters.queued);
            let stored = WriterCounters::get(&counters.stored);
            let done = stored + WriterCounters::get(&counters.duplicates) + WriterCounters::get(&counters.lost);
            let summed: u64 = self.writer.releases().iter().map(|r| r.counts.total).sum();
            if done == queued && summed == stored {
                break;
            }
            assert!(Instant::now() < deadline, "the writer did not catch up in 20 s: {counters:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(WriterCounters::get(&counters.lost), 0, "no outcome lost");
        assert_eq!(WriterCounters::get(&counters.dropped), 0, "no outcome dropped");
        self.served.reload();
    }

    fn counts(&mut self, version: &str) -> ReleaseCounts {
        self.store.release_counts(MODULE, version).unwrap()
    }

    fn summary(&self, version: &str) -> &'static str {
        rollout::status(&self.served.catalog, MODULE, Some(&version.parse().unwrap()), now()).unwrap()[0].summary
    }
}

/// What one phase took, for the closing note.
struct Phases(Vec<(&'static str, Duration)>, Instant);

impl Phases {
    fn new() -> Self {
        Self(Vec::new(), Instant::now())
    }

    fn done(&mut self, phase: &'static str) {
        self.0.push((phase, self.1.elapsed()));
        self.1 = Instant::now();
    }
}

fn rollout_halts_and_withdraws(target: &Target) {
    let started = Instant::now();
    let mut phases = Phases::new();
    let (work, catalog_dir, mut reporting) =
        serve_releases(V1, &[], |dir, catalog| Reporting::start(target, dir, catalog));
    let runtime = client_runtime();
    let client = reporting.served.client(None);
    let roots: Vec<_> = (0..200).map(|i| work.path().join(format!("site-{i:03}"))).collect();
    let sites = in_parallel(&roots, |root| Site::install(&runtime, &client, root.clone()));
    for site in &sites {
        assert_eq!(installed_files(&site.root), expected(V1));
    }
    reporting.settle();
    assert_eq!(reporting.counts("1.0"), ReleaseCounts { installs: 200, failures: 0, total: 200 });
    phases.done("200 installs of 1.0");
    let below = |percent: u8| sites.iter().filter(|s| s.bucket < percent).count() as u64;
    assert!(below(10) > 0 && below(50) > below(10) && below(50) < 200, "buckets spread over 0-99");

    // 2.0: 10 % -> 50 % -> 100 %, exactly the buckets below each, every upgrade reported.
    let two = Release { percent: Some(10), package: Some(installer(V2, false)), ..Release::new("2.0", V2) };
    publish_release(&catalog_dir, work.path(), &two);
    reporting.served.reload();
    for percent in [10, 50, 100] {
        if percent > 10 {
            reporting.served.change("2.0", Change::Schedule(vec![RolloutStep { at: None, percent }]));
        }
        let client = reporting.served.client(None);
        let upgraded = update_all(&runtime, &client, &sites, |b| b < percent, ("2.0", V2), ("1.0", V1));
        assert_eq!(upgraded as u64, below(percent), "at {percent} %");
        reporting.settle();
        let counts = reporting.counts("2.0");
        assert_eq!(counts, ReleaseCounts { installs: below(percent), failures: 0, total: below(percent) });
    }
    assert_eq!(reporting.summary("2.0"), "complete");
    phases.done("2.0 at 10% -> 50% -> 100%");

    // 3.0, whose installer fails on even buckets, judged from 10 reports more than the 10 %
    // step gives it: it halts during the 50 % step.
    let three = Release { percent: Some(10), package: Some(installer(V3, true)), ..Release::new("3.0", V3) };
    publish_release(&catalog_dir, work.path(), &three);
    let min = below(10) as u32 + 10;
    assert!(min <= 50, "{} installations in buckets 0-9", below(10));
    let rule = HaltRule { share_permille: 200, window: 50, min };
    reporting.served.change("3.0", Change::HaltRule(rule));
    let client = reporting.served.client(None);
    let (mut on_three, mut failures) = (0u64, 0u64);
    let results = in_parallel(&sites, |site| site.update_with_outcomes(&runtime, &client));
    for (site, (version, outcomes)) in sites.iter().zip(&results) {
        let failed = outcomes.iter().any(|o| matches!(o.outcome, FlowOutcome::Failed(_)));
        let (want, files) = match (site.bucket < 10, site.bucket % 2 == 0) {
            (true, false) => ("3.0", V3),
            _ => ("2.0", V2),
        };
        assert_eq!(version, want, "bucket {}", site.bucket);
        assert_eq!(installed_files(&site.root), expected(files), "bucket {}", site.bucket);
        assert_eq!(failed, site.bucket < 10 && site.bucket % 2 == 0, "bucket {}: {outcomes:?}", site.bucket);
        on_three += u64::from(version == "3.0");
        failures += u64::from(failed);
    }
    reporting.settle();
    assert_eq!(reporting.summary("3.0"), "rolling", "fewer reports than the rule's minimum");
    assert_eq!(reporting.counts("3.0"), ReleaseCounts { installs: on_three, failures, total: on_three + failures });
    phases.done("3.0 at 10%");

    // 50 %: the installations check one after the other, by bucket; the server halts 3.0 as
    // soon as its reports trip the rule, and from then on none upgrades to it.
    reporting.served.change("3.0", Change::Schedule(vec![RolloutStep { at: None, percent: 50 }]));
    let client = reporting.served.client(None);
    let mut order: Vec<&Site> = sites.iter().collect();
    order.sort_by_key(|s| s.bucket);
    let mut halted_after = None;
    for (i, site) in order.iter().enumerate() {
        let before = installed_files(&site.root);
        let (version, outcomes) = site.update_with_outcomes(&runtime, &client);
        let failed = outcomes.iter().any(|o| matches!(o.outcome, FlowOutcome::Failed(_)));
        if halted_after.is_some() {
            assert!(outcomes.is_empty(), "bucket {}: upgraded after the halt: {outcomes:?}", site.bucket);
            assert_eq!(installed_files(&site.root), before, "bucket {}", site.bucket);
            continue;
        }
        let offered = site.bucket < 50;
        let fails = offered && site.bucket % 2 == 0;
        // Upgraded now, or on 3.0 since the 10 % step.
        let want = if (offered && !fails) || before == expected(V3) { ("3.0", V3) } else { ("2.0", V2) };
        assert_eq!(version, want.0, "bucket {}", site.bucket);
        assert_eq!(installed_files(&site.root), expected(want.1), "bucket {}", site.bucket);
        assert_eq!(failed, fails, "bucket {}: {outcomes:?}", site.bucket);
        on_three += u64::from(version == "3.0" && before != expected(V3));
        failures += u64::from(failed);
        reporting.settle();
        if reporting.summary("3.0") == "halted" {
            halted_after = Some(i);
        }
    }
    let halted_after = halted_after.expect("3.0 halted itself");
    let on_three_now = sites.iter().filter(|s| installed_files(&s.root) == expected(V3)).count() as u64;
    assert_eq!(on_three_now, on_three);
    assert!(on_three < below(50), "halted before half of the installations got it");
    assert!(
        order[halted_after + 1..].iter().any(|s| s.bucket < 50),
        "halted before the 50 % step reached every installation it offers 3.0 to"
    );
    let counts = reporting.counts("3.0");
    assert_eq!(counts, ReleaseCounts { installs: on_three, failures, total: on_three + failures });
    let mut store = target.open(&catalog_dir);
    let status = rollout::status_with_reports(&catalog_dir, MODULE, None, now(), store.as_mut()).unwrap();
    let three_status = &status[2];
    assert_eq!(three_status.summary, "halted");
    assert_eq!((three_status.installs, three_status.failures), (Some(on_three), Some(failures)));
    phases.done("3.0 at 50% until halted");

    // Withdrawn: the installations on 3.0 go back to 2.0, byte for byte, the others stay.
    reporting.served.change("3.0", Change::Withdraw);
    let client = reporting.served.client(None);
    let back = update_all(&runtime, &client, &sites, |_| true, ("2.0", V2), ("3.0", V3));
    assert_eq!(back, sites.len());
    reporting.settle();
    assert_eq!(reporting.summary("3.0"), "withdrawn");
    assert_eq!(reporting.counts("2.0").installs, 200 + on_three, "the way back is reported too");
    phases.done("3.0 withdrawn");

    let metrics = reporting.served.server.shared.metrics();
    let halts = WriterCounters::get(&reporting.writer.counters().halts);
    assert_eq!(halts, 1);
    reporting.writer.shutdown();
    let timings: Vec<String> = phases.0.iter().map(|(phase, took)| format!("{phase}: {took:.2?}")).collect();
    eprintln!(
        "{}: 200 installations; {}; total {:.2?}; 3.0 halted after {} installs and {} failures; {} report datagrams, {} stored outcomes",
        target.name,
        timings.join("; "),
        started.elapsed(),
        on_three,
        failures,
        metrics.reports,
        WriterCounters::get(&reporting.writer.counters().stored),
    );
}

#[test]
fn a_failing_release_halts_itself_and_is_withdrawn_with_sqlite() {
    rollout_halts_and_withdraws(&Target::sqlite());
}

#[test]
fn a_failing_release_halts_itself_and_is_withdrawn_with_postgres() {
    if let Some(target) = Target::postgres("a_failing_release_halts_itself_and_is_withdrawn_with_postgres") {
        rollout_halts_and_withdraws(&target);
    }
}

/// Polls `done` every 100 ms for at most 30 s.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `upgram-server serve` with its default `--reports` stores what the `upgram` command reports
/// in `reports.sqlite` beside the catalog, and halts a release whose installer fails while it
/// runs: no restart, the catalog change is picked up like any other.
#[test]
fn serve_stores_reports_beside_its_catalog_and_halts_a_failing_release() {
    let work = tempfile::tempdir().unwrap();
    let catalog = work.path().join("catalog");
    let catalog_str = catalog.to_str().unwrap();
    binaries::publish(work.path(), MODULE, "1.0", V1, &[]);
    let server = binaries::serve_with_new_key(work.path(), &catalog);
    let root = work.path().join("site");
    std::fs::create_dir_all(&root).unwrap();
    let root_str = root.to_str().unwrap().to_owned();
    let upgram = |command: &[&str]| {
        let mut args = command.to_vec();
        args.extend(binaries::server_args(&server, &root_str));
        binaries::upgram(&args)
    };
    let (code, out, err) = upgram(&["install", MODULE]);
    assert_eq!(code, 0, "{out}{err}");
    let mut store = ReportsConfig::Beside.open(&catalog).unwrap().expect("the default store");
    let mut counts = |version: &str| store.release_counts(MODULE, version).unwrap();
    wait_for("the install's report stored", || counts("1.0").installs == 1);

    binaries::publish(work.path(), MODULE, "2.0", &V2[..4], &[]);
    wait_for("the upgrade to 2.0", || {
        upgram(&["update", "--yes"]);
        installed_files(&root) == expected(&V2[..4])
    });
    wait_for("the upgrade's report stored", || counts("2.0") == ReleaseCounts { installs: 1, failures: 0, total: 1 });

    // 3.0: its package always fails, and one failure in one report halts it.
    let package = work.path().join("install-3.0.sh");
    std::fs::write(&package, "#!/bin/sh\necho 'this installer always fails' >&2\nexit 1\n").unwrap();
    binaries::publish(work.path(), MODULE, "3.0", V3, &["--package", package.to_str().unwrap()]);
    let rule = ["--halt-share", "0.5", "--halt-window", "1", "--halt-min", "1"];
    let mut args = vec!["rollout", "set", "--catalog", catalog_str, "--module", MODULE, "--version", "3.0"];
    args.extend(rule);
    binaries::run_server(&args);
    wait_for("a failed attempt of 3.0 stored", || {
        upgram(&["update", "--yes"]);
        counts("3.0").failures > 0
    });
    assert_eq!(installed_files(&root), expected(&V2[..4]), "the failed attempt changed nothing");
    let status = ["rollout", "status", "--catalog", catalog_str, "--module", MODULE, "--version", "3.0"];
    wait_for("3.0 halted", || binaries::run_server(&status).contains("halted"));
    let three = counts("3.0");
    assert_eq!((three.installs, three.failures), (0, three.total), "only failures of 3.0: {three:?}");
}

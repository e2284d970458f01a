//! Install reports end to end (SPEC.md §5.11): the real publisher, the real server over UDP and
//! HTTP on 127.0.0.1 with a bounded in-memory report sink, and installations in temporary
//! folders changed through the library API. A real upgrade is reported `applied` with its
//! versions, channel and band; a failing installer is reported with its code; a report the
//! server does not acknowledge stays in the state and goes with the next check; an upgrade
//! deferred while its file is in use is reported `deferred`, then `applied` under the same
//! attempt once it completes; the queue is bounded; reports can be turned off.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{TestServer, client_runtime, dead_udp_address, public_key, start_server_reporting};
use upgram_client::apply::defer::PendingOutcome;
use upgram_client::flows::{self, Optional, Outcome as FlowOutcome};
use upgram_client::hooks::Hooks;
use upgram_client::state::{InstalledState, MAX_QUEUED_REPORTS};
use upgram_client::{Client, Installation};
use upgram_core::body::{FailureCode, Outcome, OutcomeKind};
use upgram_server::catalog;
use upgram_server::intake::ReportCollector;
use upgram_server::publish::{PublishRequest, publish};

const MODULE: &str = "app";

struct Site {
    _work: tempfile::TempDir,
    catalog: PathBuf,
    work: PathBuf,
    server: TestServer,
    sink: Arc<ReportCollector>,
    root: PathBuf,
}

impl Site {
    /// A catalog with `app` 1.0 served with a sink of `capacity` reports, and an installation
    /// of it on channel beta.
    fn new(capacity: usize) -> Site {
        Self::with_installer(capacity, None)
    }

    /// [`Site::new`], 1.0 installed by the install package `installer` when given.
    fn with_installer(capacity: usize, installer: Option<&str>) -> Site {
        let work = tempfile::tempdir().unwrap();
        let catalog_dir = tempfile::tempdir().unwrap();
        let catalog = catalog_dir.path().to_owned();
        let path = work.path().to_owned();
        publish_version(&catalog, &path, "1.0", installer);
        let sink = Arc::new(ReportCollector::new(capacity));
        let loaded = catalog::load(&catalog).unwrap();
        let server = start_server_reporting(catalog_dir, loaded, |_| {}, Some(sink.clone()));
        let root = path.join("root");
        std::fs::create_dir_all(&root).unwrap();
        Site { _work: work, catalog, work: path, server, sink, root }
    }

    fn publish(&self, version: &str, installer: Option<&str>) {
        publish_version(&self.catalog, &self.work, version, installer);
        self.server.shared.replace_catalog(catalog::load(&self.catalog).unwrap());
    }

    fn client(&self, reports: bool) -> Client {
        Client::builder()
            .server(self.server.udp)
            .public_key(public_key())
            .channel("beta")
            .deadline(Duration::from_secs(10))
            .first_timeout(Duration::from_millis(200))
            .reports(reports)
            .build()
            .unwrap()
    }

    fn state(&self) -> InstalledState {
        Installation::open_read_only(&self.root).unwrap().state()
    }
}

/// Publishes `app` `version` on channel beta: one file, and an install package running
/// `installer` when given (then the file is a critical `.dll`, which only the package may
/// change).
fn publish_version(catalog: &Path, work: &Path, version: &str, installer: Option<&str>) {
    let from = work.join(format!("release-{version}"));
    std::fs::create_dir_all(&from).unwrap();
    let file = if installer.is_some() { "app.dll" } else { "app.txt" };
    std::fs::write(from.join(file), format!("app {version}")).unwrap();
    let package = installer.map(|script| {
        let path = work.join(format!("install-{version}.sh"));
        std::fs::write(&path, script).unwrap();
        path
    });
    let request = PublishRequest {
        package,
        channels: vec!["beta".into()],
        ..PublishRequest::new(catalog, MODULE, version.parse().unwrap(), from)
    };
    publish(&request).unwrap();
}

fn install(runtime: &tokio::runtime::Runtime, client: &Client, root: &Path) {
    let installation = Installation::open_locked(root).unwrap();
    runtime.block_on(flows::install(&installation, client, &[MODULE.to_owned()], false, &Hooks::default())).unwrap();
}

fn update(runtime: &tokio::runtime::Runtime, client: &Client, root: &Path) -> Vec<flows::ModuleOutcome> {
    let installation = Installation::open_locked(root).unwrap();
    runtime.block_on(flows::update(&installation, client, Optional::Take, false, &Hooks::default())).unwrap().outcomes
}

/// Every outcome the sink received, with the channel and band of its report.
fn received(sink: &ReportCollector) -> Vec<(Option<String>, Option<u8>, Outcome<'static>)> {
    sink.drain()
        .into_iter()
        .flat_map(|r| {
            let (channel, band) = (r.report.channel.map(|c| c.into_owned()), r.report.band);
            r.report.outcomes.into_iter().map(move |o| (channel.clone(), band, o))
        })
        .collect()
}

#[test]
fn a_real_upgrade_is_reported_applied_with_its_versions_channel_and_band() {
    let site = Site::new(100);
    let runtime = client_runtime();
    let client = site.client(true);
    install(&runtime, &client, &site.root);
    site.publish("2.0", None);
    update(&runtime, &client, &site.root);
    let state = site.state();
    assert_eq!(state.modules[MODULE].version, "2.0");
    assert!(state.reports.is_empty(), "acknowledged reports leave the queue: {:?}", state.reports);
    let band = state.bucket.map(|b| b / 10);
    let outcomes = received(&site.sink);
    let summary: Vec<(Option<&str>, &str, OutcomeKind)> =
        outcomes.iter().map(|(_, _, o)| (o.from.as_deref(), &*o.to, o.result)).collect();
    assert_eq!(summary, [(None, "1.0", OutcomeKind::Applied), (Some("1.0"), "2.0", OutcomeKind::Applied)]);
    for (channel, report_band, outcome) in &outcomes {
        assert_eq!(channel.as_deref(), Some("beta"));
        assert_eq!(*report_band, band);
        assert_eq!(outcome.module, MODULE);
        assert_eq!(outcome.code, None);
    }
    assert_ne!(outcomes[0].2.attempt, outcomes[1].2.attempt, "a fresh attempt id per attempt");
    assert_eq!(site.server.shared.metrics().outcomes, [2, 0, 0, 0]);
}

#[test]
fn a_failing_installer_is_reported_failed_with_its_code() {
    let site = Site::with_installer(100, Some("#!/bin/sh\necho 'app 1.0' > app.dll\nexit 0\n"));
    let runtime = client_runtime();
    let client = site.client(true);
    install(&runtime, &client, &site.root);
    site.sink.drain();
    site.publish("2.0", Some("#!/bin/sh\necho 'installer refuses' >&2\nexit 1\n"));
    let outcomes = update(&runtime, &client, &site.root);
    assert!(matches!(outcomes[0].outcome, FlowOutcome::Failed(_)), "{outcomes:?}");
    assert_eq!(site.state().modules[MODULE].version, "1.0");
    let received = received(&site.sink);
    assert_eq!(received.len(), 1, "{received:?}");
    let outcome = &received[0].2;
    assert_eq!((outcome.from.as_deref(), &*outcome.to), (Some("1.0"), "2.0"));
    assert_eq!((outcome.result, outcome.code), (OutcomeKind::Failed, Some(FailureCode::Installer)));
    assert!(site.state().reports.is_empty());
}

#[test]
fn an_unacknowledged_report_stays_queued_and_goes_with_the_next_check() {
    // Room for one report: the install's. The update's finds the store full and gets no
    // acknowledgement, as when the server is away.
    let site = Site::new(1);
    let runtime = client_runtime();
    let client = site.client(true);
    install(&runtime, &client, &site.root);
    site.publish("2.0", None);
    update(&runtime, &client, &site.root);
    let queued = site.state().reports;
    assert_eq!(queued.len(), 1, "kept in the state file: {queued:?}");
    assert_eq!((queued[0].from.as_deref(), &*queued[0].to), (Some("1.0"), "2.0"));
    assert_eq!(received(&site.sink).len(), 1, "only the install's report was taken");

    // The server itself away: the queue survives a check that fails.
    let away = Client::builder()
        .server(dead_udp_address())
        .public_key(public_key())
        .deadline(Duration::from_secs(2))
        .first_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let installation = Installation::open_locked(&site.root).unwrap();
    assert!(runtime.block_on(flows::check(&installation, &away)).is_err());
    let started = Instant::now();
    assert!(runtime.block_on(away.send_reports(&installation.state())).is_empty());
    // Not a timing assertion on the server: the sends are bounded (3 × 500 ms at most).
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(installation);
    assert_eq!(site.state().reports, queued);

    // The next check, with the server taking reports again, delivers it once.
    let installation = Installation::open_locked(&site.root).unwrap();
    runtime.block_on(flows::check(&installation, &client)).unwrap();
    drop(installation);
    assert!(site.state().reports.is_empty());
    let delivered = received(&site.sink);
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].2, queued[0]);
}

/// Installs `app` 1.0, publishes 2.0 and updates while the program holds `app.txt` (a shared
/// advisory lock, as a running program's): the upgrade is deferred, and reported so. Returns
/// the site, the client and the attempt of the `deferred` report.
fn deferred_upgrade(runtime: &tokio::runtime::Runtime) -> (Site, Client, u64) {
    let site = Site::new(100);
    let client = site.client(true);
    install(runtime, &client, &site.root);
    site.sink.drain();
    site.publish("2.0", None);
    let held = std::fs::File::open(site.root.join("app.txt")).unwrap();
    held.lock_shared().unwrap();
    let outcomes = update(runtime, &client, &site.root);
    assert!(matches!(outcomes[0].outcome, FlowOutcome::Deferred { .. }), "{outcomes:?}");
    // Asked again while the file is still held: reported again, under the same attempt.
    let outcomes = update(runtime, &client, &site.root);
    assert!(matches!(outcomes[0].outcome, FlowOutcome::Deferred { .. }), "{outcomes:?}");
    drop(held);
    // The server hands an attempt's `deferred` result over once.
    let received = received(&site.sink);
    assert_eq!(received.len(), 1, "{received:?}");
    let outcome = &received[0].2;
    assert_eq!((outcome.from.as_deref(), &*outcome.to, outcome.result), (Some("1.0"), "2.0", OutcomeKind::Deferred));
    assert_eq!(site.state().pending[MODULE].attempt, Some(outcome.attempt), "the pending upgrade keeps its attempt");
    assert!(site.state().reports.is_empty());
    let attempt = outcome.attempt;
    (site, client, attempt)
}

#[test]
fn a_deferred_upgrade_completed_by_apply_pending_is_reported_applied_under_its_attempt() {
    let runtime = client_runtime();
    let (site, client, attempt) = deferred_upgrade(&runtime);
    // The program has exited: its launcher completes the pending upgrade, with no server.
    let installation = Installation::open_locked(&site.root).unwrap();
    let completed = runtime.block_on(flows::apply_pending(&installation, None, &Hooks::default())).unwrap();
    drop(installation);
    assert!(matches!(&completed[..], [PendingOutcome::Applied { version, .. }] if version == "2.0"), "{completed:?}");
    let queued = site.state().reports;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(
        (queued[0].attempt, queued[0].from.as_deref(), &*queued[0].to, queued[0].result),
        (attempt, Some("1.0"), "2.0", OutcomeKind::Applied)
    );
    // The next check sends it.
    let installation = Installation::open_locked(&site.root).unwrap();
    runtime.block_on(flows::check(&installation, &client)).unwrap();
    drop(installation);
    let delivered = received(&site.sink);
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0].2, queued[0]);
    assert!(site.state().reports.is_empty());
}

#[test]
fn a_deferred_upgrade_completed_by_the_next_update_is_reported_applied_under_its_attempt() {
    let runtime = client_runtime();
    let (site, client, attempt) = deferred_upgrade(&runtime);
    let outcomes = update(&runtime, &client, &site.root);
    assert!(matches!(&outcomes[0].outcome, FlowOutcome::Upgraded(_, to) if to == "2.0"), "{outcomes:?}");
    let delivered = received(&site.sink);
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let outcome = &delivered[0].2;
    assert_eq!((outcome.attempt, outcome.result), (attempt, OutcomeKind::Applied));
    assert!(site.state().pending.is_empty());
}

#[test]
fn the_queue_is_bounded_and_persisted_oldest_dropped_first() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("state.json");
    let mut state = InstalledState::default();
    for attempt in 0..(MAX_QUEUED_REPORTS as u64 + 10) {
        state.queue_report(Outcome {
            attempt,
            module: MODULE.into(),
            from: Some("1.0".into()),
            to: "2.0".into(),
            result: OutcomeKind::RolledBack,
            code: Some(FailureCode::Apply),
        });
    }
    state.save(&path).unwrap();
    let loaded = InstalledState::load(&path).unwrap();
    let attempts: Vec<u64> = loaded.reports.iter().map(|o| o.attempt).collect();
    assert_eq!(attempts, (10..MAX_QUEUED_REPORTS as u64 + 10).collect::<Vec<_>>());
    assert_eq!(loaded.reports[0].code, Some(FailureCode::Apply));
}

#[test]
fn with_reports_off_nothing_is_queued_or_sent() {
    let site = Site::new(100);
    let runtime = client_runtime();
    let client = site.client(false);
    install(&runtime, &client, &site.root);
    site.publish("2.0", None);
    update(&runtime, &client, &site.root);
    assert_eq!(site.state().modules[MODULE].version, "2.0");
    assert!(site.state().reports.is_empty());
    assert!(site.sink.is_empty());
    assert_eq!(site.server.shared.metrics().reports, 0);
}

//! The report writer: UDP workers [`offer`](ReportWriter::offer) reports to a bounded queue
//! without ever waiting; one thread drains it in batches into the [`ReportStore`], and after
//! each batch halts the rolling releases that got reports and whose failure share passed their
//! [`HaltRule`](crate::catalog::HaltRule), through the same catalog change as `rollout pause`
//! (a serving server picks it up like any catalog change).
//!
//! When the store falls behind the queue fills and further reports are dropped and counted. A
//! store error is logged and counted; the batch is tried once more (PostgreSQL connects again)
//! and then given up; the writer goes on. [`ReportWriter::shutdown`] stores what is queued.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use upgram_core::body::report::Report;
use upgram_core::version::Version;

use super::{ReleaseSummary, ReportStore, StoredOutcome};
use crate::catalog::{self, RolloutState};
use crate::metrics::bump;
use crate::rollout::{self, Change};

/// How the writer batches, and where it halts releases.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Reports the queue holds; more are dropped until the writer catches up.
    pub queue: usize,
    /// Outcomes stored per batch at most (a report's outcomes stay together).
    pub batch: usize,
    /// How long the writer waits to fill a batch once it has an outcome.
    pub linger: Duration,
    /// The catalog folder whose rolling releases halt on failure reports; `None`: none halts.
    pub catalog: Option<PathBuf>,
    /// How often the per-release counts shown by `/metrics` are read again from the store.
    pub summary_every: Duration,
}

impl Default for WriterOptions {
    /// 4096 reports queued, batches of up to 256 outcomes or 50 ms, counts read every second.
    fn default() -> Self {
        Self {
            queue: 4096,
            batch: 256,
            linger: Duration::from_millis(50),
            catalog: None,
            summary_every: Duration::from_secs(1),
        }
    }
}

/// What the writer counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct WriterCounters {
    /// Outcomes accepted into the queue.
    pub queued: AtomicU64,
    /// Outcomes stored (new attempts).
    pub stored: AtomicU64,
    /// Outcomes of attempts already stored (retransmissions), skipped.
    pub duplicates: AtomicU64,
    /// Outcomes dropped because the queue was full (or the writer stopped).
    pub dropped: AtomicU64,
    /// Batches written.
    pub batches: AtomicU64,
    /// Store operations that failed.
    pub store_errors: AtomicU64,
    /// Outcomes given up after their batch failed twice.
    pub lost: AtomicU64,
    /// Releases halted by their failure reports.
    pub halts: AtomicU64,
}

impl WriterCounters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The value of one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The bounded queue and the thread that stores its reports.
#[derive(Debug)]
pub struct ReportWriter {
    sender: SyncSender<Vec<StoredOutcome>>,
    counters: Arc<WriterCounters>,
    releases: Arc<Mutex<Vec<ReleaseSummary>>>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ReportWriter {
    /// Starts the writer thread over `store` (already migrated).
    pub fn start(store: Box<dyn ReportStore>, options: WriterOptions) -> std::io::Result<Self> {
        let (sender, receiver) = sync_channel(options.queue.max(1));
        let counters = Arc::new(WriterCounters::default());
        let releases = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut worker = Worker {
            store,
            receiver,
            options,
            counters: counters.clone(),
            releases: releases.clone(),
            stop: stop.clone(),
            summarised: None,
        };
        let thread = std::thread::Builder::new().name("upgram-reports".into()).spawn(move || worker.run())?;
        Ok(Self { sender, counters, releases, stop, thread: Mutex::new(Some(thread)) })
    }

    /// Queues the outcomes of `report`, received at `received`, for storing. Never waits:
    /// `false` when the queue is full (the report is dropped and counted).
    pub fn offer(&self, report: &Report<'_>, received: SystemTime) -> bool {
        self.offer_outcomes(StoredOutcome::from_report(report, received))
    }

    /// [`ReportWriter::offer`] for outcomes already converted.
    pub fn offer_outcomes(&self, outcomes: Vec<StoredOutcome>) -> bool {
        let n = outcomes.len() as u64;
        if n == 0 {
            return true;
        }
        if self.stop.load(Ordering::Relaxed) {
            WriterCounters::add(&self.counters.dropped, n);
            return false;
        }
        match self.sender.try_send(outcomes) {
            Ok(()) => {
                WriterCounters::add(&self.counters.queued, n);
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                WriterCounters::add(&self.counters.dropped, n);
                false
            }
        }
    }

    /// The writer's counters.
    pub fn counters(&self) -> &WriterCounters {
        &self.counters
    }

    /// The counts of every release with reports, as last read from the store.
    pub fn releases(&self) -> Vec<ReleaseSummary> {
        self.releases.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Stops the writer after storing what is queued, and waits for it. Offers made afterwards
    /// are dropped. Calling it again does nothing.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the report writer thread panicked");
        }
    }
}

impl Drop for ReportWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How often an idle writer looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);

struct Worker {
    store: Box<dyn ReportStore>,
    receiver: Receiver<Vec<StoredOutcome>>,
    options: WriterOptions,
    counters: Arc<WriterCounters>,
    releases: Arc<Mutex<Vec<ReleaseSummary>>>,
    stop: Arc<AtomicBool>,
    summarised: Option<Instant>,
}

impl Worker {
    fn run(&mut self) {
        let max = self.options.batch.max(1);
        self.summarise();
        while !self.stop.load(Ordering::Relaxed) {
            let mut batch = match self.receiver.recv_timeout(STOP_POLL) {
                Ok(first) => first,
                Err(RecvTimeoutError::Timeout) => {
                    // Other instances may share the store: its counts change without us.
                    self.summarise();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let deadline = Instant::now() + self.options.linger;
            while batch.len() < max {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.receiver.recv_timeout(left) {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            self.write(&batch);
        }
        // Flush: what is queued now, in batches; the queue is bounded, so is this loop.
        let mut batch = Vec::new();
        for _ in 0..self.options.queue.max(1) {
            match self.receiver.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
            if batch.len() >= max {
                self.write(&batch);
                batch.clear();
            }
        }
        if !batch.is_empty() {
            self.write(&batch);
        }
        self.summarised = None;
        self.summarise();
    }

    fn write(&mut self, batch: &[StoredOutcome]) {
        let n = batch.len() as u64;
        let mut result = self.store.insert_batch(batch);
        if let Err(error) = &result {
            bump(&self.counters.store_errors);
            tracing::warn!("storing {n} install report outcomes failed, trying once more: {error}");
            result = self.store.insert_batch(batch);
        }
        match result {
            Ok(stored) => {
                bump(&self.counters.batches);
                WriterCounters::add(&self.counters.stored, stored);
                WriterCounters::add(&self.counters.duplicates, n.saturating_sub(stored));
            }
            Err(error) => {
                bump(&self.counters.store_errors);
                WriterCounters::add(&self.counters.lost, n);
                tracing::error!("{n} install report outcomes lost: {error}");
                return;
            }
        }
        let releases: BTreeSet<(&str, &str)> = batch.iter().map(|o| (o.module.as_str(), o.to.as_str())).collect();
        if let Some(dir) = self.options.catalog.clone() {
            self.halt_failing(&dir, &releases);
        }
        self.summarise();
    }

    /// Halts each rolling release among `releases` whose recent failure share trips its rule.
    fn halt_failing(&mut self, dir: &std::path::Path, releases: &BTreeSet<(&str, &str)>) {
        let catalog = match catalog::load(dir) {
            Ok(catalog) => catalog,
            Err(error) => {
                tracing::warn!("cannot judge failure reports: catalog {}: {error}", dir.display());
                return;
            }
        };
        for &(module, version) in releases {
            let Ok(parsed) = Version::parse(version) else { continue };
            let Some(release) =
                catalog.modules.get(module).and_then(|m| m.releases.iter().find(|r| r.version == parsed))
            else {
                continue;
            };
            if release.rollout.state != RolloutState::Rolling {
                continue;
            }
            let rule = release.rollout.halt.unwrap_or_default();
            // A resumed release is judged on the reports received after the resume, not on those
            // that halted it. The resume is kept in whole seconds: reports from the next second on.
            let since_ms = release
                .rollout
                .resumed
                .map_or(0, |at| i64::try_from(at.saturating_add(1)).unwrap_or(i64::MAX).saturating_mul(1000));
            let recent = match self.store.recent_failure_share(module, version, rule.window, since_ms) {
                Ok(recent) => recent,
                Err(error) => {
                    bump(&self.counters.store_errors);
                    tracing::warn!("cannot judge {module} {version}: {error}");
                    continue;
                }
            };
            if !rule.trips(recent.reports, recent.failures) {
                continue;
            }
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            match rollout::change(dir, module, &parsed, &Change::Halt, now) {
                Ok(status) => {
                    bump(&self.counters.halts);
                    tracing::warn!(
                        module,
                        version,
                        reports = recent.reports,
                        failures = recent.failures,
                        "release halted: {} of its last {} reports are failures; `upgram-server rollout resume` rolls it out again ({status})",
                        recent.failures,
                        recent.reports
                    );
                }
                Err(error) => tracing::error!("halting {module} {version} failed: {error}"),
            }
        }
    }

    /// Reads the per-release counts again, at most every `summary_every`.
    fn summarise(&mut self) {
        if self.summarised.is_some_and(|at| at.elapsed() < self.options.summary_every) {
            return;
        }
        self.summarised = Some(Instant::now());
        match self.store.summary() {
            Ok(summary) => *self.releases.lock().unwrap_or_else(PoisonError::into_inner) = summary,
            Err(error) => {
                bump(&self.counters.store_errors);
                tracing::warn!("reading the install report counts failed: {error}");
            }
        }
    }
}

/// The writer is where a serving server's UDP workers hand the reports they accept: `offer`
/// never blocks, and refuses (counted as dropped) when the queue is full.
impl crate::intake::ReportSink for ReportWriter {
    fn offer(&self, report: &Report<'_>, received: SystemTime) -> bool {
        ReportWriter::offer(self, report, received)
    }
}

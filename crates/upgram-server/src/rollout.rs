//! `upgram-server promote` and `upgram-server rollout` (SPEC.md §5.10, §6.4): what an operator
//! does with a release already published — add it to a channel, roll it out by a percentage or
//! a schedule, pause, resume or withdraw it — and the status of each release.
//!
//! Every change rewrites the module file atomically under the catalog's publish lock (so it
//! never interleaves with a publish), and keeps every file list: a withdrawn release stays in
//! the catalog, so that clients on it get a complete rollback. A running server picks the
//! change up like any other catalog change.

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;
use upgram_core::body::value::is_valid_module_id;
use upgram_core::version::Version;

use crate::catalog::error::CatalogError;
use crate::catalog::model::{Module, Release};
use crate::catalog::rollout::{HaltRule, RolloutState, RolloutStep, format_schedule};
use crate::catalog::{self, save_module};
use crate::publish::lock_catalog;
use crate::reports::{ReportStore, ReportsError};

/// A change to one release's channels or rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Publish it to one more channel too (it stays on its others).
    Promote {
        /// The channel.
        channel: String,
    },
    /// Replace its schedule (a single step without a time sets a percentage from now on).
    Schedule(Vec<RolloutStep>),
    /// Offer it to no installation that does not have it yet.
    Pause,
    /// Offer it by its schedule again (after a pause, a halt or a withdrawal); from then on only
    /// the install reports received after this are judged.
    Resume,
    /// Offer it to none, and send installations on it back to the release before it.
    Withdraw,
    /// Set when it halts itself on failure reports.
    HaltRule(HaltRule),
    /// Halt it: what the server does when its failure reports pass its [`HaltRule`]. Only a
    /// rolling release halts; a paused, halted or withdrawn one is left as it is.
    Halt,
}

/// Why a rollout change or status could not be made.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RolloutError {
    /// The catalog could not be loaded or written.
    #[error("catalog {}: {source}", dir.display())]
    Catalog {
        /// The catalog folder.
        dir: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<CatalogError>,
    },
    /// Taking the catalog's publish lock failed.
    #[error("{}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The catalog has no such module.
    #[error("module {module:?} is not in the catalog")]
    UnknownModule {
        /// The module given.
        module: String,
    },
    /// The module has no such release.
    #[error("module {module}: no release {version} (see `upgram-server rollout status --module {module}`)")]
    UnknownRelease {
        /// The module.
        module: String,
        /// The version given.
        version: Version<'static>,
    },
    /// The install reports could not be read.
    #[error("install reports: {source}")]
    Reports {
        /// What went wrong.
        #[source]
        source: Box<ReportsError>,
    },
    /// A halt rule that is not one.
    #[error("--halt-share/--halt-window/--halt-min: {problem}")]
    BadHaltRule {
        /// What is wrong with it.
        problem: String,
    },
    /// A channel name that is not one.
    #[error("--channel {channel:?}: not a channel name (1 to 128 of A-Z a-z 0-9 . _ -)")]
    BadChannel {
        /// The channel given.
        channel: String,
    },
    /// Withdrawing a release that no earlier release of its channels could replace.
    #[error(
        "module {module}: release {version} cannot be withdrawn: no earlier release on its channels ({channels}) that is not withdrawn, for installations on it to go back to"
    )]
    NothingToGoBackTo {
        /// The module.
        module: String,
        /// The release.
        version: Version<'static>,
        /// Its channels.
        channels: String,
    },
}

/// Where one release stands, for `rollout status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseStatus {
    /// The module.
    pub module: String,
    /// The release.
    pub version: Version<'static>,
    /// Its channels.
    pub channels: Vec<String>,
    /// The operator's state.
    pub state: RolloutState,
    /// The percentage of buckets its schedule offers it to now (forced releases: all).
    pub percent: u8,
    /// It is forced (it bypasses the schedule).
    pub forced: bool,
    /// Its schedule (empty: 100 % at once).
    pub schedule: Vec<RolloutStep>,
    /// `rolling`, `paused`, `halted`, `withdrawn`, or `complete` once a rolling release reached
    /// 100 %.
    pub summary: &'static str,
    /// When it halts itself (the default rule unless one was set).
    pub halt: HaltRule,
    /// Installs reported (applied or deferred), when the install reports were read.
    pub installs: Option<u64>,
    /// Failures reported (failed or rolled back), when the install reports were read.
    pub failures: Option<u64>,
}

impl ReleaseStatus {
    fn of(module: &Module, release: &Release, now: u64) -> Self {
        let percent = if release.forced { 100 } else { release.rollout.percent_at(now) };
        Self {
            module: module.id.clone(),
            version: release.version.clone(),
            channels: release.channels.clone(),
            state: release.rollout.state,
            percent,
            forced: release.forced,
            schedule: release.rollout.schedule.clone(),
            summary: summary(release, now),
            halt: release.rollout.halt.unwrap_or_default(),
            installs: None,
            failures: None,
        }
    }
}

impl fmt::Display for ReleaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}, {}% of installations, channels {}",
            self.module,
            self.version,
            self.summary,
            self.percent,
            self.channels.join(",")
        )?;
        if self.forced {
            f.write_str(", forced (bypasses the schedule)")?;
        }
        if !self.schedule.is_empty() {
            write!(f, ", schedule {}", format_schedule(&self.schedule))?;
        }
        if let (Some(installs), Some(failures)) = (self.installs, self.failures) {
            write!(f, ", {installs} installs, {failures} failures reported")?;
        }
        write!(
            f,
            ", halts at {}% failures over the last {} reports (from {} on)",
            f64::from(self.halt.share_permille) / 10.0,
            self.halt.window,
            self.halt.min
        )
    }
}

/// How `rollout status` and `/metrics` name where `release` stands at unix time `now`: its
/// state, or `complete` once a rolling release reached 100 % (a forced one at once).
pub fn summary(release: &Release, now: u64) -> &'static str {
    if release.forced && release.rollout.state == RolloutState::Rolling {
        "complete"
    } else {
        release.rollout.describe(now)
    }
}

/// Applies `change` to release `version` of `module` in the catalog folder `dir`, at unix time
/// `now` (for the status returned), and returns where the release stands afterwards.
pub fn change(
    dir: &Path,
    module: &str,
    version: &Version<'_>,
    change: &Change,
    now: u64,
) -> Result<ReleaseStatus, RolloutError> {
    if let Change::Promote { channel } = change
        && !is_valid_module_id(channel)
    {
        return Err(RolloutError::BadChannel { channel: channel.clone() });
    }
    if let Change::HaltRule(rule) = change {
        rule.check().map_err(|problem| RolloutError::BadHaltRule { problem })?;
    }
    let _lock = lock_catalog(dir).map_err(|e| match e {
        crate::publish::PublishError::Io { path, source } => RolloutError::Lock { path, source },
        other => RolloutError::Lock { path: dir.to_owned(), source: std::io::Error::other(other.to_string()) },
    })?;
    let catalog = catalog::load(dir).map_err(catalog_error(dir))?;
    let mut module = catalog
        .modules
        .get(module)
        .cloned()
        .ok_or_else(|| RolloutError::UnknownModule { module: module.to_owned() })?;
    let at = release_index(&module, version)?;
    if *change == Change::Withdraw {
        check_withdrawable(&module, at)?;
    }
    let release = &mut module.releases[at];
    match change {
        Change::Promote { channel } => {
            if !release.on_channel(channel) {
                release.channels.push(channel.clone());
                release.channels.sort();
            }
        }
        Change::Schedule(schedule) => release.rollout.schedule = schedule.clone(),
        Change::Pause => release.rollout.state = RolloutState::Paused,
        Change::Resume => {
            release.rollout.state = RolloutState::Rolling;
            release.rollout.resumed = Some(now);
        }
        Change::Withdraw => release.rollout.state = RolloutState::Withdrawn,
        Change::HaltRule(rule) => release.rollout.halt = Some(*rule),
        Change::Halt if release.rollout.state == RolloutState::Rolling => release.rollout.state = RolloutState::Halted,
        Change::Halt => return Ok(ReleaseStatus::of(&module, &module.releases[at], now)),
    }
    save_module(dir, &module).map_err(catalog_error(dir))?;
    Ok(ReleaseStatus::of(&module, &module.releases[at], now))
}

/// Where each release of `module` stands at unix time `now` (only `version`, if given), oldest
/// first.
pub fn status(
    dir: &Path,
    module: &str,
    version: Option<&Version<'_>>,
    now: u64,
) -> Result<Vec<ReleaseStatus>, RolloutError> {
    let catalog = catalog::load(dir).map_err(catalog_error(dir))?;
    let module =
        catalog.modules.get(module).ok_or_else(|| RolloutError::UnknownModule { module: module.to_owned() })?;
    match version {
        Some(version) => {
            let at = release_index(module, version)?;
            Ok(vec![ReleaseStatus::of(module, &module.releases[at], now)])
        }
        None => Ok(module.releases.iter().map(|r| ReleaseStatus::of(module, r, now)).collect()),
    }
}

/// [`status`], with the installs and failures of each release read from the install reports
/// in `store`.
pub fn status_with_reports(
    dir: &Path,
    module: &str,
    version: Option<&Version<'_>>,
    now: u64,
    store: &mut dyn ReportStore,
) -> Result<Vec<ReleaseStatus>, RolloutError> {
    let mut releases = status(dir, module, version, now)?;
    for release in &mut releases {
        let counts = store
            .release_counts(&release.module, &release.version.to_string())
            .map_err(|source| RolloutError::Reports { source: Box::new(source) })?;
        release.installs = Some(counts.installs);
        release.failures = Some(counts.failures);
    }
    Ok(releases)
}

fn release_index(module: &Module, version: &Version<'_>) -> Result<usize, RolloutError> {
    module.releases.iter().position(|r| r.version == *version).ok_or_else(|| RolloutError::UnknownRelease {
        module: module.id.clone(),
        version: version.clone().into_owned(),
    })
}

/// A release can be withdrawn when an earlier release on one of its channels, not withdrawn,
/// is there for installations on it to go back to.
fn check_withdrawable(module: &Module, at: usize) -> Result<(), RolloutError> {
    let release = &module.releases[at];
    let fallback = module.releases[..at]
        .iter()
        .any(|r| r.rollout.state != RolloutState::Withdrawn && release.channels.iter().any(|c| r.on_channel(c)));
    if fallback {
        return Ok(());
    }
    Err(RolloutError::NothingToGoBackTo {
        module: module.id.clone(),
        version: release.version.clone(),
        channels: release.channels.join(","),
    })
}

fn catalog_error(dir: &Path) -> impl Fn(CatalogError) -> RolloutError + '_ {
    move |source| RolloutError::Catalog { dir: dir.to_owned(), source: Box::new(source) }
}

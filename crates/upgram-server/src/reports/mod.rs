//! Install reports stored and aggregated: one [`ReportStore`] trait with two back ends, an
//! embedded SQLite file ([`sqlite`], feature `sqlite`, the default: `CATALOG/reports.sqlite`) and
//! PostgreSQL ([`postgres`], feature `postgres`, for deployments of several instances), and the
//! [`writer`] that takes reports off the UDP workers through a bounded queue, stores them in
//! batches from one thread, and halts rolling releases whose failure share passes their rule.
//!
//! Every outcome is one row; an attempt received twice (a retransmission) is stored once. A
//! release is a module and the version an attempt aimed at.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;
use upgram_core::body::report::{FailureCode, OutcomeKind, Report};

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod schema;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod writer;

pub use writer::{ReportWriter, WriterCounters, WriterOptions};

/// The name of the SQLite file beside the catalog's files when `--reports` is not given.
pub const DEFAULT_SQLITE_FILE: &str = "reports.sqlite";

/// One outcome as stored: one upgrade attempt of one installation, with what the report said
/// about the installation and when the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOutcome {
    /// The client's random attempt number: the same attempt is stored once.
    pub attempt: u64,
    /// The module id.
    pub module: String,
    /// The version the installation had; `None` for a first install.
    pub from: Option<String>,
    /// The version the attempt aimed at: the release the outcome counts for.
    pub to: String,
    /// What happened.
    pub result: OutcomeKind,
    /// Why it failed, if it did.
    pub code: Option<FailureCode>,
    /// The channel the installation follows (`None`: the default channel).
    pub channel: Option<String>,
    /// The installation's bucket band.
    pub band: Option<u8>,
    /// When the server received the report, in milliseconds since the Unix epoch.
    pub received_ms: i64,
}

impl StoredOutcome {
    /// The outcomes of `report`, received at `received`.
    pub fn from_report(report: &Report<'_>, received: SystemTime) -> Vec<Self> {
        let received_ms =
            received.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        report
            .outcomes
            .iter()
            .map(|o| Self {
                attempt: o.attempt,
                module: o.module.clone().into_owned(),
                from: o.from.as_ref().map(|v| v.clone().into_owned()),
                to: o.to.clone().into_owned(),
                result: o.result,
                code: o.code,
                channel: report.channel.as_ref().map(|c| c.clone().into_owned()),
                band: report.band,
                received_ms,
            })
            .collect()
    }
}

/// The name of an outcome kind in the store.
pub fn kind_name(kind: OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Applied => "applied",
        OutcomeKind::Failed => "failed",
        OutcomeKind::Deferred => "deferred",
        OutcomeKind::RolledBack => "rolled-back",
    }
}

/// The name of a failure code in the store.
pub fn code_name(code: FailureCode) -> &'static str {
    match code {
        FailureCode::Download => "download",
        FailureCode::Verify => "verify",
        FailureCode::Installer => "installer",
        FailureCode::Apply => "apply",
        FailureCode::Space => "space",
        FailureCode::Other => "other",
    }
}

/// The attempt number as the stores keep it: the same 64 bits in a signed column.
pub fn attempt_key(attempt: u64) -> i64 {
    i64::from_ne_bytes(attempt.to_ne_bytes())
}

/// What the reports of one release add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReleaseCounts {
    /// Outcomes applied or deferred.
    pub installs: u64,
    /// Outcomes failed or rolled back.
    pub failures: u64,
    /// Every outcome.
    pub total: u64,
}

/// The failures among a release's most recent reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecentShare {
    /// Reports judged (at most the number asked for).
    pub reports: u64,
    /// Failures among them.
    pub failures: u64,
}

impl RecentShare {
    /// The failure share, 0 without reports.
    pub fn share(&self) -> f64 {
        if self.reports == 0 { 0.0 } else { self.failures as f64 / self.reports as f64 }
    }
}

/// The counts of one release, in [`ReportStore::summary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseSummary {
    /// The module.
    pub module: String,
    /// The version.
    pub version: String,
    /// Its counts.
    pub counts: ReleaseCounts,
}

/// Why the install reports could not be stored or read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReportsError {
    /// The SQLite file failed.
    #[cfg(feature = "sqlite")]
    #[error("SQLite {}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The error.
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL server failed or could not be reached.
    #[cfg(feature = "postgres")]
    #[error("PostgreSQL {url}: {source}")]
    Postgres {
        /// The URL, without its password.
        url: String,
        /// The error.
        #[source]
        source: ::postgres::Error,
    },
    /// A `--reports` value that is none of the forms.
    #[error("--reports {given:?}: {problem} (expected sqlite:PATH, postgres://USER@HOST/DATABASE or off)")]
    BadTarget {
        /// The value given.
        given: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The back end was left out of this build.
    #[error("--reports {given}: this upgram-server was built without the {feature} feature")]
    NotBuilt {
        /// The value given.
        given: String,
        /// The cargo feature that adds it.
        feature: &'static str,
    },
    /// The database's schema is newer than this server knows.
    #[error("the reports database has schema version {found}; this upgram-server knows versions up to {known}")]
    SchemaTooNew {
        /// The version found.
        found: i64,
        /// The last version this build knows.
        known: i64,
    },
}

/// Where install reports go: `--reports sqlite:PATH | postgres://… | off`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ReportsConfig {
    /// SQLite, in `reports.sqlite` in the catalog folder.
    #[default]
    Beside,
    /// SQLite in this file.
    Sqlite(PathBuf),
    /// PostgreSQL at this URL (`postgres://` or `postgresql://`).
    Postgres(String),
    /// Reports are not stored.
    Off,
}

impl FromStr for ReportsConfig {
    type Err = ReportsError;

    fn from_str(text: &str) -> Result<Self, ReportsError> {
        let bad = |problem: &str| ReportsError::BadTarget { given: text.to_owned(), problem: problem.to_owned() };
        if text == "off" {
            Ok(Self::Off)
        } else if let Some(path) = text.strip_prefix("sqlite:") {
            if path.is_empty() { Err(bad("no file after sqlite:")) } else { Ok(Self::Sqlite(PathBuf::from(path))) }
        } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Ok(Self::Postgres(text.to_owned()))
        } else {
            Err(bad("unknown form"))
        }
    }
}

impl ReportsConfig {
    /// Opens the store this names, for a catalog in `catalog` (`None` for [`ReportsConfig::Off`]),
    /// and brings its schema up to date.
    pub fn open(&self, catalog: &Path) -> Result<Option<Box<dyn ReportStore>>, ReportsError> {
        let mut store = self.connect(catalog)?;
        if let Some(store) = store.as_mut() {
            store.migrate()?;
        }
        Ok(store)
    }

    fn connect(&self, catalog: &Path) -> Result<Option<Box<dyn ReportStore>>, ReportsError> {
        match self {
            Self::Off => Ok(None),
            #[cfg(feature = "sqlite")]
            Self::Beside => Ok(Some(Box::new(sqlite::SqliteStore::open(&catalog.join(DEFAULT_SQLITE_FILE))?))),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(path) => Ok(Some(Box::new(sqlite::SqliteStore::open(path)?))),
            #[cfg(not(feature = "sqlite"))]
            Self::Beside | Self::Sqlite(_) => {
                let _ = catalog;
                Err(ReportsError::NotBuilt { given: self.to_string(), feature: "sqlite" })
            }
            #[cfg(feature = "postgres")]
            Self::Postgres(url) => Ok(Some(Box::new(postgres::PostgresStore::connect(url)?))),
            #[cfg(not(feature = "postgres"))]
            Self::Postgres(_) => Err(ReportsError::NotBuilt { given: self.to_string(), feature: "postgres" }),
        }
    }
}

impl std::fmt::Display for ReportsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Beside => write!(f, "sqlite:CATALOG/{DEFAULT_SQLITE_FILE}"),
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Self::Postgres(url) => f.write_str(&redact(url)),
            Self::Off => f.write_str("off"),
        }
    }
}

/// A PostgreSQL URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// `outcomes` with each attempt (of a module's release) once: where a batch holds an attempt
/// twice, a later result replaces a `deferred` one, else the first stays. Stores insert the
/// settled batch, as a database cannot update one row twice in one statement.
pub(super) fn settle(outcomes: &[StoredOutcome]) -> Cow<'_, [StoredOutcome]> {
    fn key(o: &StoredOutcome) -> (u64, &str, &str) {
        (o.attempt, o.module.as_str(), o.to.as_str())
    }
    let mut seen: HashMap<(u64, &str, &str), usize> = HashMap::new();
    if outcomes.iter().all(|o| seen.insert(key(o), 0).is_none()) {
        return Cow::Borrowed(outcomes);
    }
    seen.clear();
    let mut settled: Vec<StoredOutcome> = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        match seen.get(&key(outcome)) {
            Some(&index) => {
                if settled[index].result == OutcomeKind::Deferred && outcome.result != OutcomeKind::Deferred {
                    settled[index] = outcome.clone();
                }
            }
            None => {
                seen.insert(key(outcome), settled.len());
                settled.push(outcome.clone());
            }
        }
    }
    Cow::Owned(settled)
}

/// Where install reports are kept. Used from one thread at a time (the writer's, or a
/// command's), hence `&mut self`.
pub trait ReportStore: Send {
    /// Brings the schema up to date: each migration not yet recorded in `schema_version` is
    /// applied once, in its own transaction. Returns the schema version reached.
    fn migrate(&mut self) -> Result<i64, ReportsError>;

    /// Stores `outcomes` in one transaction; an attempt already stored is skipped, but for a
    /// stored `deferred` result, which a later result of the same attempt replaces (the
    /// deferred upgrade completed). Returns how many were stored or replaced.
    fn insert_batch(&mut self, outcomes: &[StoredOutcome]) -> Result<u64, ReportsError>;

    /// The counts of release `version` of `module`.
    fn release_counts(&mut self, module: &str, version: &str) -> Result<ReleaseCounts, ReportsError>;

    /// The failures among the last `n` reports (by arrival) of release `version` of `module`
    /// received at `since_ms` (milliseconds since the Unix epoch) or later.
    fn recent_failure_share(
        &mut self,
        module: &str,
        version: &str,
        n: u32,
        since_ms: i64,
    ) -> Result<RecentShare, ReportsError>;

    /// The counts of every release that has reports, by module and version.
    fn summary(&mut self) -> Result<Vec<ReleaseSummary>, ReportsError>;
}

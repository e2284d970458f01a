//! Install reports in an embedded SQLite file (WAL mode: readers such as `rollout status` do not
//! wait for the writer, nor it for them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::schema::{FAILURE, INSTALL, MIGRATIONS, REPLACE_DEFERRED, counts, now_ms};
use super::{
    RecentShare, ReleaseCounts, ReleaseSummary, ReportStore, ReportsError, StoredOutcome, attempt_key, code_name,
    kind_name, settle,
};

/// How long a statement waits for a lock another connection holds before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`ReportStore`] in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    connection: Connection,
}

impl SqliteStore {
    /// Opens (or creates) the database file at `path`, in WAL mode. Call
    /// [`ReportStore::migrate`] before using it.
    pub fn open(path: &Path) -> Result<Self, ReportsError> {
        Self::open_with_timeout(path, BUSY_TIMEOUT)
    }

    /// [`SqliteStore::open`], waiting at most `busy` for a lock another connection holds.
    pub fn open_with_timeout(path: &Path, busy: Duration) -> Result<Self, ReportsError> {
        let error = sqlite_error(path);
        let connection = Connection::open(path).map_err(&error)?;
        connection.busy_timeout(busy).map_err(&error)?;
        connection.pragma_update(None, "journal_mode", "WAL").map_err(&error)?;
        connection.pragma_update(None, "synchronous", "NORMAL").map_err(&error)?;
        Ok(Self { path: path.to_owned(), connection })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn sqlite_error(path: &Path) -> impl Fn(rusqlite::Error) -> ReportsError + '_ {
    move |source| ReportsError::Sqlite { path: path.to_owned(), source }
}

impl ReportStore for SqliteStore {
    fn migrate(&mut self) -> Result<i64, ReportsError> {
        let error = sqlite_error(&self.path);
        self.connection
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)",
            )
            .map_err(&error)?;
        let known = MIGRATIONS.last().map_or(0, |m| m.version);
        for migration in MIGRATIONS {
            // IMMEDIATE: a second process migrating at the same time waits, then sees it done.
            let tx = self.connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&error)?;
            let done: Option<i64> = tx
                .query_row("SELECT version FROM schema_version WHERE version = ?1", [migration.version], |r| r.get(0))
                .optional()
                .map_err(&error)?;
            if done.is_none() {
                // The row id alias, ascending and never reused.
                tx.execute_batch(&migration.statements("INTEGER PRIMARY KEY AUTOINCREMENT")).map_err(&error)?;
                tx.execute(
                    "INSERT INTO schema_version (version, applied_ms) VALUES (?1, ?2)",
                    [migration.version, now_ms()],
                )
                .map_err(&error)?;
            }
            tx.commit().map_err(&error)?;
        }
        let found: i64 = self
            .connection
            .query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |r| r.get(0))
            .map_err(&error)?;
        if found > known {
            return Err(ReportsError::SchemaTooNew { found, known });
        }
        Ok(found)
    }

    fn insert_batch(&mut self, outcomes: &[StoredOutcome]) -> Result<u64, ReportsError> {
        let error = sqlite_error(&self.path);
        let tx = self.connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&error)?;
        let mut stored = 0;
        {
            let mut insert = tx
                .prepare_cached(&format!(
                    "INSERT INTO outcomes (attempt, module, from_version, to_version, result, code, channel, band, received_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) {REPLACE_DEFERRED}"
                ))
                .map_err(&error)?;
            for o in settle(outcomes).iter() {
                stored += insert
                    .execute(params![
                        attempt_key(o.attempt),
                        o.module,
                        o.from,
                        o.to,
                        kind_name(o.result),
                        o.code.map(code_name),
                        o.channel,
                        o.band,
                        o.received_ms,
                    ])
                    .map_err(&error)? as u64;
            }
        }
        tx.commit().map_err(&error)?;
        Ok(stored)
    }

    fn release_counts(&mut self, module: &str, version: &str) -> Result<ReleaseCounts, ReportsError> {
        let error = sqlite_error(&self.path);
        let sql = format!(
            "SELECT COALESCE(SUM({INSTALL}), 0), COALESCE(SUM({FAILURE}), 0), COUNT(*) FROM outcomes
             WHERE module = ?1 AND to_version = ?2"
        );
        self.connection
            .query_row(&sql, [module, version], |r| Ok(counts(r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(&error)
    }

    fn recent_failure_share(
        &mut self,
        module: &str,
        version: &str,
        n: u32,
        since_ms: i64,
    ) -> Result<RecentShare, ReportsError> {
        let error = sqlite_error(&self.path);
        let sql = format!(
            "SELECT COUNT(*), COALESCE(SUM({FAILURE}), 0) FROM (SELECT result FROM outcomes
             WHERE module = ?1 AND to_version = ?2 AND received_ms >= ?4 ORDER BY id DESC LIMIT ?3)"
        );
        self.connection
            .query_row(&sql, params![module, version, n, since_ms], |r| {
                let (reports, failures): (i64, i64) = (r.get(0)?, r.get(1)?);
                Ok(RecentShare {
                    reports: u64::try_from(reports).unwrap_or(0),
                    failures: u64::try_from(failures).unwrap_or(0),
                })
            })
            .map_err(&error)
    }

    fn summary(&mut self) -> Result<Vec<ReleaseSummary>, ReportsError> {
        let error = sqlite_error(&self.path);
        let sql = format!(
            "SELECT module, to_version, COALESCE(SUM({INSTALL}), 0), COALESCE(SUM({FAILURE}), 0), COUNT(*)
             FROM outcomes GROUP BY module, to_version ORDER BY module, to_version"
        );
        let mut statement = self.connection.prepare_cached(&sql).map_err(&error)?;
        let rows = statement
            .query_map([], |r| {
                Ok(ReleaseSummary {
                    module: r.get(0)?,
                    version: r.get(1)?,
                    counts: counts(r.get(2)?, r.get(3)?, r.get(4)?),
                })
            })
            .map_err(&error)?;
        rows.collect::<Result<_, _>>().map_err(&error)
    }
}

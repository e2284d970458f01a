//! What both back ends share: the schema migrations in each dialect, the conditions that
//! count installs and failures, and small conversions.

use std::time::{SystemTime, UNIX_EPOCH};

use super::ReleaseCounts;

/// Milliseconds since the Unix epoch, now.
pub(super) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A schema migration: its version and its statements, in SQL both back ends take, but for
/// [`SERIAL`], written where a table's own ascending row id is declared.
pub(super) struct Migration {
    /// Its version: migrations run in ascending order.
    pub version: i64,
    /// Its statements.
    pub sql: &'static str,
}

/// Stands, in a migration, for an ascending row id column's type.
pub(super) const SERIAL: &str = "{serial}";

impl Migration {
    /// Its statements with [`SERIAL`] replaced by `serial`, the dialect's type for it.
    pub(super) fn statements(&self, serial: &str) -> String {
        self.sql.replace(SERIAL, serial)
    }
}

/// Every migration, in order.
pub(super) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sql: "CREATE TABLE outcomes (
        id {serial},
        attempt BIGINT NOT NULL,
        module TEXT NOT NULL,
        from_version TEXT,
        to_version TEXT NOT NULL,
        result TEXT NOT NULL,
        code TEXT,
        channel TEXT,
        band SMALLINT,
        received_ms BIGINT NOT NULL,
        UNIQUE (module, to_version, attempt)
    );
    CREATE INDEX outcomes_release ON outcomes (module, to_version, id);",
}];

/// How an insert meets an attempt already stored: it is left alone, unless it is `deferred`
/// and the new result is not, which then replaces it (the deferred upgrade completed).
pub(super) const REPLACE_DEFERRED: &str = "ON CONFLICT (module, to_version, attempt) DO UPDATE SET
    result = excluded.result, code = excluded.code, received_ms = excluded.received_ms
    WHERE outcomes.result = 'deferred' AND excluded.result <> 'deferred'";

/// The SQL condition of an install, and of a failure, over the `result` column.
pub(super) const INSTALL: &str = "result IN ('applied', 'deferred')";
/// See [`INSTALL`].
pub(super) const FAILURE: &str = "result IN ('failed', 'rolled-back')";

/// Counts from the three numbers a count query returns (negative ones, impossible, as 0).
pub(super) fn counts(installs: i64, failures: i64, total: i64) -> ReleaseCounts {
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    ReleaseCounts { installs: n(installs), failures: n(failures), total: n(total) }
}

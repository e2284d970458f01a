//! Install reports in PostgreSQL, through the synchronous client, for deployments of several
//! server instances sharing one database. The connection is made again after an error.

use std::time::Duration;

use postgres::{Client, NoTls, Statement};

use super::schema::{FAILURE, INSTALL, MIGRATIONS, REPLACE_DEFERRED, counts, now_ms};
use super::{
    RecentShare, ReleaseCounts, ReleaseSummary, ReportStore, ReportsError, StoredOutcome, attempt_key, code_name,
    kind_name, redact, settle,
};

/// How long connecting, and one statement, may take at most.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The advisory lock key that serialises migrations of instances starting together.
const MIGRATION_LOCK: i64 = 0x7570_6772_616d_0001;

/// A [`ReportStore`] in a PostgreSQL database.
pub struct PostgresStore {
    url: String,
    client: Option<Client>,
    /// The batch insert, prepared on the current connection.
    insert: Option<Statement>,
}

/// The batch insert: the columns as arrays, unnested into rows (followed by
/// [`REPLACE_DEFERRED`]).
const INSERT: &str =
    "INSERT INTO outcomes (attempt, module, from_version, to_version, result, code, channel, band, received_ms)
    SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[],
                         $8::SMALLINT[], $9::BIGINT[])";

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("url", &redact(&self.url)).finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`,
    /// without TLS). Call [`ReportStore::migrate`] before using it.
    pub fn connect(url: &str) -> Result<Self, ReportsError> {
        let mut store = Self { url: url.to_owned(), client: None, insert: None };
        store.client()?;
        Ok(store)
    }

    fn error(&self, source: postgres::Error) -> ReportsError {
        ReportsError::Postgres { url: redact(&self.url), source }
    }

    /// The connection, made again if an error closed or dropped it.
    fn client(&mut self) -> Result<&mut Client, ReportsError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            self.insert = None;
            let mut config: postgres::Config = self.url.parse().map_err(|e| self.error(e))?;
            if config.get_connect_timeout().is_none() {
                config.connect_timeout(TIMEOUT);
            }
            let mut client = config.connect(NoTls).map_err(|e| self.error(e))?;
            // A statement held up by a lock fails after a while instead of stalling the writer
            // (and the server's shutdown) for good; the reports queue meanwhile drops.
            client
                .batch_execute(&format!("SET statement_timeout = {}", TIMEOUT.as_millis()))
                .map_err(|e| self.error(e))?;
            self.client = Some(client);
        }
        // Set just above.
        self.client.as_mut().ok_or_else(|| unreachable_error(&self.url))
    }

    /// Runs `work` on the connection; after an error the connection is dropped, so that the
    /// next call connects again.
    fn with<T>(&mut self, work: impl FnOnce(&mut Client) -> Result<T, postgres::Error>) -> Result<T, ReportsError> {
        let client = self.client()?;
        match work(client) {
            Ok(value) => Ok(value),
            Err(source) => {
                self.client = None;
                self.insert = None;
                Err(self.error(source))
            }
        }
    }
}

/// The error for a connection that should be there (never made).
fn unreachable_error(url: &str) -> ReportsError {
    ReportsError::BadTarget { given: redact(url), problem: "no connection".into() }
}

impl ReportStore for PostgresStore {
    fn migrate(&mut self) -> Result<i64, ReportsError> {
        let known = MIGRATIONS.last().map_or(0, |m| m.version);
        let found = self.with(|client| {
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
            )?;
            tx.commit()?;
            for migration in MIGRATIONS {
                let mut tx = client.transaction()?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
                let done =
                    tx.query_opt("SELECT version FROM schema_version WHERE version = $1", &[&migration.version])?;
                if done.is_none() {
                    tx.batch_execute(&migration.statements("BIGSERIAL PRIMARY KEY"))?;
                    tx.execute(
                        "INSERT INTO schema_version (version, applied_ms) VALUES ($1, $2)",
                        &[&migration.version, &now_ms()],
                    )?;
                }
                tx.commit()?;
            }
            let row = client.query_one("SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_version", &[])?;
            row.try_get::<_, i64>(0)
        })?;
        if found > known {
            return Err(ReportsError::SchemaTooNew { found, known });
        }
        Ok(found)
    }

    fn insert_batch(&mut self, outcomes: &[StoredOutcome]) -> Result<u64, ReportsError> {
        if outcomes.is_empty() {
            return Ok(0);
        }
        let outcomes = settle(outcomes);
        let attempts: Vec<i64> = outcomes.iter().map(|o| attempt_key(o.attempt)).collect();
        let modules: Vec<&str> = outcomes.iter().map(|o| o.module.as_str()).collect();
        let froms: Vec<Option<&str>> = outcomes.iter().map(|o| o.from.as_deref()).collect();
        let tos: Vec<&str> = outcomes.iter().map(|o| o.to.as_str()).collect();
        let results: Vec<&str> = outcomes.iter().map(|o| kind_name(o.result)).collect();
        let codes: Vec<Option<&str>> = outcomes.iter().map(|o| o.code.map(code_name)).collect();
        let channels: Vec<Option<&str>> = outcomes.iter().map(|o| o.channel.as_deref()).collect();
        let bands: Vec<Option<i16>> = outcomes.iter().map(|o| o.band.map(i16::from)).collect();
        let received: Vec<i64> = outcomes.iter().map(|o| o.received_ms).collect();
        let insert = match &self.insert {
            Some(statement) => statement.clone(),
            None => {
                let sql = format!("{INSERT} {REPLACE_DEFERRED}");
                let statement = self.with(|client| client.prepare(&sql))?;
                self.insert = Some(statement.clone());
                statement
            }
        };
        // One statement, so one transaction, and one round trip per batch.
        self.with(|client| {
            client
                .execute(&insert, &[&attempts, &modules, &froms, &tos, &results, &codes, &channels, &bands, &received])
        })
    }

    fn release_counts(&mut self, module: &str, version: &str) -> Result<ReleaseCounts, ReportsError> {
        let sql = format!(
            "SELECT COUNT(*) FILTER (WHERE {INSTALL}), COUNT(*) FILTER (WHERE {FAILURE}), COUNT(*) FROM outcomes
             WHERE module = $1 AND to_version = $2"
        );
        self.with(|client| {
            let row = client.query_one(&sql, &[&module, &version])?;
            Ok(counts(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
        })
    }

    fn recent_failure_share(
        &mut self,
        module: &str,
        version: &str,
        n: u32,
        since_ms: i64,
    ) -> Result<RecentShare, ReportsError> {
        let sql = format!(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE {FAILURE}) FROM (SELECT result FROM outcomes
             WHERE module = $1 AND to_version = $2 AND received_ms >= $4 ORDER BY id DESC LIMIT $3) AS recent"
        );
        let limit = i64::from(n);
        self.with(|client| {
            let row = client.query_one(&sql, &[&module, &version, &limit, &since_ms])?;
            let (reports, failures): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            Ok(RecentShare {
                reports: u64::try_from(reports).unwrap_or(0),
                failures: u64::try_from(failures).unwrap_or(0),
            })
        })
    }

    fn summary(&mut self) -> Result<Vec<ReleaseSummary>, ReportsError> {
        let sql = format!(
            "SELECT module, to_version, COUNT(*) FILTER (WHERE {INSTALL}), COUNT(*) FILTER (WHERE {FAILURE}), COUNT(*)
             FROM outcomes GROUP BY module, to_version ORDER BY module, to_version"
        );
        self.with(|client| {
            client
                .query(&sql, &[])?
                .iter()
                .map(|row| {
                    Ok(ReleaseSummary {
                        module: row.try_get(0)?,
                        version: row.try_get(1)?,
                        counts: counts(row.try_get(2)?, row.try_get(3)?, row.try_get(4)?),
                    })
                })
                .collect()
        })
    }
}

//! The local state of one installation: modules and versions, file versions and hashes, the
//! frequent-file lists the server gave, the upgrades waiting for a trigger, and the cached
//! cookies. One JSON file per installation, written atomically (temporary file, fsync, rename,
//! fsync of the folder), so a crash leaves either the old state or the new one.
//!
//! [`crate::installation::Installation`] owns it: it loads it once, changes it in memory and
//! saves it once per change.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use upgram_core::body::{BANDS, BUCKETS, Outcome, OutcomeKind, QueryFile, QueryModule};
use upgram_core::cookie::{ClientCookie, ServerCookie};
use upgram_core::version::Version;

use crate::transport::CookieJar;

/// Why the state file could not be read or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StateError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a state file.
    #[error("{}: not an upgram state file ({reason}); restore it from a backup or run a full install", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A file as installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledFile {
    /// The version in which its content last changed.
    pub version: String,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// It was made executable (SPEC.md §5.4). Absent in state files written before the flag
    /// existed, and for files that are not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
}

/// A module as installed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledModule {
    /// Its version.
    pub version: String,
    /// Its files.
    #[serde(default)]
    pub files: BTreeMap<String, InstalledFile>,
    /// The files the server says change often: sent as file-level entries \[0078\].
    #[serde(default)]
    pub frequent: Vec<String>,
    /// Its install package asked for a restart of the application or system (exit 3010/1641).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restart_needed: bool,
    /// An install package was interrupted and changed files: its state is unknown, so updates
    /// do not run its package again until it is repaired (reinstalled).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// Cookies cached for one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedCookie {
    /// The server address.
    pub server: SocketAddr,
    /// Our client cookie, hex.
    pub client: String,
    /// The server cookie it gave us, hex.
    pub server_cookie: Option<String>,
}

/// Everything the client keeps about one installation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledState {
    /// Modules by id.
    #[serde(default)]
    pub modules: BTreeMap<String, InstalledModule>,
    /// Cookies by server.
    #[serde(default)]
    pub cookies: Vec<SavedCookie>,
    /// Module upgrades waiting for a trigger (busy files), by module id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending: BTreeMap<String, PendingUpgrade>,
    /// The installation's rollout bucket (SPEC.md §4.3): a random number in 0-99, drawn once
    /// ([`InstalledState::draw_bucket`]) and sent in every query. Absent in state files written
    /// before rollouts existed, until the installation is next opened to change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<u8>,
    /// By module id: how many times a query part holding the module was answered with a
    /// fallback document. Each time doubles the answer size the client predicts for it, so
    /// the part is split further at the next check (SPEC.md §2.6). Absent in state files
    /// written before it existed: nothing fell back.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fallbacks: BTreeMap<String, u8>,
    /// Install reports not yet acknowledged by a server, oldest first, at most
    /// [`MAX_QUEUED_REPORTS`] (SPEC.md §5.11): sent after each upgrade and with every check
    /// until a server acknowledges them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<Outcome<'static>>,
}

/// The most install reports a state keeps waiting for an acknowledgement; past it the oldest
/// are dropped (SPEC.md §5.11).
pub const MAX_QUEUED_REPORTS: usize = 64;

/// The most times a module's predicted answer size is doubled: 2^5 times the expected size of
/// a module asked with a version is about a whole datagram.
pub const MAX_FALLBACK_DOUBLINGS: u8 = 5;

fn io(path: &Path) -> impl Fn(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.to_owned(), source }
}

impl InstalledState {
    /// Reads the state at `path`; a missing file is an empty installation.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(io(path)(e)),
        };
        let state: Self = serde_json::from_str(&text)
            .map_err(|e| StateError::Malformed { path: path.to_owned(), reason: e.to_string() })?;
        state.check().map_err(|reason| StateError::Malformed { path: path.to_owned(), reason })?;
        Ok(state)
    }

    /// Draws the rollout bucket if the state has none (uniformly at random from 0-99, never
    /// from anything that identifies the machine or a person); returns whether it drew one.
    pub fn draw_bucket(&mut self) -> bool {
        if self.bucket.is_some() {
            return false;
        }
        self.bucket = Some(rand::Rng::gen_range(&mut rand::thread_rng(), 0..BUCKETS));
        true
    }

    /// Queues the outcome of an upgrade attempt for the next report, dropping the oldest past
    /// [`MAX_QUEUED_REPORTS`]. A `deferred` outcome of a module whose pending upgrade goes to
    /// the same version is recorded on it, so that its completion is reported under the same
    /// attempt; a later outcome of an attempt still queued takes its place (one outcome per
    /// attempt is sent: the latest).
    pub fn queue_report(&mut self, outcome: Outcome<'static>) {
        if outcome.result == OutcomeKind::Deferred
            && let Some(pending) = self.pending.get_mut(outcome.module.as_ref())
            && pending.after.version == outcome.to.as_ref()
            && pending.attempt.is_none()
        {
            pending.attempt = Some(outcome.attempt);
        }
        if let Some(queued) = self.reports.iter_mut().find(|queued| queued.attempt == outcome.attempt) {
            *queued = outcome;
            return;
        }
        self.reports.push(outcome);
        if self.reports.len() > MAX_QUEUED_REPORTS {
            let excess = self.reports.len() - MAX_QUEUED_REPORTS;
            self.reports.drain(..excess);
        }
    }

    /// Removes the queued reports of the acknowledged `attempts`.
    pub fn acknowledge_reports(&mut self, attempts: &[u64]) {
        self.reports.retain(|outcome| !attempts.contains(&outcome.attempt));
    }

    /// The installation's bucket band (bucket / 10), which reports carry instead of the bucket.
    pub fn band(&self) -> Option<u8> {
        self.bucket.map(|bucket| bucket / (BUCKETS / BANDS))
    }

    fn check(&self) -> Result<(), String> {
        if let Some(bucket) = self.bucket.filter(|&b| b >= BUCKETS) {
            return Err(format!("bucket {bucket} is not below {BUCKETS}"));
        }
        for (id, module) in &self.modules {
            Version::parse(&module.version).map_err(|e| format!("module {id}: {e}"))?;
            for (file, installed) in &module.files {
                Version::parse(&installed.version).map_err(|e| format!("module {id}, file {file}: {e}"))?;
            }
        }
        Ok(())
    }

    /// Writes the state to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| StateError::Malformed { path: path.to_owned(), reason: e.to_string() })?;
        crate::fsutil::write_durable(path, text.as_bytes()).map_err(io(path))
    }

    /// The query entries for this installation: every module at its version, with a file entry
    /// for each of its frequent files that is installed \[0077\]-\[0078\].
    pub fn query_modules(&self) -> Vec<QueryModule<'_>> {
        self.modules
            .iter()
            .filter_map(|(id, module)| {
                let version = Version::parse(&module.version).ok()?;
                let files = module
                    .frequent
                    .iter()
                    .filter_map(|f| {
                        let installed = module.files.get(f)?;
                        Some(QueryFile { id: f.as_str().into(), version: Version::parse(&installed.version).ok()? })
                    })
                    .collect();
                Some(QueryModule { id: id.as_str().into(), version: Some(version), files })
            })
            .collect()
    }

    /// The answer bytes the client predicts for `module` in a compact answer (SPEC.md §2.6):
    /// the protocol's prediction, doubled for each time a part holding the module fell back.
    pub fn predicted_answer_len(&self, module: &QueryModule<'_>) -> usize {
        let doublings = self.fallbacks.get(module.id.as_ref()).copied().unwrap_or(0).min(MAX_FALLBACK_DOUBLINGS);
        upgram_core::merge::predicted_answer_len(module) << doublings
    }

    /// Remembers that a part asking about `modules` was answered with a fallback document, so
    /// that the next check splits it further. Forgets modules no longer installed.
    pub fn remember_fallback<'m>(&mut self, modules: impl IntoIterator<Item = &'m str>) {
        for id in modules {
            let doublings = self.fallbacks.entry(id.to_owned()).or_insert(0);
            *doublings = doublings.saturating_add(1).min(MAX_FALLBACK_DOUBLINGS);
        }
        let installed = &self.modules;
        self.fallbacks.retain(|id, _| installed.contains_key(id));
    }

    /// The cookie jar saved with this state.
    pub fn cookie_jar(&self) -> CookieJar {
        let mut jar = CookieJar::default();
        for saved in &self.cookies {
            let client = hex_array::<8>(&saved.client).map(ClientCookie);
            let server = saved.server_cookie.as_deref().and_then(hex_array::<16>).map(ServerCookie);
            if let Some(client) = client {
                jar.restore(saved.server, client, server);
            }
        }
        jar
    }

    /// Saves `jar` with this state.
    pub fn set_cookie_jar(&mut self, jar: &CookieJar) {
        let mut cookies: Vec<SavedCookie> = jar
            .entries()
            .map(|(server, (client, cookie))| SavedCookie {
                server: *server,
                client: hex::encode(client.0),
                server_cookie: cookie.map(|c| hex::encode(c.0)),
            })
            .collect();
        cookies.sort_by_key(|c| c.server);
        self.cookies = cookies;
    }
}

fn hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// When a deferred upgrade can be completed .
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// A plug-in the plug-in manager can restart: stop it, replace, start it.
    PluginRestart,
    /// The program's next start, before it runs (its launcher runs `upgram apply-pending`).
    ProgramStart,
    /// The program's exit (it launches `upgram apply-pending --wait-pid` before exiting).
    ProgramExit,
    /// The running `upgram` replaces itself when it exits.
    SelfUpdate,
    /// A reboot: kernel-mode files, replaced at the next start of the system (a boot service
    /// runs `upgram apply-pending --trigger reboot`).
    Reboot,
}

impl Trigger {
    /// Every trigger, for help texts and parsing.
    pub const ALL: [Trigger; 5] =
        [Self::PluginRestart, Self::ProgramStart, Self::ProgramExit, Self::SelfUpdate, Self::Reboot];

    /// Its name, as written in configuration, state and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::PluginRestart => "plugin-restart",
            Self::ProgramStart => "program-start",
            Self::ProgramExit => "program-exit",
            Self::SelfUpdate => "self-update",
            Self::Reboot => "reboot",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A trigger name that is not one of [`Trigger::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown trigger `{0}`: expected one of reboot, program-exit, program-start, plugin-restart, self-update")]
pub struct UnknownTrigger(pub String);

impl FromStr for Trigger {
    type Err = UnknownTrigger;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|t| t.name() == text).ok_or_else(|| UnknownTrigger(text.to_owned()))
    }
}

/// One file change of a module upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileOp {
    /// Put the staged file at `file`.
    Replace {
        /// File id.
        file: String,
        /// The staged payload (already hash-checked).
        staged: PathBuf,
        /// Its SHA-256, hex.
        sha256: String,
        /// Make it executable, or not (SPEC.md §5.4). Absent in journals and pending upgrades
        /// written before the flag existed: not executable.
        #[serde(default)]
        executable: bool,
    },
    /// Remove `file`.
    Delete {
        /// File id.
        file: String,
    },
}

impl FileOp {
    /// The file id it changes.
    pub fn file(&self) -> &str {
        match self {
            Self::Replace { file, .. } | Self::Delete { file } => file,
        }
    }
}

/// A module upgrade waiting for its trigger, as recorded in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpgrade {
    /// When it can be completed.
    pub trigger: Trigger,
    /// Order of recording: pending upgrades are completed in this order (dependencies first).
    pub seq: u64,
    /// The files that were busy.
    pub busy: Vec<String>,
    /// Pending modules this one depends on: it is completed only after them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waits_for: Vec<String>,
    /// The file changes, their payloads kept under `ROOT/.upgram/pending/<module>/`.
    pub ops: Vec<FileOp>,
    /// The module's state entry once it is done.
    pub after: InstalledModule,
    /// The attempt its `deferred` install report named, once one was queued: its completion
    /// is reported under the same attempt, which replaces the `deferred` result on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_names_round_trip() {
        for trigger in Trigger::ALL {
            assert_eq!(trigger.name().parse::<Trigger>().unwrap(), trigger);
            let json = serde_json::to_string(&trigger).unwrap();
            assert_eq!(json, format!("\"{}\"", trigger.name()));
        }
        assert!("at-lunch".parse::<Trigger>().unwrap_err().to_string().contains("program-exit"));
        // A module with a kernel-mode file waits for the reboot, whatever its other files say.
        assert!(Trigger::Reboot > Trigger::ProgramExit && Trigger::ProgramExit > Trigger::PluginRestart);
    }
}

//! Applying one module's file list, all or nothing (C6; issue 5).
//!
//! Before each step the journal (`ROOT/.upgram/journal/<module>.journal`) records it, synced.
//! A file that is replaced or deleted is first moved, by rename, into
//! `ROOT/.upgram/backup/<module>/`; a new file is written beside its target and renamed over
//! it; every rename is followed by a sync of the folders involved. When every file is done the
//! journal records the commit, then backups go, then the state file takes the module's new
//! version (installed state changes only after the files do), then the journal goes.
//!
//! [`recover`] repairs whatever a crash interrupted: a committed module is finished (state
//! written, backups removed), an uncommitted one is undone from its backups. Both directions
//! are idempotent, so a crash during recovery is repaired by the next recovery.
//!
//! Crash tests: when the environment variable `UPGRAM_FAILPOINT` names a step (`apply:begin`,
//! `apply:backup:N`, `apply:install:N`, `apply:commit`, `apply:state`, `recover:undo:N`,
//! `recover:forward`, `package:begin`, `package:ran`, `package:done`), the process aborts right
//! after that step's journal record, as `kill -9` would stop it. Unset, it costs one environment
//! lookup per step. Two more make a write fail
//! as a full disk would (ENOSPC), for the full-disk tests where no small file system can be
//! mounted: `enospc:stage` (writing any staged payload) and `enospc:apply:N` (writing op N's new
//! file beside its target).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use upgram_core::Sha256Digest;

use crate::journal::{self, Journal, JournalError, sync_parent};
use crate::paths::{self, PathError};
use crate::staging::hash_file;
use crate::state::{InstalledModule, InstalledState, StateError};

/// The environment variable that names a step to crash at.
pub const FAILPOINT_VAR: &str = "UPGRAM_FAILPOINT";

/// Aborts the process if `UPGRAM_FAILPOINT` names this step.
pub(crate) fn failpoint(name: &str) {
    if std::env::var_os(FAILPOINT_VAR).is_some_and(|v| v == name) {
        std::process::abort();
    }
}

/// Fails with "no space left on device" if `UPGRAM_FAILPOINT` names this step.
pub(crate) fn injected_enospc(name: &str) -> io::Result<()> {
    if std::env::var_os(FAILPOINT_VAR).is_some_and(|v| v == name) {
        return Err(io::Error::from_raw_os_error(28));
    }
    Ok(())
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

/// A journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// The upgrade: what changes, and the module's state entry once it is done.
    Begin {
        /// Module id.
        module: String,
        /// The file changes, in order.
        ops: Vec<FileOp>,
        /// Which targets existed before (same order as `ops`).
        existed: Vec<bool>,
        /// The module's state entry after the upgrade.
        after: InstalledModule,
        /// The folders (relative to the root, parents first) that did not exist and that the
        /// new files will need: undoing removes them again, so a rollback leaves no empty
        /// folder behind. Absent in journals written before it existed.
        #[serde(default)]
        folders: Vec<String>,
    },
    /// Op `index`'s target is about to be moved to the backup folder.
    Backup {
        /// Index in `ops`.
        index: usize,
    },
    /// Op `index`'s new file is about to be renamed into place.
    Install {
        /// Index in `ops`.
        index: usize,
    },
    /// Every file is done: from here on, recovery finishes instead of undoing.
    Commit,
    /// An install package is about to run.
    Package {
        /// Module id.
        module: String,
        /// The module's state entry if it succeeds.
        after: InstalledModule,
        /// The module's recorded files and hashes before it runs: what recovery looks at.
        recorded: BTreeMap<String, String>,
    },
    /// The package succeeded; `restart` if it asked for a restart.
    PackageDone {
        /// Exit status 3010 or 1641.
        restart: bool,
    },
}

/// Why a module could not be applied (it was rolled back) or recovered.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// A file id would leave the installation root.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The journal could not be written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The state file could not be written.
    #[error(transparent)]
    State(#[from] StateError),
    /// A file operation failed; the module was rolled back.
    #[error("{}: {source} (module `{module}` rolled back)", path.display())]
    Io {
        /// The module.
        module: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The installation's lock could not be taken: its bookkeeping folder cannot be written
    /// (a read-only installation ends here, before anything changes).
    #[error("cannot lock the installation: {}: {source}; nothing changed", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Another process holds the installation's lock.
    #[error("another upgram is working on this installation ({} is locked); try again when it is done", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A module id that cannot name a folder (`.` or `..`).
    #[error("module id `{0}` is not usable as a folder name; refused")]
    ModuleId(String),
    /// An earlier upgrade of this module was interrupted: run `upgram recover` first.
    #[error("module `{module}` has an unfinished upgrade ({}): run `upgram recover`", journal.display())]
    Unfinished {
        /// The module.
        module: String,
        /// Its journal.
        journal: PathBuf,
    },
}

/// The folders of an installation's bookkeeping.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The installation root.
    pub root: PathBuf,
    /// The state file.
    pub state: PathBuf,
}

impl Layout {
    /// The layout of the installation at `root` (state in `ROOT/.upgram/state.json`).
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_owned(), state: crate::config::state_path(root) }
    }

    fn meta(&self) -> PathBuf {
        self.root.join(".upgram")
    }

    /// The journal folder.
    pub fn journals(&self) -> PathBuf {
        self.meta().join("journal")
    }

    /// Refuses module ids that would name the bookkeeping folders themselves (`.`, `..`): the
    /// wire allows them (SPEC.md §4.2), but they name no module folder.
    pub fn check_module(module: &str) -> Result<(), ApplyError> {
        if module.is_empty() || module.bytes().all(|b| b == b'.') || module.contains(['/', '\\']) {
            return Err(ApplyError::ModuleId(module.to_owned()));
        }
        Ok(())
    }

    /// The journal of `module`.
    pub fn journal(&self, module: &str) -> PathBuf {
        self.journals().join(format!("{module}.journal"))
    }

    /// The backup folder of `module`.
    pub fn backups(&self, module: &str) -> PathBuf {
        self.meta().join("backup").join(module)
    }

    /// The staging folder (payloads by SHA-256).
    pub fn staging(&self) -> PathBuf {
        self.meta().join("staging")
    }
}

/// Maps an I/O error on `path` of `module` to [`ApplyError::Io`].
pub(crate) fn io_error(module: &str, path: &Path) -> impl Fn(io::Error) -> ApplyError {
    let (module, path) = (module.to_owned(), path.to_owned());
    move |source| ApplyError::Io { module: module.clone(), path: path.clone(), source: explain(source) }
}

/// "Invalid cross-device link" alone does not tell a user that a folder of the installation
/// is a separate mount (read-only, or another disk), which backups by rename cannot leave.
fn explain(error: io::Error) -> io::Error {
    if error.kind() != io::ErrorKind::CrossesDevices {
        return error;
    }
    let why = format!(
        "{error}: it is on another file system (a separate or read-only mount) than the installation's \
         .upgram folder, and files are moved, not copied, to and from there"
    );
    io::Error::new(error.kind(), why)
}

/// Renames `from` to `to` (creating `to`'s folder) and syncs both folders.
fn rename_synced(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::rename(from, to)?;
    sync_parent(to)?;
    sync_parent(from)
}

/// The temporary name a new file is written under before it is renamed over its target.
fn incoming(target: &Path) -> PathBuf {
    let mut name = target.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".upgram-new");
    target.with_file_name(name)
}

/// Applies `ops` to `module` of the installation, all or nothing, and records `after` as the
/// module's state. On error every change is undone before returning.
pub fn apply_module(layout: &Layout, module: &str, ops: &[FileOp], after: InstalledModule) -> Result<(), ApplyError> {
    Layout::check_module(module)?;
    let targets: Vec<PathBuf> =
        ops.iter().map(|op| paths::resolve(&layout.root, op.file())).collect::<Result<_, _>>()?;
    let journal_path = layout.journal(module);
    if journal_path.exists() {
        return Err(ApplyError::Unfinished { module: module.to_owned(), journal: journal_path });
    }
    fs::create_dir_all(layout.journals()).map_err(io_error(module, &layout.journals()))?;
    let existed: Vec<bool> = targets.iter().map(|t| t.symlink_metadata().is_ok()).collect();
    let folders = missing_folders(&layout.root, ops);
    let mut journal = Journal::create(&journal_path)?;
    journal.append(&Record::Begin {
        module: module.to_owned(),
        ops: ops.to_vec(),
        existed: existed.clone(),
        after: after.clone(),
        folders: folders.clone(),
    })?;
    failpoint("apply:begin");
    let outcome = apply_ops(layout, module, ops, &targets, &existed, &mut journal);
    if let Err(error) = outcome {
        undo(layout, module, ops, &existed, &folders)?;
        journal::remove(&journal_path)?;
        return Err(error);
    }
    journal.append(&Record::Commit)?;
    failpoint("apply:commit");
    finish(layout, module, after)?;
    Ok(())
}

fn apply_ops(
    layout: &Layout,
    module: &str,
    ops: &[FileOp],
    targets: &[PathBuf],
    existed: &[bool],
    journal: &mut Journal,
) -> Result<(), ApplyError> {
    for (index, (op, target)) in ops.iter().zip(targets).enumerate() {
        // A replaced file keeps its permissions, but for the execute bits its entry sets.
        let permissions = fs::metadata(target).ok().filter(|_| existed[index]).map(|m| m.permissions());
        if existed[index] {
            journal.append(&Record::Backup { index })?;
            let backup = layout.backups(module).join(op.file());
            rename_synced(target, &backup).map_err(io_error(module, target))?;
            failpoint(&format!("apply:backup:{index}"));
        }
        if let FileOp::Replace { staged, executable, .. } = op {
            let temp = incoming(target);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(io_error(module, parent))?;
            }
            fs::copy(staged, &temp)
                .and_then(|_| injected_enospc(&format!("enospc:apply:{index}")))
                .map_err(io_error(module, &temp))?;
            if let Some(permissions) = permissions {
                fs::set_permissions(&temp, permissions).map_err(io_error(module, &temp))?;
            }
            crate::mode::set_executable(&temp, *executable).map_err(io_error(module, &temp))?;
            fs::File::open(&temp).and_then(|f| f.sync_all()).map_err(io_error(module, &temp))?;
            journal.append(&Record::Install { index })?;
            rename_synced(&temp, target).map_err(io_error(module, target))?;
            failpoint(&format!("apply:install:{index}"));
        }
    }
    Ok(())
}

/// The folders on the way to the new files that do not exist yet, parents first.
fn missing_folders(root: &Path, ops: &[FileOp]) -> Vec<String> {
    let mut folders: Vec<String> = Vec::new();
    for op in ops.iter().filter(|op| matches!(op, FileOp::Replace { .. })) {
        let segments: Vec<&str> = op.file().split('/').collect();
        for depth in 1..segments.len() {
            let folder = segments[..depth].join("/");
            if !folders.contains(&folder) && root.join(&folder).symlink_metadata().is_err() {
                folders.push(folder);
            }
        }
    }
    folders
}

/// Puts every target back as it was, from the backups; removes files that did not exist, then
/// the folders that were made for them (if nothing else has been put in them).
fn undo(layout: &Layout, module: &str, ops: &[FileOp], existed: &[bool], folders: &[String]) -> Result<(), ApplyError> {
    for (index, op) in ops.iter().enumerate().rev() {
        let target = paths::resolve(&layout.root, op.file())?;
        let backup = layout.backups(module).join(op.file());
        let _ = fs::remove_file(incoming(&target));
        if backup.symlink_metadata().is_ok() {
            rename_synced(&backup, &target).map_err(io_error(module, &target))?;
        } else if !existed.get(index).copied().unwrap_or(true) && target.symlink_metadata().is_ok() {
            fs::remove_file(&target).map_err(io_error(module, &target))?;
            sync_parent(&target).map_err(io_error(module, &target))?;
        }
        failpoint(&format!("recover:undo:{index}"));
    }
    for folder in folders.iter().rev() {
        let path = layout.root.join(folder);
        // Not empty, or already gone: either way not ours to remove.
        if fs::remove_dir(&path).is_ok() {
            sync_parent(&path).map_err(io_error(module, &path))?;
        }
    }
    remove_backups(layout, module)
}

fn remove_backups(layout: &Layout, module: &str) -> Result<(), ApplyError> {
    remove_folder(module, &layout.backups(module))
}

/// Removes `folder` of `module`'s bookkeeping and everything in it; a missing one is fine.
pub(crate) fn remove_folder(module: &str, folder: &Path) -> Result<(), ApplyError> {
    match fs::remove_dir_all(folder) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(module, folder)(e)),
    }
}

/// After the commit: backups go (nothing reads them once the journal holds the commit, and on a
/// full disk their space is what lets the state be written), then the state takes the new
/// version, then the journal goes.
fn finish(layout: &Layout, module: &str, after: InstalledModule) -> Result<(), ApplyError> {
    remove_backups(layout, module)?;
    let mut state = InstalledState::load(&layout.state)?;
    // Keep the frequent-file list the server gave unless the new entry brings one.
    let frequent = state.modules.get(module).map(|m| m.frequent.clone()).unwrap_or_default();
    let mut after = after;
    if after.frequent.is_empty() {
        after.frequent = frequent;
    }
    state.modules.insert(module.to_owned(), after);
    // A pending upgrade of the module is done (or superseded) once the module is upgraded.
    state.pending.remove(module);
    if let Some(parent) = layout.state.parent() {
        fs::create_dir_all(parent).map_err(io_error(module, parent))?;
    }
    state.save(&layout.state)?;
    failpoint("apply:state");
    journal::remove(&layout.journal(module))?;
    Ok(())
}

/// What recovery did for one module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// The upgrade had committed: it was finished.
    Finished(String),
    /// The upgrade had not committed: it was undone.
    RolledBack(String),
    /// An install package was interrupted before it changed any recorded file: nothing to do.
    InstallNotStarted(String),
    /// An install package was interrupted after it changed files: marked interrupted.
    InstallInterrupted(String),
}

/// Runs an install package for `module` with a journal around it (SPEC.md §5.8): on success the
/// state takes `after` (with the restart flag when asked for).
pub fn install_package(
    layout: &Layout,
    module: &str,
    program: &Path,
    args: &[String],
    mut after: InstalledModule,
    timeout: std::time::Duration,
) -> Result<crate::package::InstallResult, ApplyError> {
    use crate::package::{InstallResult, run};
    Layout::check_module(module)?;
    let journal_path = layout.journal(module);
    if journal_path.exists() {
        return Err(ApplyError::Unfinished { module: module.to_owned(), journal: journal_path });
    }
    fs::create_dir_all(layout.journals()).map_err(io_error(module, &layout.journals()))?;
    let state = InstalledState::load(&layout.state)?;
    let recorded: BTreeMap<String, String> = state
        .modules
        .get(module)
        .map(|m| m.files.iter().map(|(id, f)| (id.clone(), f.sha256.clone())).collect())
        .unwrap_or_default();
    let mut journal = Journal::create(&journal_path)?;
    journal.append(&Record::Package { module: module.to_owned(), after: after.clone(), recorded })?;
    failpoint("package:begin");
    let result = run(program, args, &layout.root, module, &after.version, timeout);
    failpoint("package:ran");
    match &result {
        InstallResult::Success | InstallResult::SuccessRestart => {
            let restart = result == InstallResult::SuccessRestart;
            journal.append(&Record::PackageDone { restart })?;
            failpoint("package:done");
            after.restart_needed = restart;
            finish(layout, module, after)?;
        }
        InstallResult::Failure(_) => journal::remove(&journal_path)?,
    }
    Ok(result)
}

/// After a crash while a package ran: did it change any recorded file?
fn recover_package(
    layout: &Layout,
    module: &str,
    recorded: &BTreeMap<String, String>,
) -> Result<Recovered, ApplyError> {
    let untouched = recorded.iter().all(|(id, sha)| {
        paths::resolve(&layout.root, id)
            .ok()
            .and_then(|p| hash_file(&p).ok())
            .is_some_and(|(found, _)| found.to_hex() == *sha)
    });
    if untouched {
        return Ok(Recovered::InstallNotStarted(module.to_owned()));
    }
    let mut state = InstalledState::load(&layout.state)?;
    if let Some(entry) = state.modules.get_mut(module) {
        entry.interrupted = true;
    }
    state.save(&layout.state)?;
    Ok(Recovered::InstallInterrupted(module.to_owned()))
}

/// The installation's lock, held while a process changes it; released when dropped, or by the
/// operating system when the process dies.
#[derive(Debug)]
pub struct InstallationLock {
    _file: fs::File,
}

/// Takes the lock of the installation, or fails at once if another process holds it.
pub fn lock(layout: &Layout) -> Result<InstallationLock, ApplyError> {
    let path = layout.meta().join("lock");
    let lock_error = |source| ApplyError::Lock { path: path.clone(), source };
    fs::create_dir_all(layout.meta()).map_err(lock_error)?;
    let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(lock_error)?;
    match file.try_lock() {
        Ok(()) => Ok(InstallationLock { _file: file }),
        Err(fs::TryLockError::WouldBlock) => Err(ApplyError::Locked { path }),
        Err(fs::TryLockError::Error(e)) => Err(lock_error(e)),
    }
}

/// Repairs every upgrade a crash interrupted (run at the start of every command).
pub fn recover(layout: &Layout) -> Result<Vec<Recovered>, ApplyError> {
    let mut done = Vec::new();
    let mut journals: Vec<PathBuf> = match fs::read_dir(layout.journals()) {
        Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    journals.sort();
    for path in journals.into_iter().filter(|p| p.extension().is_some_and(|e| e == "journal")) {
        let (records, _) = journal::read::<Record>(&path)?;
        if let Some(Record::Package { module, mut after, recorded }) = records.first().cloned() {
            if let Some(Record::PackageDone { restart }) = records.get(1) {
                after.restart_needed = *restart;
                finish(layout, &module, after)?;
                done.push(Recovered::Finished(module));
            } else {
                done.push(recover_package(layout, &module, &recorded)?);
                journal::remove(&path)?;
            }
            continue;
        }
        let Some(Record::Begin { module, ops, existed, after, folders }) = records.first().cloned() else {
            // Torn before the first record was whole: nothing was touched.
            journal::remove(&path)?;
            continue;
        };
        if records.contains(&Record::Commit) {
            failpoint("recover:forward");
            finish(layout, &module, after)?;
            done.push(Recovered::Finished(module));
        } else {
            undo(layout, &module, &ops, &existed, &folders)?;
            journal::remove(&path)?;
            done.push(Recovered::RolledBack(module));
        }
    }
    if let Ok(state) = InstalledState::load(&layout.state) {
        crate::defer::clean_orphans(layout, &state)?;
    }
    Ok(done)
}

/// Whether every file of `module` in `state` is on disk with its recorded hash (a check for
/// tests and `upgram status`).
pub fn verify_module(layout: &Layout, module: &InstalledModule) -> Result<(), String> {
    for (id, file) in &module.files {
        let path = paths::resolve(&layout.root, id).map_err(|e| e.to_string())?;
        let (found, _) = hash_file(&path).map_err(|e| format!("{id}: {e}"))?;
        if Some(found) != Sha256Digest::from_hex(&file.sha256) {
            return Err(format!("{id}: content differs from the recorded hash"));
        }
    }
    Ok(())
}

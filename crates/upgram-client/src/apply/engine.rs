//! One module's file list applied all or nothing.
//!
//! Before each step the journal (`Layout::journal`) records it, synced. A file that is replaced
//! or deleted is first moved, by rename, into the module's backup folder; a new file is
//! written beside its target and renamed over it; every rename is followed by a sync of the
//! folders involved. When every file is done the journal records the commit, then backups go,
//! then the state takes the module's new version (installed state changes only after the files
//! do) and is saved, then the journal goes.
//!
//! [`super::recovery`] repairs whatever a crash interrupted, with `undo` and `finish`: both
//! directions are idempotent, so a crash during recovery is repaired by the next recovery.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use thiserror::Error;
use upgram_core::Sha256Digest;

use super::package::{InstallResult, run};
use super::{ApplyError, Record, failpoint, injected_enospc, io_error};
use crate::fsutil::{remove_tree, rename_synced, sync_parent};
use crate::journal::{self, Journal};
use crate::layout::Layout;
use crate::paths::{self, PathError};
use crate::staging::hash_file;
use crate::state::{FileOp, InstalledModule, InstalledState};

/// The temporary name a new file is written under before it is renamed over its target.
fn incoming(target: &Path) -> PathBuf {
    let mut name = target.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".upgram-new");
    target.with_file_name(name)
}

/// Applies `ops` to `module` of the installation, all or nothing, and records `after` as the
/// module's state. On error every change is undone before returning.
pub fn apply_module(
    layout: &Layout,
    state: &mut InstalledState,
    module: &str,
    ops: &[FileOp],
    after: InstalledModule,
) -> Result<(), ApplyError> {
    Layout::check_module(module)?;
    let targets: Vec<PathBuf> =
        ops.iter().map(|op| paths::resolve(layout.root(), op.file())).collect::<Result<_, _>>()?;
    let journal_path = layout.journal(module);
    if journal_path.exists() {
        return Err(ApplyError::Unfinished { module: module.to_owned(), journal: journal_path });
    }
    fs::create_dir_all(layout.journals()).map_err(io_error(module, &layout.journals()))?;
    let existed: Vec<bool> = targets.iter().map(|t| t.symlink_metadata().is_ok()).collect();
    let folders = missing_folders(layout.root(), ops);
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
    finish(layout, state, module, after)
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
pub(crate) fn undo(
    layout: &Layout,
    module: &str,
    ops: &[FileOp],
    existed: &[bool],
    folders: &[String],
) -> Result<(), ApplyError> {
    for (index, op) in ops.iter().enumerate().rev() {
        let target = paths::resolve(layout.root(), op.file())?;
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
        let path = layout.root().join(folder);
        // Not empty, or already gone: either way not ours to remove.
        if fs::remove_dir(&path).is_ok() {
            sync_parent(&path).map_err(io_error(module, &path))?;
        }
    }
    remove_backups(layout, module)
}

fn remove_backups(layout: &Layout, module: &str) -> Result<(), ApplyError> {
    let folder = layout.backups(module);
    remove_tree(&folder).map_err(io_error(module, &folder))
}

/// After the commit: backups go (nothing reads them once the journal holds the commit, and on a
/// full disk their space is what lets the state be written), then the state takes the new
/// version, then the journal goes.
pub(crate) fn finish(
    layout: &Layout,
    state: &mut InstalledState,
    module: &str,
    after: InstalledModule,
) -> Result<(), ApplyError> {
    remove_backups(layout, module)?;
    // Keep the frequent-file list the server gave unless the new entry brings one.
    let frequent = state.modules.get(module).map(|m| m.frequent.clone()).unwrap_or_default();
    let mut after = after;
    if after.frequent.is_empty() {
        after.frequent = frequent;
    }
    state.modules.insert(module.to_owned(), after);
    // A pending upgrade of the module is done (or superseded) once the module is upgraded.
    state.pending.remove(module);
    state.save(&layout.state_file())?;
    failpoint("apply:state");
    journal::remove(&layout.journal(module))?;
    Ok(())
}

/// Runs an install package for `module` with a journal around it (SPEC.md §5.8): on success the
/// state takes `after` (with the restart flag when asked for).
pub fn install_package(
    layout: &Layout,
    state: &mut InstalledState,
    module: &str,
    program: &Path,
    args: &[String],
    mut after: InstalledModule,
    timeout: std::time::Duration,
) -> Result<InstallResult, ApplyError> {
    Layout::check_module(module)?;
    let journal_path = layout.journal(module);
    if journal_path.exists() {
        return Err(ApplyError::Unfinished { module: module.to_owned(), journal: journal_path });
    }
    fs::create_dir_all(layout.journals()).map_err(io_error(module, &layout.journals()))?;
    let recorded: BTreeMap<String, String> = state
        .modules
        .get(module)
        .map(|m| m.files.iter().map(|(id, f)| (id.clone(), f.sha256.clone())).collect())
        .unwrap_or_default();
    let mut journal = Journal::create(&journal_path)?;
    journal.append(&Record::Package { module: module.to_owned(), after: after.clone(), recorded })?;
    failpoint("package:begin");
    let result = run(program, args, layout.root(), module, &after.version, timeout);
    failpoint("package:ran");
    match &result {
        InstallResult::Success | InstallResult::SuccessRestart => {
            let restart = matches!(result, InstallResult::SuccessRestart);
            journal.append(&Record::PackageDone { restart })?;
            failpoint("package:done");
            after.restart_needed = restart;
            finish(layout, state, module, after)?;
        }
        InstallResult::Failure(_) => journal::remove(&journal_path)?,
    }
    Ok(result)
}

/// Why an installed module does not match its recorded state.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A recorded file id does not name a file under the root.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A recorded file cannot be read.
    #[error("{file}: {source}")]
    Io {
        /// The file id.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A recorded file's content differs from its recorded hash.
    #[error("{file}: content differs from the recorded hash")]
    Differs {
        /// The file id.
        file: String,
    },
}

/// Whether every file of `module` is on disk with its recorded hash.
pub fn verify_module(layout: &Layout, module: &InstalledModule) -> Result<(), VerifyError> {
    for (id, file) in &module.files {
        let path = paths::resolve(layout.root(), id)?;
        let (found, _) = hash_file(&path).map_err(|source| VerifyError::Io { file: id.clone(), source })?;
        if Some(found) != Sha256Digest::from_hex(&file.sha256) {
            return Err(VerifyError::Differs { file: id.clone() });
        }
    }
    Ok(())
}

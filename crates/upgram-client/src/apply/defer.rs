//! Deferred replacement of busy files (SPEC.md §5.9).
//!
//! When a file of a module is in use, the whole module waits, so its versions never mix: its
//! staged payloads are copied into the module's pending folder and the state records the
//! pending upgrade with its [`Trigger`]. Until the trigger comes the module stays at its old
//! version. [`apply_pending`] completes the pending upgrades of a trigger through the same
//! journaled, all-or-nothing apply as any upgrade; a newer update of the module purges the
//! stale pending work first.
//!
//! Which trigger a busy file waits for is the in-use check's answer ([`crate::hooks`]):
//! kernel-mode files wait for a reboot, files of the running program for its exit or next
//! start, a plug-in for its restart through the embedder's plug-in manager, and the running
//! `upgram` itself for [`Trigger::SelfUpdate`] (see [`super::selfupdate`]).

use std::fs;
use std::io;
use std::path::Path;

use thiserror::Error;

use super::engine::apply_module;
use super::{ApplyError, failpoint, io_error};
use crate::fsutil::{copy_synced, remove_tree, sync_parent};
use crate::hooks::{InUseCheck, PluginError, PluginManager, Usage};
use crate::layout::Layout;
use crate::paths;
use crate::state::{FileOp, InstalledModule, InstalledState, PendingUpgrade, Trigger};

/// The busy files of a module's `ops`, and the trigger the module waits for (the latest of
/// theirs: a module with a kernel-mode file waits for the reboot).
pub fn busy_files(
    layout: &Layout,
    module: &str,
    ops: &[FileOp],
    check: &dyn InUseCheck,
) -> Result<Option<(Trigger, Vec<String>)>, ApplyError> {
    let mut trigger = None;
    let mut busy = Vec::new();
    for op in ops {
        let path = paths::resolve(layout.root(), op.file())?;
        if let Usage::Busy(t) = check.check(module, op.file(), &path) {
            trigger = trigger.max(Some(t));
            busy.push(op.file().to_owned());
        }
    }
    Ok(trigger.map(|t| (t, busy)))
}

/// Why a module waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Its trigger.
    pub trigger: Trigger,
    /// The files that are in use.
    pub busy: Vec<String>,
    /// The pending modules it depends on.
    pub waits_for: Vec<String>,
}

/// Records `module`'s upgrade as pending: its staged payloads are copied into the module's
/// pending folder and synced, then the state records it (replacing any stale pending upgrade
/// of the module) and is saved. A crash in between leaves payloads no state refers to, which
/// [`clean_orphans`] removes.
pub fn defer(
    layout: &Layout,
    state: &mut InstalledState,
    module: &str,
    ops: &[FileOp],
    after: InstalledModule,
    waiting: Waiting,
) -> Result<PendingUpgrade, ApplyError> {
    Layout::check_module(module)?;
    purge(layout, state, module)?;
    let folder = layout.pending(module);
    fs::create_dir_all(&folder).map_err(io_error(module, &folder))?;
    let mut kept = Vec::with_capacity(ops.len());
    for op in ops {
        kept.push(match op {
            FileOp::Replace { file, staged, sha256, executable } => {
                let copy = folder.join(sha256);
                copy_synced(staged, &copy)
                    .and_then(|()| copy_permissions(staged, &copy))
                    .map_err(io_error(module, &copy))?;
                FileOp::Replace { file: file.clone(), staged: copy, sha256: sha256.clone(), executable: *executable }
            }
            FileOp::Delete { .. } => op.clone(),
        });
    }
    sync_parent(&folder.join("x")).map_err(io_error(module, &folder))?;
    failpoint("defer:files");
    let seq = state.pending.values().map(|p| p.seq + 1).max().unwrap_or(0);
    let Waiting { trigger, busy, waits_for } = waiting;
    let pending = PendingUpgrade { trigger, seq, busy, waits_for, ops: kept, after, attempt: None };
    state.pending.insert(module.to_owned(), pending.clone());
    state.save(&layout.state_file())?;
    failpoint("defer:state");
    Ok(pending)
}

fn copy_permissions(from: &Path, to: &Path) -> io::Result<()> {
    fs::set_permissions(to, fs::metadata(from)?.permissions())
}

/// Removes `module`'s pending upgrade, if any: its entry in the state (saved), then its
/// payloads. Whether there was one.
pub fn purge(layout: &Layout, state: &mut InstalledState, module: &str) -> Result<bool, ApplyError> {
    let had = state.pending.remove(module).is_some();
    if had {
        state.save(&layout.state_file())?;
    }
    remove_payloads(layout, module)?;
    Ok(had)
}

fn remove_payloads(layout: &Layout, module: &str) -> Result<(), ApplyError> {
    let folder = layout.pending(module);
    remove_tree(&folder).map_err(io_error(module, &folder))
}

/// Removes pending payloads no pending upgrade refers to (left by a crash, or by an upgrade
/// completed just before a crash).
pub fn clean_orphans(layout: &Layout, state: &InstalledState) -> Result<(), ApplyError> {
    let Ok(entries) = fs::read_dir(layout.pending_root()) else { return Ok(()) };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !state.pending.contains_key(&name) {
            remove_payloads(layout, &name)?;
        }
    }
    Ok(())
}

/// Why a pending upgrade still waits.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StillWaiting {
    /// Files are still in use.
    #[error("still in use: {}", .0.join(", "))]
    Busy(Vec<String>),
    /// A module it depends on is still pending.
    #[error("its dependency {0} is still pending")]
    Dependency(String),
    /// The plug-in manager could not stop the plug-in.
    #[error("the plug-in manager could not stop it: {0}")]
    PluginStop(#[source] PluginError),
    /// It replaces the running `upgram`: only the hand-over completes it.
    #[error("it replaces the running upgram: completed when it exits")]
    SelfUpdate,
}

/// What became of one pending upgrade.
#[derive(Debug)]
#[non_exhaustive]
pub enum PendingOutcome {
    /// Completed: the module is at its new version.
    Applied {
        /// The module.
        module: String,
        /// Its new version.
        version: String,
    },
    /// Still waiting, and why.
    Waiting {
        /// The module.
        module: String,
        /// Why.
        reason: StillWaiting,
    },
    /// The apply failed and was rolled back; the upgrade stays pending.
    Failed {
        /// The module.
        module: String,
        /// Why.
        error: ApplyError,
    },
}

impl PendingOutcome {
    /// The module.
    pub fn module(&self) -> &str {
        match self {
            Self::Applied { module, .. } | Self::Waiting { module, .. } | Self::Failed { module, .. } => module,
        }
    }
}

/// Completes the pending upgrades waiting for `trigger` (every trigger when `None`), in the
/// order they were recorded, each all or nothing. A file still in use keeps its module waiting;
/// a plug-in is stopped and started again through `plugins` around its upgrade.
pub fn apply_pending(
    layout: &Layout,
    state: &mut InstalledState,
    trigger: Option<Trigger>,
    check: &dyn InUseCheck,
    plugins: Option<&dyn PluginManager>,
) -> Result<Vec<PendingOutcome>, ApplyError> {
    let mut queue: Vec<(String, PendingUpgrade)> = state
        .pending
        .iter()
        .filter(|(_, p)| trigger.is_none_or(|t| p.trigger == t))
        .map(|(m, p)| (m.clone(), p.clone()))
        .collect();
    queue.sort_by_key(|(_, p)| p.seq);
    let mut outcomes = Vec::new();
    for (module, pending) in queue {
        if let Some(dep) = pending.waits_for.iter().find(|d| state.pending.contains_key(*d)) {
            let reason = StillWaiting::Dependency(dep.clone());
            outcomes.push(PendingOutcome::Waiting { module, reason });
            continue;
        }
        outcomes.push(complete(layout, state, &module, pending, check, plugins)?);
    }
    Ok(outcomes)
}

/// Completes one pending upgrade now if its files are free (stopping and starting a plug-in
/// around it through `plugins` when it waits for a plug-in restart).
pub fn complete(
    layout: &Layout,
    state: &mut InstalledState,
    module: &str,
    pending: PendingUpgrade,
    check: &dyn InUseCheck,
    plugins: Option<&dyn PluginManager>,
) -> Result<PendingOutcome, ApplyError> {
    let manager = plugins.filter(|_| pending.trigger == Trigger::PluginRestart);
    if let Some(manager) = manager
        && let Err(error) = manager.stop(module)
    {
        return Ok(PendingOutcome::Waiting { module: module.to_owned(), reason: StillWaiting::PluginStop(error) });
    }
    let outcome = apply_now(layout, state, module, pending, check);
    if let Some(manager) = manager
        && let Err(error) = manager.start(module)
    {
        tracing::warn!(module, "the plug-in manager could not start it again: {error}");
    }
    outcome
}

fn apply_now(
    layout: &Layout,
    state: &mut InstalledState,
    module: &str,
    pending: PendingUpgrade,
    check: &dyn InUseCheck,
) -> Result<PendingOutcome, ApplyError> {
    if let Some((_, busy)) = busy_files(layout, module, &pending.ops, check)? {
        return Ok(PendingOutcome::Waiting { module: module.to_owned(), reason: StillWaiting::Busy(busy) });
    }
    let version = pending.after.version.clone();
    match apply_module(layout, state, module, &pending.ops, pending.after) {
        Ok(()) => {
            remove_payloads(layout, module)?;
            Ok(PendingOutcome::Applied { module: module.to_owned(), version })
        }
        Err(error @ (ApplyError::Io { .. } | ApplyError::Path(_))) => {
            Ok(PendingOutcome::Failed { module: module.to_owned(), error })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_ids_that_name_no_folder_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let mut state = InstalledState::default();
        for id in [".", "..", "...", ""] {
            let waiting = Waiting { trigger: Trigger::Reboot, busy: vec![], waits_for: vec![] };
            let error = defer(&layout, &mut state, id, &[], InstalledModule::default(), waiting);
            assert!(matches!(error, Err(ApplyError::ModuleId(_))), "{id:?}");
            let applied = apply_module(&layout, &mut state, id, &[], InstalledModule::default());
            assert!(matches!(applied, Err(ApplyError::ModuleId(_))));
        }
        assert!(dir.path().read_dir().unwrap().next().is_none(), "nothing written");
    }
}

//! Deferred replacement of busy files (C9, \[0091\]-\[0096\]; SPEC.md §5.9) and the parts an
//! embedder plugs in for it (C11): the in-use check and the plug-in manager.
//!
//! When a file of a module is in use, the whole module waits, so its versions never mix: its
//! staged payloads are copied into `ROOT/.upgram/pending/<module>/` and the state file records
//! the pending upgrade with its [`Trigger`]. Until the trigger comes the module stays at its old
//! version. [`apply_pending`] (`upgram apply-pending --trigger …`) completes the pending upgrades
//! of a trigger through the same journaled, all-or-nothing apply as any upgrade; a newer update
//! of the module purges the stale pending work first.
//!
//! Which trigger a busy file waits for is the in-use check's answer: kernel-mode files wait for
//! a reboot, files of the running program for its exit or next start, a plug-in for its
//! restart through the embedder's [`PluginManager`], and the running `upgram` itself for
//! [`Trigger::SelfUpdate`] (\[0120\], see [`crate::selfupdate`]).
//!
//! The default check, [`AdvisoryLock`], says a file is busy while another process holds an
//! advisory lock on it (`flock`): an application takes a shared lock on each of its files while
//! it runs (`File::lock_shared`), which costs it nothing and lets the updater see it.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::apply::{ApplyError, FileOp, Layout, apply_module, failpoint, io_error};
use crate::journal::sync_parent;
use crate::paths;
use crate::state::{InstalledModule, InstalledState};

/// When a deferred upgrade can be completed \[0092\]-\[0096\].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// A plug-in the plug-in manager can restart: stop it, replace, start it \[0096\].
    PluginRestart,
    /// The program's next start, before it runs (its launcher runs `upgram apply-pending`).
    ProgramStart,
    /// The program's exit (it launches `upgram apply-pending --wait-pid` before exiting).
    ProgramExit,
    /// The running `upgram` replaces itself when it exits \[0120\].
    SelfUpdate,
    /// A reboot: kernel-mode files, replaced at the next start of the system (a boot service
    /// runs `upgram apply-pending --trigger reboot`) \[0093\].
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

/// Whether a file can be replaced now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// Nobody uses it: replace it now.
    Free,
    /// It is in use; it can be replaced at this trigger.
    Busy(Trigger),
}

/// Tells whether a file of an installation is in use, and if so when it can be replaced (C11:
/// embedders supply their own, e.g. asking their plug-in manager or the operating system).
pub trait InUseCheck: Send + Sync {
    /// Whether `path`, file `file` of `module`, is in use. A file that does not exist is free.
    fn check(&self, module: &str, file: &str, path: &Path) -> Usage;
}

/// The default in-use check: a file is busy while another process holds an advisory lock on it.
#[derive(Debug, Clone)]
pub struct AdvisoryLock {
    /// The trigger a busy file waits for.
    pub trigger: Trigger,
    /// Per-module triggers that override it (e.g. a driver module waits for a reboot).
    pub modules: BTreeMap<String, Trigger>,
}

impl Default for AdvisoryLock {
    /// Busy files wait for the program's exit.
    fn default() -> Self {
        Self { trigger: Trigger::ProgramExit, modules: BTreeMap::new() }
    }
}

impl InUseCheck for AdvisoryLock {
    fn check(&self, module: &str, _file: &str, path: &Path) -> Usage {
        let Ok(file) = fs::File::open(path) else { return Usage::Free };
        match file.try_lock() {
            Err(fs::TryLockError::WouldBlock) => Usage::Busy(self.modules.get(module).copied().unwrap_or(self.trigger)),
            // Locked by us just now (released when `file` closes), or locks unsupported here.
            Ok(()) | Err(fs::TryLockError::Error(_)) => Usage::Free,
        }
    }
}

/// Nothing is ever in use (for installations no program runs from, and for tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NeverInUse;

impl InUseCheck for NeverInUse {
    fn check(&self, _module: &str, _file: &str, _path: &Path) -> Usage {
        Usage::Free
    }
}

/// The embedder's plug-in manager (C11, \[0096\]): stops a plug-in so its files can be replaced,
/// and starts it again afterwards.
pub trait PluginManager: Send + Sync {
    /// Stops plug-in `module` and releases its files.
    fn stop(&self, module: &str) -> Result<(), String>;
    /// Starts plug-in `module` again (after its upgrade, or after a failed one, at its old
    /// version).
    fn start(&self, module: &str) -> Result<(), String>;
}

/// A plug-in manager made of two commands (from the configuration): each runs directly, without
/// a shell, with the module id as its last argument and in `UPGRAM_MODULE`.
#[derive(Debug, Clone)]
pub struct CommandPluginManager {
    /// The stop command and its arguments.
    pub stop: Vec<String>,
    /// The start command and its arguments.
    pub start: Vec<String>,
}

impl CommandPluginManager {
    fn run(command: &[String], module: &str) -> Result<(), String> {
        let Some((program, args)) = command.split_first() else { return Err("no command configured".into()) };
        let status = std::process::Command::new(program)
            .args(args)
            .arg(module)
            .env("UPGRAM_MODULE", module)
            .stdin(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("{program}: {e}"))?;
        if status.success() { Ok(()) } else { Err(format!("`{program}` for {module} ended with {status}")) }
    }
}

impl PluginManager for CommandPluginManager {
    fn stop(&self, module: &str) -> Result<(), String> {
        Self::run(&self.stop, module)
    }

    fn start(&self, module: &str) -> Result<(), String> {
        Self::run(&self.start, module)
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
}

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
        let path = paths::resolve(&layout.root, op.file())?;
        if let Usage::Busy(t) = check.check(module, op.file(), &path) {
            trigger = trigger.max(Some(t));
            busy.push(op.file().to_owned());
        }
    }
    Ok(trigger.map(|t| (t, busy)))
}

/// Records `module`'s upgrade as pending: its staged payloads are copied under
/// `ROOT/.upgram/pending/<module>/` and synced, then the state file records it (replacing any
/// stale pending upgrade of the module). A crash in between leaves payloads no state refers
/// to, which [`clean_orphans`] removes.
pub fn defer(
    layout: &Layout,
    module: &str,
    ops: &[FileOp],
    after: InstalledModule,
    trigger: Trigger,
    busy: Vec<String>,
    waits_for: Vec<String>,
) -> Result<PendingUpgrade, ApplyError> {
    Layout::check_module(module)?;
    purge(layout, module)?;
    let folder = layout.pending(module);
    fs::create_dir_all(&folder).map_err(io_error(module, &folder))?;
    let mut kept = Vec::with_capacity(ops.len());
    for op in ops {
        kept.push(match op {
            FileOp::Replace { file, staged, sha256, executable } => {
                let copy = folder.join(sha256);
                fs::copy(staged, &copy).map_err(io_error(module, &copy))?;
                copy_permissions(staged, &copy).map_err(io_error(module, &copy))?;
                fs::File::open(&copy).and_then(|f| f.sync_all()).map_err(io_error(module, &copy))?;
                FileOp::Replace { file: file.clone(), staged: copy, sha256: sha256.clone(), executable: *executable }
            }
            FileOp::Delete { .. } => op.clone(),
        });
    }
    sync_parent(&folder.join("x")).map_err(io_error(module, &folder))?;
    failpoint("defer:files");
    let mut state = InstalledState::load(&layout.state)?;
    let seq = state.pending.values().map(|p| p.seq + 1).max().unwrap_or(0);
    let pending = PendingUpgrade { trigger, seq, busy, waits_for, ops: kept, after };
    state.pending.insert(module.to_owned(), pending.clone());
    state.save(&layout.state)?;
    failpoint("defer:state");
    Ok(pending)
}

fn copy_permissions(from: &Path, to: &Path) -> io::Result<()> {
    fs::set_permissions(to, fs::metadata(from)?.permissions())
}

/// Removes `module`'s pending upgrade, if any: its entry in the state, then its payloads.
pub fn purge(layout: &Layout, module: &str) -> Result<bool, ApplyError> {
    let mut state = InstalledState::load(&layout.state)?;
    let had = state.pending.remove(module).is_some();
    if had {
        state.save(&layout.state)?;
    }
    remove_payloads(layout, module)?;
    Ok(had)
}

fn remove_payloads(layout: &Layout, module: &str) -> Result<(), ApplyError> {
    crate::apply::remove_folder(module, &layout.pending(module))
}

/// Removes pending payloads no pending upgrade refers to (left by a crash, or by an upgrade
/// completed just before a crash). Run by [`crate::apply::recover`].
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

/// What became of one pending upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingOutcome {
    /// Completed: the module is at its new version.
    Applied {
        /// The module.
        module: String,
        /// Its new version.
        version: String,
    },
    /// Still waiting, and why (a file still busy, a dependency still pending).
    Waiting {
        /// The module.
        module: String,
        /// Why.
        reason: String,
    },
    /// The apply failed and was rolled back; the upgrade stays pending.
    Failed {
        /// The module.
        module: String,
        /// Why.
        reason: String,
    },
}

/// Completes the pending upgrades waiting for `trigger` (every trigger when `None`), in the
/// order they were recorded, each all or nothing. A file still in use keeps its module waiting;
/// a plug-in is stopped and started again through `plugins` around its upgrade.
pub fn apply_pending(
    layout: &Layout,
    trigger: Option<Trigger>,
    check: &dyn InUseCheck,
    plugins: Option<&dyn PluginManager>,
) -> Result<Vec<PendingOutcome>, ApplyError> {
    let state = InstalledState::load(&layout.state)?;
    let mut queue: Vec<(String, PendingUpgrade)> =
        state.pending.into_iter().filter(|(_, p)| trigger.is_none_or(|t| p.trigger == t)).collect();
    queue.sort_by_key(|(_, p)| p.seq);
    let mut outcomes = Vec::new();
    for (module, pending) in queue {
        let still = InstalledState::load(&layout.state)?.pending;
        if let Some(dep) = pending.waits_for.iter().find(|d| still.contains_key(*d)) {
            let reason = format!("its dependency {dep} is still pending");
            outcomes.push(PendingOutcome::Waiting { module, reason });
            continue;
        }
        outcomes.push(complete(layout, &module, pending, check, plugins)?);
    }
    Ok(outcomes)
}

/// Completes one pending upgrade now if its files are free (stopping and starting a plug-in
/// around it through `plugins` when it waits for a plug-in restart).
pub fn complete(
    layout: &Layout,
    module: &str,
    pending: PendingUpgrade,
    check: &dyn InUseCheck,
    plugins: Option<&dyn PluginManager>,
) -> Result<PendingOutcome, ApplyError> {
    let manager = plugins.filter(|_| pending.trigger == Trigger::PluginRestart);
    if let Some(manager) = manager
        && let Err(reason) = manager.stop(module)
    {
        let reason = format!("the plug-in manager could not stop it: {reason}");
        return Ok(PendingOutcome::Waiting { module: module.to_owned(), reason });
    }
    let outcome = apply_now(layout, module, pending, check);
    if let Some(manager) = manager
        && let Err(reason) = manager.start(module)
    {
        tracing::warn!(module, "the plug-in manager could not start it again: {reason}");
    }
    outcome
}

fn apply_now(
    layout: &Layout,
    module: &str,
    pending: PendingUpgrade,
    check: &dyn InUseCheck,
) -> Result<PendingOutcome, ApplyError> {
    if let Some((_, busy)) = busy_files(layout, module, &pending.ops, check)? {
        let reason = format!("still in use: {}", busy.join(", "));
        return Ok(PendingOutcome::Waiting { module: module.to_owned(), reason });
    }
    let version = pending.after.version.clone();
    match apply_module(layout, module, &pending.ops, pending.after) {
        Ok(()) => {
            remove_payloads(layout, module)?;
            Ok(PendingOutcome::Applied { module: module.to_owned(), version })
        }
        Err(e @ (ApplyError::Io { .. } | ApplyError::Path(_))) => {
            Ok(PendingOutcome::Failed { module: module.to_owned(), reason: e.to_string() })
        }
        Err(e) => Err(e),
    }
}

/// The pending payload folder of an installation.
impl Layout {
    /// `ROOT/.upgram/pending`.
    pub fn pending_root(&self) -> PathBuf {
        self.root.join(".upgram").join("pending")
    }

    /// The pending payloads of `module`.
    pub fn pending(&self, module: &str) -> PathBuf {
        self.pending_root().join(module)
    }
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

    #[test]
    fn the_advisory_lock_check_sees_another_holder_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.bin");
        std::fs::write(&path, b"x").unwrap();
        let check = AdvisoryLock {
            modules: BTreeMap::from([("driver".to_owned(), Trigger::Reboot)]),
            ..AdvisoryLock::default()
        };
        assert_eq!(check.check("app", "app.bin", &path), Usage::Free);
        assert_eq!(check.check("app", "gone", &dir.path().join("gone")), Usage::Free);
        let holder = fs::File::open(&path).unwrap();
        holder.lock_shared().unwrap();
        assert_eq!(check.check("app", "app.bin", &path), Usage::Busy(Trigger::ProgramExit));
        assert_eq!(check.check("driver", "app.bin", &path), Usage::Busy(Trigger::Reboot));
        drop(holder);
        assert_eq!(check.check("app", "app.bin", &path), Usage::Free);
    }

    #[test]
    fn module_ids_that_name_no_folder_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        for id in [".", "..", "...", ""] {
            let error = defer(&layout, id, &[], InstalledModule::default(), Trigger::Reboot, vec![], vec![]);
            assert!(matches!(error, Err(ApplyError::ModuleId(_))), "{id:?}");
            assert!(matches!(apply_module(&layout, id, &[], InstalledModule::default()), Err(ApplyError::ModuleId(_))));
        }
        assert!(dir.path().read_dir().unwrap().next().is_none(), "nothing written");
    }
}

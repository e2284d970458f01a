//! [`Installation`]: one handle on one installation, owning its [`Layout`], its lock and its
//! state in memory.
//!
//! - [`Installation::open_locked`] takes the lock (failing at once if another process holds
//!   it), reads the state (a corrupt state file is an error before anything changes), then
//!   repairs whatever a crash interrupted. It is the only path that runs recovery.
//! - [`Installation::open_read_only`] takes no lock and repairs nothing: it reads the state and
//!   reports the upgrades a crash left unfinished ([`Installation::interrupted`]). It cannot
//!   change the installation.
//!
//! Applying, deferring, completing pending upgrades and installer runs are its methods; each
//! saves the state once per change. They block (file work with fsync, installers, plug-in
//! commands): from async code run them on a blocking thread, as [`crate::flows`] does. The
//! handle is cheap to clone; clones share one lock and one state.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use thiserror::Error;

use crate::apply::defer::{self, PendingOutcome, Waiting};
use crate::apply::engine::{self, VerifyError};
use crate::apply::package::InstallResult;
use crate::apply::recovery::{self, Recovered};
use crate::apply::{ApplyError, selfupdate};
use crate::fsutil::remove_tree;
use crate::hooks::{InUseCheck, PluginManager};
use crate::layout::Layout;
use crate::state::{FileOp, InstalledModule, InstalledState, PendingUpgrade, StateError, Trigger};

/// Why an installation could not be opened.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum InstallationError {
    /// The lock could not be taken: the bookkeeping folder cannot be written (a read-only
    /// installation ends here, before anything changes).
    #[error("cannot lock the installation: {}: {source}; nothing changed", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the lock.
    #[error("another upgram is working on this installation ({} is locked); try again when it is done", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The state file is unreadable or corrupt; nothing was changed.
    #[error(transparent)]
    State(#[from] StateError),
    /// Repairing an interrupted upgrade failed.
    #[error("recovering an interrupted upgrade failed: {0}")]
    Recovery(#[source] ApplyError),
}

/// The lock file, held while a process changes the installation; released when dropped, or by
/// the operating system when the process dies.
#[derive(Debug)]
struct Lock {
    _file: fs::File,
}

impl Lock {
    fn take(layout: &Layout) -> Result<Self, InstallationError> {
        let path = layout.lock_file();
        let lock_error = |source| InstallationError::Lock { path: path.clone(), source };
        fs::create_dir_all(layout.meta()).map_err(lock_error)?;
        let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(lock_error)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(InstallationError::Locked { path }),
            Err(fs::TryLockError::Error(e)) => Err(lock_error(e)),
        }
    }
}

#[derive(Debug)]
struct Inner {
    layout: Layout,
    state: InstalledState,
    lock: Option<Lock>,
    recovered: Vec<Recovered>,
}

/// One installation, opened with its lock (to change it) or read-only.
#[derive(Debug, Clone)]
pub struct Installation {
    inner: Arc<Mutex<Inner>>,
}

impl Installation {
    /// Opens the installation at `root` to change it: takes its lock, reads its state, and
    /// repairs whatever a crash interrupted ([`Installation::recovered`] says what).
    pub fn open_locked(root: &Path) -> Result<Self, InstallationError> {
        let layout = Layout::new(root);
        let lock = Lock::take(&layout)?;
        let mut state = InstalledState::load(&layout.state_file())?;
        let recovered = recovery::recover(&layout, &mut state).map_err(InstallationError::Recovery)?;
        // The rollout bucket is drawn once: kept at once by an installation that has a state
        // file, with the first save by a new one.
        if state.draw_bucket() && layout.state_file().exists() {
            state.save(&layout.state_file())?;
        }
        Ok(Self::from_inner(Inner { layout, state, lock: Some(lock), recovered }))
    }

    /// Opens the installation at `root` to look at it: no lock, no recovery, no change.
    pub fn open_read_only(root: &Path) -> Result<Self, InstallationError> {
        let layout = Layout::new(root);
        let state = InstalledState::load(&layout.state_file())?;
        Ok(Self::from_inner(Inner { layout, state, lock: None, recovered: vec![] }))
    }

    /// Opens the installation at `root` with its lock when the lock is free, else read-only
    /// (another process is changing it): what a check that may save hints does.
    pub fn open_locked_or_read_only(root: &Path) -> Result<Self, InstallationError> {
        match Self::open_locked(root) {
            Err(InstallationError::Locked { .. }) => Self::open_read_only(root),
            opened => opened,
        }
    }

    fn from_inner(inner: Inner) -> Self {
        Self { inner: Arc::new(Mutex::new(inner)) }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the state half-changed: every change is saved whole.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The inner state, if this handle may change the installation.
    fn writable(&self) -> Result<MutexGuard<'_, Inner>, ApplyError> {
        let inner = self.inner();
        if inner.lock.is_none() {
            return Err(ApplyError::ReadOnly { root: inner.layout.root().to_owned() });
        }
        Ok(inner)
    }

    /// The installation's paths.
    pub fn layout(&self) -> Layout {
        self.inner().layout.clone()
    }

    /// The installation root.
    pub fn root(&self) -> PathBuf {
        self.inner().layout.root().to_owned()
    }

    /// Whether this handle holds the lock (and so may change the installation).
    pub fn is_locked(&self) -> bool {
        self.inner().lock.is_some()
    }

    /// A copy of the state as it is now.
    pub fn state(&self) -> InstalledState {
        self.inner().state.clone()
    }

    /// Installed module `id`, if it is installed.
    pub fn module(&self, id: &str) -> Option<InstalledModule> {
        self.inner().state.modules.get(id).cloned()
    }

    /// The pending upgrade of module `id`, if one waits.
    pub fn pending(&self, id: &str) -> Option<PendingUpgrade> {
        self.inner().state.pending.get(id).cloned()
    }

    /// What opening the installation repaired.
    pub fn recovered(&self) -> Vec<Recovered> {
        self.inner().recovered.clone()
    }

    /// The modules whose upgrade a crash interrupted and that recovery has not repaired yet
    /// (a read-only handle sees them; opening with the lock repairs them).
    pub fn interrupted(&self) -> Vec<String> {
        let layout = self.layout();
        recovery::journals(&layout)
            .iter()
            .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect()
    }

    /// Changes the state with `change` and saves it (server hints, cookies).
    pub fn update_state(&self, change: impl FnOnce(&mut InstalledState)) -> Result<(), ApplyError> {
        let mut inner = self.writable()?;
        change(&mut inner.state);
        let path = inner.layout.state_file();
        inner.state.save(&path)?;
        Ok(())
    }

    /// Applies `ops` to `module`, all or nothing, and records `after` as the module's state.
    pub fn apply(&self, module: &str, ops: &[FileOp], after: InstalledModule) -> Result<(), ApplyError> {
        let mut inner = self.writable()?;
        let Inner { layout, state, .. } = &mut *inner;
        engine::apply_module(layout, state, module, ops, after)
    }

    /// Runs an install package for `module` under `timeout`, with a journal around it; on
    /// success the state takes `after`.
    pub fn install_package(
        &self,
        module: &str,
        program: &Path,
        args: &[String],
        after: InstalledModule,
        timeout: Duration,
    ) -> Result<InstallResult, ApplyError> {
        let mut inner = self.writable()?;
        let Inner { layout, state, .. } = &mut *inner;
        engine::install_package(layout, state, module, program, args, after, timeout)
    }

    /// The busy files of `ops` and the trigger `module` must wait for, if any is busy.
    pub fn busy_files(
        &self,
        module: &str,
        ops: &[FileOp],
        check: &dyn InUseCheck,
    ) -> Result<Option<(Trigger, Vec<String>)>, ApplyError> {
        defer::busy_files(&self.inner().layout, module, ops, check)
    }

    /// Records `module`'s upgrade as pending until `waiting.trigger`, its payloads kept.
    pub fn defer(
        &self,
        module: &str,
        ops: &[FileOp],
        after: InstalledModule,
        waiting: Waiting,
    ) -> Result<PendingUpgrade, ApplyError> {
        let mut inner = self.writable()?;
        let Inner { layout, state, .. } = &mut *inner;
        defer::defer(layout, state, module, ops, after, waiting)
    }

    /// Drops `module`'s pending upgrade and its payloads; whether there was one.
    pub fn purge_pending(&self, module: &str) -> Result<bool, ApplyError> {
        let mut inner = self.writable()?;
        let Inner { layout, state, .. } = &mut *inner;
        defer::purge(layout, state, module)
    }

    /// Completes `module`'s pending upgrade now if its files are free.
    pub fn complete_pending(
        &self,
        module: &str,
        check: &dyn InUseCheck,
        plugins: Option<&dyn PluginManager>,
    ) -> Result<Option<PendingOutcome>, ApplyError> {
        let mut inner = self.writable()?;
        let Inner { layout, state, .. } = &mut *inner;
        let Some(pending) = state.pending.get(module).cloned() else { return Ok(None) };
        defer::complete(layout, state, module, pending, check, plugins).map(Some)
    }

    /// Completes the pending upgrades waiting for `trigger` (every trigger when `None`), in the
    /// order they were recorded.
    pub fn apply_pending(
        &self,
        trigger: Option<Trigger>,
        check: &dyn InUseCheck,
        plugins: Option<&dyn PluginManager>,
    ) -> Result<Vec<PendingOutcome>, ApplyError> {
        let mut inner = self.writable()?;
        let Inner { layout, state, .. } = &mut *inner;
        defer::apply_pending(layout, state, trigger, check, plugins)
    }

    /// Removes the staged downloads (once every module is in place or pending).
    pub fn remove_downloads(&self) -> Result<(), ApplyError> {
        let inner = self.writable()?;
        let staging = inner.layout.staging();
        remove_tree(&staging).map_err(|source| ApplyError::Cleanup { path: staging, source })
    }

    /// Whether every file of installed module `module` is on disk with its recorded hash
    /// (`Ok(false)` when it is not installed).
    pub fn verify(&self, module: &str) -> Result<bool, VerifyError> {
        let inner = self.inner();
        match inner.state.modules.get(module) {
            Some(installed) => engine::verify_module(&inner.layout, installed).map(|()| true),
            None => Ok(false),
        }
    }

    /// The new `upgram` binary waiting to replace `exe`, if a self-update is pending.
    pub fn pending_successor(&self, exe: &Path) -> Option<PathBuf> {
        let inner = self.inner();
        selfupdate::pending_successor(&inner.layout, &inner.state, exe)
    }
}

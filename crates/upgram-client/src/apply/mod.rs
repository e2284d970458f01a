//! Changing an installation: one module's file list applied all or nothing ([`engine`]),
//! install packages ([`package`]), upgrades that wait for a trigger because a file is in use
//! ([`defer`]), the running `upgram` replaced by its successor ([`selfupdate`]), and the repair
//! of whatever a crash interrupted ([`recovery`]).
//!
//! These are the blocking building blocks of [`crate::installation::Installation`], which owns
//! the lock and the state and is what embedders call; everything here takes the installation's
//! [`crate::layout::Layout`] and its in-memory [`crate::state::InstalledState`], and saves the state once per change.
//!
//! Crash tests: when the environment variable `UPGRAM_FAILPOINT` names a step (`apply:begin`,
//! `apply:backup:N`, `apply:install:N`, `apply:commit`, `apply:state`, `recover:undo:N`,
//! `recover:forward`, `package:begin`, `package:ran`, `package:done`, `defer:files`,
//! `defer:state`), the process aborts right after that step's journal record, as `kill -9`
//! would stop it. Unset, it costs one environment lookup per step. Two more make a write fail
//! as a full disk would (ENOSPC), for the full-disk tests where no small file system can be
//! mounted: `enospc:stage` (writing any staged payload) and `enospc:apply:N` (writing op N's
//! new file beside its target).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::journal::JournalError;
use crate::layout::UnusableModuleId;
use crate::paths::PathError;
use crate::state::{FileOp, InstalledModule, StateError};

pub mod defer;
pub mod engine;
pub mod package;
pub mod recovery;
pub mod selfupdate;

pub use crate::failpoint::FAILPOINT_VAR;
pub(crate) use crate::failpoint::{failpoint, injected_enospc};

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
    /// A module id that cannot name a folder (`.` or `..`).
    #[error(transparent)]
    ModuleId(#[from] UnusableModuleId),
    /// The installation was opened read-only (without its lock): nothing may change it.
    #[error("the installation at {} was opened read-only; open it with its lock to change it", root.display())]
    ReadOnly {
        /// The installation root.
        root: PathBuf,
    },
    /// Bookkeeping no longer needed (staged downloads) could not be removed; nothing was undone.
    #[error("could not remove {}: {source}", path.display())]
    Cleanup {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// An earlier upgrade of this module was interrupted: run `upgram recover` first.
    #[error("module `{module}` has an unfinished upgrade ({}): run `upgram recover`", journal.display())]
    Unfinished {
        /// The module.
        module: String,
        /// Its journal.
        journal: PathBuf,
    },
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

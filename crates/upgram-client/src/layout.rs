//! Where an installation keeps its bookkeeping: every path under `ROOT/.upgram/`, named once.
//!
//! ```text
//! ROOT/.upgram/state.json            what is installed (crate::state)
//! ROOT/.upgram/lock                  held while a process changes the installation
//! ROOT/.upgram/journal/<module>.journal   the write-ahead journal of an upgrade in progress
//! ROOT/.upgram/backup/<module>/      files moved aside by an upgrade until it commits
//! ROOT/.upgram/staging/<sha256>      payloads downloaded and verified, not yet applied
//! ROOT/.upgram/pending/<module>/     payloads of an upgrade waiting for its trigger
//! ROOT/.upgram/self-update.log       what the new upgram did when it replaced the old one
//! ```

use std::path::{Path, PathBuf};

use thiserror::Error;

/// The name of the bookkeeping folder under an installation root.
const META: &str = ".upgram";

/// A module id that cannot name a folder of the bookkeeping (`.`, `..`, or one with a path
/// separator): the wire allows such ids (SPEC.md §4.2), but no module folder can carry them.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("module id `{0}` is not usable as a folder name; refused")]
pub struct UnusableModuleId(pub String);

/// The paths of one installation's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout of the installation at `root`.
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_owned() }
    }

    /// The installation root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `ROOT/.upgram`.
    pub fn meta(&self) -> PathBuf {
        self.root.join(META)
    }

    /// The state file.
    pub fn state_file(&self) -> PathBuf {
        self.meta().join("state.json")
    }

    /// The lock file.
    pub fn lock_file(&self) -> PathBuf {
        self.meta().join("lock")
    }

    /// The journal folder.
    pub fn journals(&self) -> PathBuf {
        self.meta().join("journal")
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

    /// Where install packages are copied to be run.
    pub fn package_runs(&self) -> PathBuf {
        self.staging().join("run")
    }

    /// The folder of every pending upgrade's payloads.
    pub fn pending_root(&self) -> PathBuf {
        self.meta().join("pending")
    }

    /// The pending payloads of `module`.
    pub fn pending(&self, module: &str) -> PathBuf {
        self.pending_root().join(module)
    }

    /// The log of the new `upgram` that completes a self-update.
    pub fn self_update_log(&self) -> PathBuf {
        self.meta().join("self-update.log")
    }

    /// Refuses module ids that would name the bookkeeping folders themselves (`.`, `..`) or
    /// leave them (`/`, `\`).
    pub fn check_module(module: &str) -> Result<(), UnusableModuleId> {
        if module.is_empty() || module.bytes().all(|b| b == b'.') || module.contains(['/', '\\']) {
            return Err(UnusableModuleId(module.to_owned()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_ids_that_name_no_folder_are_refused() {
        for bad in ["", ".", "..", "...", "a/b", "a\\b"] {
            assert!(Layout::check_module(bad).is_err(), "{bad:?}");
        }
        for good in ["a", ".a", "a..b", "pdf.view"] {
            assert!(Layout::check_module(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn every_path_is_under_the_bookkeeping_folder() {
        let layout = Layout::new(Path::new("/opt/app"));
        for path in [
            layout.state_file(),
            layout.lock_file(),
            layout.journal("m"),
            layout.backups("m"),
            layout.staging(),
            layout.pending("m"),
            layout.self_update_log(),
        ] {
            assert!(path.starts_with("/opt/app/.upgram"), "{}", path.display());
        }
    }
}

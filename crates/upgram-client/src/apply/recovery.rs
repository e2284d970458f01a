//! Repairing whatever a crash interrupted, from the journals: a committed upgrade is finished
//! (state written, backups removed), an uncommitted one is undone from its backups, an
//! interrupted install package is judged by the installation (untouched: may run again;
//! changed: the module is marked interrupted), and pending payloads no pending upgrade refers
//! to are removed.
//!
//! Only [`crate::installation::Installation::open_locked`] runs it, with the installation's
//! lock held.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use super::engine::{finish, undo};
use super::{ApplyError, Record, failpoint};
use crate::journal;
use crate::layout::Layout;
use crate::paths;
use crate::staging::hash_file;
use crate::state::InstalledState;

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

impl Recovered {
    /// The module.
    pub fn module(&self) -> &str {
        match self {
            Self::Finished(m) | Self::RolledBack(m) | Self::InstallNotStarted(m) | Self::InstallInterrupted(m) => m,
        }
    }

    /// What was done, as a word: `finished`, `rolled-back`, `install-not-started` or
    /// `install-interrupted`.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Finished(_) => "finished",
            Self::RolledBack(_) => "rolled-back",
            Self::InstallNotStarted(_) => "install-not-started",
            Self::InstallInterrupted(_) => "install-interrupted",
        }
    }
}

/// The journals of upgrades a crash interrupted, in order (module id order).
pub fn journals(layout: &Layout) -> Vec<PathBuf> {
    let mut journals: Vec<PathBuf> = match fs::read_dir(layout.journals()) {
        Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    journals.retain(|p| p.extension().is_some_and(|e| e == "journal"));
    journals.sort();
    journals
}

/// Repairs every upgrade a crash interrupted; `state` is the installation's, loaded, and is
/// saved when a repair changes it.
pub fn recover(layout: &Layout, state: &mut InstalledState) -> Result<Vec<Recovered>, ApplyError> {
    let mut done = Vec::new();
    for path in journals(layout) {
        let (records, _) = journal::read::<Record>(&path)?;
        if let Some(Record::Package { module, mut after, recorded }) = records.first().cloned() {
            if let Some(Record::PackageDone { restart }) = records.get(1) {
                after.restart_needed = *restart;
                finish(layout, state, &module, after)?;
                done.push(Recovered::Finished(module));
            } else {
                done.push(recover_package(layout, state, &module, &recorded)?);
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
            finish(layout, state, &module, after)?;
            done.push(Recovered::Finished(module));
        } else {
            undo(layout, &module, &ops, &existed, &folders)?;
            journal::remove(&path)?;
            done.push(Recovered::RolledBack(module));
        }
    }
    super::defer::clean_orphans(layout, state)?;
    Ok(done)
}

/// After a crash while a package ran: did it change any recorded file?
fn recover_package(
    layout: &Layout,
    state: &mut InstalledState,
    module: &str,
    recorded: &BTreeMap<String, String>,
) -> Result<Recovered, ApplyError> {
    let untouched = recorded.iter().all(|(id, sha)| {
        paths::resolve(layout.root(), id)
            .ok()
            .and_then(|p| hash_file(&p).ok())
            .is_some_and(|(found, _)| found.to_hex() == *sha)
    });
    if untouched {
        return Ok(Recovered::InstallNotStarted(module.to_owned()));
    }
    if let Some(entry) = state.modules.get_mut(module) {
        entry.interrupted = true;
    }
    state.save(&layout.state_file())?;
    Ok(Recovered::InstallInterrupted(module.to_owned()))
}

//! What an embedder plugs into an update: how to tell a file is in use, how to stop and start
//! a plug-in, whether to take optional upgrades, and who watches downloads.
//!
//! Every hook is shared (`Arc`), so an update can hand it to the blocking threads that apply
//! modules. [`Hooks::default`] is what the `upgram` command uses without configuration:
//! advisory locks tell busy files, which wait for the program's exit; no plug-in manager;
//! optional upgrades declined; no progress shown.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

pub use crate::staging::{NoProgress, Progress};
use crate::state::Trigger;

/// Whether a file can be replaced now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// Nobody uses it: replace it now.
    Free,
    /// It is in use; it can be replaced at this trigger.
    Busy(Trigger),
}

/// Tells whether a file of an installation is in use, and if so when it can be replaced
/// (embedders supply their own, e.g. asking their plug-in manager or the operating system).
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

/// Why the plug-in manager could not stop or start a plug-in.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PluginError {
    /// No command is configured for this.
    #[error("no plug-in {0} command is configured")]
    NotConfigured(&'static str),
    /// The command could not be started.
    #[error("`{program}` could not start: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The command ran and failed.
    #[error("`{program}` for {module} ended with {status}")]
    Failed {
        /// The program.
        program: String,
        /// The module it was run for.
        module: String,
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// The embedder's own manager failed.
    #[error("{0}")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The embedder's plug-in manager: stops a plug-in so its files can be replaced, and starts it
/// again afterwards. Its calls may block (they run on a blocking thread).
pub trait PluginManager: Send + Sync {
    /// Stops plug-in `module` and releases its files.
    fn stop(&self, module: &str) -> Result<(), PluginError>;
    /// Starts plug-in `module` again (after its upgrade, or after a failed one, at its old
    /// version).
    fn start(&self, module: &str) -> Result<(), PluginError>;
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
    fn run(command: &[String], what: &'static str, module: &str) -> Result<(), PluginError> {
        let Some((program, args)) = command.split_first() else { return Err(PluginError::NotConfigured(what)) };
        let status = std::process::Command::new(program)
            .args(args)
            .arg(module)
            .env("UPGRAM_MODULE", module)
            .stdin(std::process::Stdio::null())
            .status()
            .map_err(|source| PluginError::Spawn { program: program.clone(), source })?;
        if status.success() {
            Ok(())
        } else {
            Err(PluginError::Failed { program: program.clone(), module: module.to_owned(), status })
        }
    }
}

impl PluginManager for CommandPluginManager {
    fn stop(&self, module: &str) -> Result<(), PluginError> {
        Self::run(&self.stop, "stop", module)
    }

    fn start(&self, module: &str) -> Result<(), PluginError> {
        Self::run(&self.start, "start", module)
    }
}

/// Decides whether optional upgrades are taken (forced ones always are).
pub trait Confirm: Send + Sync {
    /// Whether to take the optional upgrades of `optional` (module id, from, to).
    fn take_optional(&self, optional: &[(String, Option<String>, String)]) -> bool;
}

/// Takes or declines every optional upgrade without asking.
#[derive(Debug, Clone, Copy)]
pub struct Always(pub bool);

impl Confirm for Always {
    fn take_optional(&self, _optional: &[(String, Option<String>, String)]) -> bool {
        self.0
    }
}

/// The parts of an update an embedder chooses.
#[derive(Clone)]
pub struct Hooks {
    /// Tells whether a file is in use (default: [`AdvisoryLock`]).
    pub in_use: Arc<dyn InUseCheck>,
    /// Stops and starts plug-ins, so a busy plug-in is upgraded at once instead of waiting.
    pub plugins: Option<Arc<dyn PluginManager>>,
    /// Whether optional upgrades are taken (default: declined).
    pub confirm: Arc<dyn Confirm>,
    /// Told how every payload download goes (progress bars).
    pub progress: Arc<dyn Progress>,
    /// The running `upgram` binary: an upgrade that replaces it goes through the self-update
    /// hand-over (the `upgram` command sets it; embedders leave it `None`).
    pub self_exe: Option<PathBuf>,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            in_use: Arc::new(AdvisoryLock::default()),
            plugins: None,
            confirm: Arc::new(Always(false)),
            progress: Arc::new(NoProgress),
            self_exe: None,
        }
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks").field("plugins", &self.plugins.is_some()).field("self_exe", &self.self_exe).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_failing_plug_in_command_keeps_its_cause() {
        let manager =
            CommandPluginManager { stop: vec!["false".into()], start: vec!["/nonexistent/upgram-test".into()] };
        assert!(matches!(manager.stop("pdf"), Err(PluginError::Failed { ref module, .. }) if module == "pdf"));
        let spawn = manager.start("pdf").unwrap_err();
        assert!(matches!(&spawn, PluginError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound));
        assert!(std::error::Error::source(&spawn).is_some(), "the I/O error is kept as the source");
        let none = CommandPluginManager { stop: vec![], start: vec![] };
        assert!(matches!(none.stop("pdf"), Err(PluginError::NotConfigured("stop"))));
    }
}

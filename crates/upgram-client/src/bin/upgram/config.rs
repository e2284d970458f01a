//! The `upgram` configuration file: servers, pinned public keys, the installation root, and
//! what to do with busy files.
//!
//! ```toml
//! servers = ["updates.example.com:7953", "192.0.2.10:7953"]
//! public_keys = ["<64 hex digits>"]
//! root = "/opt/app"            # the state file is ROOT/.upgram/state.json
//! deadline_secs = 20
//! nonce_bound = false
//!
//! # Busy files: when a file is in use (another process holds an advisory lock on it),
//! # its module waits for this trigger; per-module triggers override it.
//! defer_trigger = "program-exit"
//! defer_triggers = { driver = "reboot", pdfview = "plugin-restart" }
//! # The plug-in manager: run with the module id as last argument, no shell.
//! plugin_stop = ["/opt/app/bin/app-ctl", "stop-plugin"]
//! plugin_start = ["/opt/app/bin/app-ctl", "start-plugin"]
//! ```
//!
//! Command-line flags override the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use upgram_client::config::ConfigError;
use upgram_client::hooks::{AdvisoryLock, CommandPluginManager};
use upgram_client::state::Trigger;

/// The configuration as written in the file (every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `host:port` of each server, in order of preference.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Pinned Ed25519 public keys, 64 hex digits each.
    #[serde(default)]
    pub public_keys: Vec<String>,
    /// The installation root.
    pub root: Option<PathBuf>,
    /// Deadline of one check, in seconds.
    pub deadline_secs: Option<u64>,
    /// Ask for nonce-bound signatures.
    pub nonce_bound: Option<bool>,
    /// The trigger a module with a busy file waits for (default `program-exit`).
    pub defer_trigger: Option<Trigger>,
    /// Per-module triggers for busy files.
    #[serde(default)]
    pub defer_triggers: BTreeMap<String, Trigger>,
    /// The command that stops a plug-in (module id appended).
    #[serde(default)]
    pub plugin_stop: Vec<String>,
    /// The command that starts a plug-in (module id appended).
    #[serde(default)]
    pub plugin_start: Vec<String>,
}

impl ConfigFile {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
        toml::from_str(&text).map_err(|e| ConfigError::Invalid { path: path.to_owned(), message: e.to_string() })
    }
}

impl ConfigFile {
    /// The in-use check this configuration describes.
    pub fn in_use_check(&self) -> AdvisoryLock {
        AdvisoryLock {
            trigger: self.defer_trigger.unwrap_or(Trigger::ProgramExit),
            modules: self.defer_triggers.clone(),
        }
    }

    /// The plug-in manager this configuration describes, if both commands are set.
    pub fn plugin_manager(&self) -> Option<CommandPluginManager> {
        (!self.plugin_stop.is_empty() && !self.plugin_start.is_empty())
            .then(|| CommandPluginManager { stop: self.plugin_stop.clone(), start: self.plugin_start.clone() })
    }
}

//! The `upgram` configuration file (C12): servers, pinned public keys, the installation root.
//!
//! ```toml
//! servers = ["updates.example.com:7953", "192.0.2.10:7953"]
//! public_keys = ["<64 hex digits>"]
//! root = "/opt/app"            # the state file is ROOT/.upgram/state.json
//! deadline_secs = 20
//! nonce_bound = false
//!
//! # Busy files (C9): when a file is in use (another process holds an advisory lock on it),
//! # its module waits for this trigger; per-module triggers override it.
//! defer_trigger = "program-exit"
//! defer_triggers = { driver = "reboot", pdfview = "plugin-restart" }
//! # The plug-in manager: run with the module id as last argument, no shell.
//! plugin_stop = ["/opt/app/bin/app-ctl", "stop-plugin"]
//! plugin_start = ["/opt/app/bin/app-ctl", "start-plugin"]
//! ```
//!
//! Command-line flags override the file.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// Why the configuration is unusable.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// A value is unusable.
    #[error("{0}")]
    Value(String),
}

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
    pub defer_trigger: Option<crate::defer::Trigger>,
    /// Per-module triggers for busy files.
    #[serde(default)]
    pub defer_triggers: std::collections::BTreeMap<String, crate::defer::Trigger>,
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
    pub fn in_use_check(&self) -> crate::defer::AdvisoryLock {
        crate::defer::AdvisoryLock {
            trigger: self.defer_trigger.unwrap_or(crate::defer::Trigger::ProgramExit),
            modules: self.defer_triggers.clone(),
        }
    }

    /// The plug-in manager this configuration describes, if both commands are set.
    pub fn plugin_manager(&self) -> Option<crate::defer::CommandPluginManager> {
        (!self.plugin_stop.is_empty() && !self.plugin_start.is_empty()).then(|| crate::defer::CommandPluginManager {
            stop: self.plugin_stop.clone(),
            start: self.plugin_start.clone(),
        })
    }
}

/// Resolves `host:port` strings to addresses.
pub fn resolve_servers(servers: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
    let mut out = Vec::new();
    for server in servers {
        let addrs = server
            .to_socket_addrs()
            .map_err(|e| ConfigError::Value(format!("server `{server}`: {e} (expected host:port)")))?;
        out.extend(addrs);
    }
    Ok(out)
}

/// Parses a public key written as 64 hex digits.
pub fn parse_public_key(text: &str) -> Result<[u8; 32], ConfigError> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key).map_err(|_| {
        ConfigError::Value(format!("public key `{text}`: expected 64 hex digits (from `upgram-server keygen`)"))
    })?;
    Ok(key)
}

/// The state file of the installation at `root`.
pub fn state_path(root: &Path) -> PathBuf {
    root.join(".upgram").join("state.json")
}

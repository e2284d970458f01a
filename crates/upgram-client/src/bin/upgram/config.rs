//! The `upgram` configuration file: servers, pinned public keys, the installation root, and
//! what to do with busy files.
//!
//! ```toml
//! servers = ["updates.example.com:7953", "192.0.2.10:7953"]
//! public_keys = ["<64 hex digits>"]
//! root = "/opt/app"            # the state file is ROOT/.upgram/state.json
//! deadline_secs = 20
//! nonce_bound = false
//! channel = "beta"             # the release channel to follow; default "stable"
//! reports = true               # send install reports (outcome, versions, channel, band)
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
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use upgram_client::apply::selfupdate;
use upgram_client::config::{ConfigError, parse_public_key, resolve_servers};
use upgram_client::hooks::{AdvisoryLock, CommandPluginManager, Confirm, Hooks};
use upgram_client::{Client, ClientError, Installation};

use crate::args::{Local, Remote};
use crate::progress_bars::DownloadBars;
use crate::{installation_error, usage_error};
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
    /// The release channel to follow (default `stable`).
    pub channel: Option<String>,
    /// Send install reports, the outcomes of upgrade attempts (default `true`).
    pub reports: Option<bool>,
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

/// The settings of one command: the configuration file, with the flags over it.
pub struct Settings {
    /// The configuration file, with the flags over it.
    pub file: ConfigFile,
    /// Whether to print JSON.
    pub json: bool,
}

/// The configuration file a command reads: `--config`, else `$UPGRAM_CONFIG`, else
/// `$XDG_CONFIG_HOME/upgram/config.toml` (`~/.config/…` when unset), else
/// `/etc/upgram/config.toml`. A file named by the flag or the variable must exist; the others
/// are read when they do. `None`: no configuration file.
fn config_path(flag: Option<PathBuf>) -> Option<PathBuf> {
    if flag.is_some() {
        return flag;
    }
    if let Some(path) = std::env::var_os("UPGRAM_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| Path::new(p).is_absolute())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| Path::new(&h).join(".config")));
    let candidates = xdg.map(|dir| dir.join("upgram/config.toml")).into_iter().chain([PathBuf::from(SYSTEM_CONFIG)]);
    candidates.into_iter().find(|path| path.is_file())
}

/// The system-wide configuration file, read when no other is found.
const SYSTEM_CONFIG: &str = "/etc/upgram/config.toml";

impl Local {
    /// The settings these flags give, over the configuration file they name (or the first one
    /// found).
    pub fn settings(self) -> Result<Settings, ExitCode> {
        let mut file = match config_path(self.config) {
            Some(path) => {
                let mut file = ConfigFile::load(&path).map_err(usage_error)?;
                // A relative root is the file's business: it is relative to the file's folder.
                if let Some(root) = file.root.take() {
                    let folder = path.parent().unwrap_or(Path::new(""));
                    file.root = Some(if root.is_relative() { folder.join(root) } else { root });
                }
                tracing::debug!(config = %path.display(), "configuration file read");
                file
            }
            None => ConfigFile::default(),
        };
        file.root = self.root.or(file.root);
        Ok(Settings { file, json: self.json })
    }
}

impl Remote {
    /// The settings these flags give, over the configuration file.
    pub fn settings(self) -> Result<Settings, ExitCode> {
        let mut settings = self.local.settings()?;
        let file = &mut settings.file;
        if !self.servers.is_empty() {
            file.servers = self.servers;
        }
        if !self.public_keys.is_empty() {
            file.public_keys = self.public_keys;
        }
        file.deadline_secs = self.deadline.or(file.deadline_secs);
        Ok(settings)
    }
}

impl Settings {
    /// The installation root, or a usage error.
    pub fn root(&self) -> Result<&Path, ExitCode> {
        self.file
            .root
            .as_deref()
            .ok_or_else(|| usage_error("no installation root: pass --root DIR or set `root` in the configuration file"))
    }

    /// The installation root, which must exist, or a usage error.
    pub fn existing_root(&self) -> Result<&Path, ExitCode> {
        let root = self.root()?;
        if !root.is_dir() {
            return Err(usage_error(format!(
                "the installation root {} does not exist (check --root or `root` in the configuration file)",
                root.display()
            )));
        }
        Ok(root)
    }

    /// Opens the installation with its lock (repairing what a crash interrupted).
    pub fn open(&self) -> Result<Installation, ExitCode> {
        let installation = Installation::open_locked(self.root()?).map_err(installation_error)?;
        for item in installation.recovered() {
            eprintln!("upgram: recovered an interrupted upgrade of {}: {}", item.module(), item.action());
        }
        Ok(installation)
    }

    /// The client the settings describe, or what is missing.
    pub fn client(&self) -> Result<Client, ExitCode> {
        let servers = resolve_servers(&self.file.servers).map_err(usage_error)?;
        if servers.is_empty() {
            return Err(usage_error("no server: pass --server HOST:PORT or set `servers` in the configuration file"));
        }
        if self.file.public_keys.is_empty() {
            return Err(usage_error(
                "no public key: pin the server's key with --public-key HEX or `public_keys` in the configuration file \
                 (`upgram-server key-info --key FILE` prints it)",
            ));
        }
        let mut builder = Client::builder();
        for server in servers {
            builder = builder.server(server);
        }
        for key in &self.file.public_keys {
            builder = builder.public_key(parse_public_key(key).map_err(usage_error)?);
        }
        builder = builder.nonce_bound(self.file.nonce_bound.unwrap_or(false));
        if let Some(channel) = &self.file.channel {
            builder = builder.channel(channel.clone());
        }
        builder = builder.reports(self.file.reports.unwrap_or(true));
        if let Some(secs) = self.file.deadline_secs {
            if secs == 0 {
                return Err(usage_error("the deadline must be at least one second (--deadline, `deadline_secs`)"));
            }
            builder = builder.deadline(Duration::from_secs(secs));
        }
        builder.build().map_err(|e| match e {
            ClientError::Config(_) => usage_error(
                "a public key is not a valid Ed25519 key: check --public-key or `public_keys` in the configuration file",
            ),
            other => usage_error(other),
        })
    }

    /// The hooks the configuration describes, with progress bars unless the output is JSON.
    pub fn hooks(&self, bars: Arc<DownloadBars>) -> Hooks {
        Hooks {
            in_use: Arc::new(self.file.in_use_check()),
            plugins: self.file.plugin_manager().map(|m| Arc::new(m) as _),
            confirm: Arc::new(AskOnTerminal),
            progress: bars,
            self_exe: selfupdate::running_exe(),
        }
    }
}

/// Asks on the terminal whether to take the optional upgrades.
struct AskOnTerminal;

impl Confirm for AskOnTerminal {
    fn take_optional(&self, optional: &[(String, Option<String>, String)]) -> bool {
        let n = optional.len();
        eprintln!("{n} optional upgrade{} available:", if n == 1 { "" } else { "s" });
        for (id, from, to) in optional {
            eprintln!("  {id}: {} -> {to}", from.as_deref().unwrap_or("-"));
        }
        eprint!("Apply these optional upgrades too? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).is_ok() && matches!(answer.trim(), "y" | "Y" | "yes")
    }
}

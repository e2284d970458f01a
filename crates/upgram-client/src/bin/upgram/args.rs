//! The `upgram` command's arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use upgram_client::state::Trigger;

/// Exit codes and configuration, shown at the end of `upgram --help`.
const AFTER_HELP: &str = r#"Exit codes:
  0    success (for `check`: everything is up to date)
  1    the operation failed (no verified reply, a fallback or download failed, a module failed)
  2    usage or configuration error
  3    the installation's state file is unreadable
  100  `check` found upgrades

Configuration file (TOML), the first found of: --config FILE, $UPGRAM_CONFIG,
$XDG_CONFIG_HOME/upgram/config.toml (default ~/.config/upgram/config.toml),
/etc/upgram/config.toml. Keys (flags override them):
  servers = ["HOST:PORT", ...]         the servers, in order of preference
  public_keys = ["HEX", ...]           pinned Ed25519 keys, 64 hex digits (upgram-server key-info)
  root = "DIR"                         the installation root (relative: to the file's folder)
  deadline_secs = 20                   the deadline of one check, in seconds
  nonce_bound = false                  ask for signatures bound to a nonce of each query
  defer_trigger = "program-exit"       what a module with a file in use waits for
  defer_triggers = { ID = "TRIGGER" }  the same, per module
  plugin_stop = ["PROGRAM", ...]       stops a plug-in (its module id appended)
  plugin_start = ["PROGRAM", ...]      starts it again

Logs go to standard error: RUST_LOG=upgram_client=debug, or -v / -vv; -q for errors only."#;

/// The upgram client: checks for, downloads and applies signed module upgrades.
#[derive(Parser)]
#[command(name = "upgram", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// More log output on standard error (-v: debug, -vv: trace); RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors on standard error.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Start a server on loopback with the demo catalog and upgrade a scratch installation.
    #[cfg(feature = "demo")]
    Demo,
    /// Ask the servers what is new for this installation (changes nothing but hints and cookies).
    ///
    /// Exit code 100 when upgrades are available, 0 when everything is up to date.
    Check(Remote),
    /// Show what is installed and what waits.
    Status(Local),
    /// Check, plan and apply upgrades: forced ones always, optional ones with --yes (or after
    /// confirmation on a terminal); dependencies first; each module all or nothing.
    ///
    /// Without --yes and without a terminal to ask on, optional upgrades are not applied: the
    /// summary lists them as skipped.
    Update {
        #[command(flatten)]
        remote: Remote,
        /// Take every optional upgrade without asking.
        #[arg(short, long, conflicts_with = "only_forced")]
        yes: bool,
        /// Take forced upgrades only, without asking.
        #[arg(long)]
        only_forced: bool,
        /// Print the plan; download and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Install modules that are not installed yet, with the modules they require.
    ///
    /// Dependencies go first; forced upgrades the servers announce are applied too, as `update`
    /// would. A module already installed is left as it is.
    Install {
        #[command(flatten)]
        remote: Remote,
        /// The modules to install: ID, or ID@VERSION to require that version (the servers offer
        /// a module's latest release).
        #[arg(required = true, value_name = "ID[@VERSION]")]
        modules: Vec<String>,
        /// Print the plan; download and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Finish or undo whatever a crash interrupted (also run at the start of every command).
    Recover(Local),
    /// Complete the upgrades waiting for a trigger (files that were in use): run by the program
    /// at its exit or next start, by a boot service after a reboot, or by the new upgram
    /// replacing the old one. A file still in use keeps its module waiting.
    ApplyPending {
        #[command(flatten)]
        local: Local,
        /// Only the upgrades waiting for this trigger (default: every trigger).
        #[arg(long, value_enum, value_name = "TRIGGER")]
        trigger: Option<TriggerArg>,
        /// First wait for this process (the exiting program, or the old upgram) to exit.
        #[arg(long, value_name = "PID")]
        wait_pid: Option<u32>,
        /// Kill the process of --wait-pid if it has not exited after this many seconds.
        #[arg(long, value_name = "SECS", default_value_t = 30, requires = "wait_pid")]
        kill_after: u64,
    },
    /// Check that this binary works (run on a new upgram before it replaces the old one).
    #[command(hide = true)]
    SelfTest,
    /// Decode a datagram (binary or hex) or an XML body and print what it says, as JSON.
    /// Signatures are shown, not verified.
    Inspect {
        /// The file to read, or `-` for standard input.
        #[arg(value_name = "FILE|-")]
        input: PathBuf,
    },
}

/// What an upgrade waits for, as `--trigger` takes it.
#[derive(Clone, Copy, ValueEnum)]
pub enum TriggerArg {
    /// The next boot (a boot service runs apply-pending).
    Reboot,
    /// The program's exit.
    ProgramExit,
    /// The program's next start.
    ProgramStart,
    /// A restart of the plug-in by its manager.
    PluginRestart,
    /// The new upgram replacing the running one.
    SelfUpdate,
}

impl From<TriggerArg> for Trigger {
    fn from(arg: TriggerArg) -> Self {
        match arg {
            TriggerArg::Reboot => Trigger::Reboot,
            TriggerArg::ProgramExit => Trigger::ProgramExit,
            TriggerArg::ProgramStart => Trigger::ProgramStart,
            TriggerArg::PluginRestart => Trigger::PluginRestart,
            TriggerArg::SelfUpdate => Trigger::SelfUpdate,
        }
    }
}

/// The options of commands that work on the installation only; flags override the
/// configuration file.
#[derive(Args)]
pub struct Local {
    /// The configuration file (default: $UPGRAM_CONFIG, $XDG_CONFIG_HOME/upgram/config.toml,
    /// /etc/upgram/config.toml; keys in `upgram --help`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The installation root (its state is DIR/.upgram/state.json) [config: root].
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print one JSON object for scripts instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The options of commands that ask the servers.
#[derive(Args)]
pub struct Remote {
    #[command(flatten)]
    pub local: Local,
    /// A server (repeatable; replaces the file's list) [config: servers].
    #[arg(long = "server", value_name = "HOST:PORT")]
    pub servers: Vec<String>,
    /// A pinned public key, 64 hex digits, from `upgram-server key-info` (repeatable; replaces
    /// the file's list) [config: public_keys].
    #[arg(long = "public-key", value_name = "HEX")]
    pub public_keys: Vec<String>,
    /// The deadline of the check, in seconds [config: deadline_secs; default: 20].
    #[arg(long, value_name = "SECS")]
    pub deadline: Option<u64>,
}

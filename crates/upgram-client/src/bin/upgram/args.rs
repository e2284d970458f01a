//! The `upgram` command's arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The upgram client.
#[derive(Parser)]
#[command(name = "upgram", version, about)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Start a server on loopback with the demo catalog and check a scratch installation.
    #[cfg(feature = "demo")]
    Demo,
    /// Ask the servers what is new for this installation (changes nothing but hints and cookies).
    Check(Common),
    /// Show what is installed.
    Status(Common),
    /// Check, plan and apply upgrades: forced ones always, optional ones with --yes (or after
    /// confirmation on a terminal); dependencies first; each module all or nothing.
    Update {
        #[command(flatten)]
        common: Common,
        /// Take every optional upgrade without asking.
        #[arg(long, conflicts_with = "only_forced")]
        yes: bool,
        /// Take forced upgrades only.
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
        common: Common,
        /// The modules to install (module ids).
        #[arg(required = true, value_name = "ID")]
        modules: Vec<String>,
        /// Print the plan; download and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Finish or undo whatever a crash interrupted (also run at the start of every command).
    Recover(Common),
    /// Complete the upgrades waiting for a trigger (files that were in use): run by the program
    /// at its exit or next start, by a boot service after a reboot, or by the new upgram
    /// replacing the old one. A file still in use keeps its module waiting.
    ApplyPending {
        #[command(flatten)]
        common: Common,
        /// Only the upgrades waiting for this trigger: reboot, program-exit, program-start,
        /// plugin-restart, self-update (default: every trigger).
        #[arg(long)]
        trigger: Option<String>,
        /// First wait for this process (the exiting program, or the old upgram) to exit.
        #[arg(long)]
        wait_pid: Option<u32>,
        /// Kill the process of --wait-pid if it has not exited after this many seconds.
        #[arg(long, default_value_t = 30)]
        kill_after: u64,
    },
    /// Check that this binary works (run on a new upgram before it replaces the old one).
    #[command(hide = true)]
    SelfTest,
    /// Decode a datagram (binary or hex) or an XML body and print what it says, as JSON.
    /// Signatures are shown, not verified.
    Inspect {
        /// The file to read, or `-` for standard input.
        input: PathBuf,
    },
}

/// Options shared by `check` and `status`; flags override the configuration file.
#[derive(Args)]
pub struct Common {
    /// Configuration file (TOML: servers, public_keys, root, deadline_secs, nonce_bound).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A server, host:port (repeatable; replaces the file's list).
    #[arg(long = "server")]
    pub servers: Vec<String>,
    /// A pinned public key, 64 hex digits (repeatable; replaces the file's list).
    #[arg(long = "public-key")]
    pub public_keys: Vec<String>,
    /// The installation root (its state is ROOT/.upgram/state.json).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Deadline of the check, in seconds.
    #[arg(long)]
    pub deadline: Option<u64>,
    /// Print JSON for scripts instead of a table.
    #[arg(long)]
    pub json: bool,
}

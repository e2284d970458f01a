//! `upgram`: the upgram client command. It parses arguments, calls the library's flows
//! ([`upgram_client::flows`]) and prints what they did.
//!
//! ```text
//! upgram demo                      a server on loopback with the demo catalog, and an upgrade
//! upgram check  [--config F] [--server H:P]... [--public-key HEX]... [--root DIR] [--deadline S] [--json]
//! upgram status [--config F] [--root DIR] [--json]
//! upgram update [-y | --yes | --only-forced] [--dry-run] (+ the options of check)
//! upgram install ID[@VERSION]... [--dry-run] (+ the options of check)
//! upgram recover [--config F] [--root DIR] [--json]
//! upgram apply-pending [--trigger T] [--wait-pid PID [--kill-after SECS]] [--config F] [--root DIR] [--json]
//! upgram inspect FILE|-
//! ```
//!
//! Every command but `demo` and `inspect` (always JSON) prints a table for people, or with
//! `--json` exactly one JSON object on standard output for scripts (shapes in README.md);
//! `update` and `install` draw a progress bar per download on standard error when it is a
//! terminal and `--json` is off, and copy what install packages printed (kept in a log under
//! the installation) to standard error. Errors and logs (`RUST_LOG`, `-v`, `-q`) go to standard
//! error in every mode.
//!
//! The configuration file is `--config`, else `$UPGRAM_CONFIG`, else
//! `$XDG_CONFIG_HOME/upgram/config.toml`, else `/etc/upgram/config.toml`.
//!
//! Exit codes: 0 success (for `check`: everything is up to date); 100 `check` found upgrades
//! (as `dnf check-update` does); 1 the operation failed (no server answered, verification or
//! fallback fetch failed); 2 usage or configuration error; 3 the state file is unreadable.

mod args;
mod config;
mod output;
mod progress_bars;
mod summary;

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Parser;
use upgram_client::apply::selfupdate;
use upgram_client::flows::{self, FlowError, NotInstallable, Optional, Outcome, UpdateReport};
use upgram_client::hooks::Hooks;
use upgram_client::{Client, ClientError, Installation, InstallationError};
use upgram_core::body::Status;

use crate::args::{Cli, Command, Local, Remote, TriggerArg};
use crate::config::Settings;
use crate::output::print_line;

/// Exit code: upgrades are available.
const EXIT_UPGRADES: u8 = 100;
/// Exit code: the operation failed.
const EXIT_FAILED: u8 = 1;
/// Exit code: usage or configuration error.
const EXIT_USAGE: u8 = 2;
/// Exit code: the state file is unreadable.
const EXIT_STATE: u8 = 3;

pub(crate) fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("upgram: {message}");
    ExitCode::from(EXIT_USAGE)
}

pub(crate) fn fail(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("upgram: {error}");
    ExitCode::from(EXIT_FAILED)
}

pub(crate) fn installation_error(error: InstallationError) -> ExitCode {
    match error {
        InstallationError::State(_) => {
            eprintln!("upgram: {error}");
            ExitCode::from(EXIT_STATE)
        }
        other => fail(other),
    }
}

fn flow_error(error: FlowError) -> ExitCode {
    match error {
        FlowError::Installation(e) => installation_error(e),
        FlowError::Check(e @ ClientError::ModuleId(_)) => usage_error(e),
        e @ FlowError::NotInstallable { why: NotInstallable::BadVersion(_), .. } => usage_error(e),
        other => fail(other),
    }
}

/// Runs `flow` to its end on a runtime of this thread (blocking work goes to its blocking pool).
fn run<T>(flow: impl Future<Output = Result<T, FlowError>>) -> Result<T, ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    runtime.block_on(flow).map_err(flow_error)
}

fn check(settings: Settings) -> Result<ExitCode, ExitCode> {
    let client = settings.client()?;
    // A check during another process's update still answers; it only saves nothing.
    let installation = Installation::open_locked_or_read_only(settings.root()?).map_err(installation_error)?;
    let report = run(flows::check(&installation, &client))?;
    let results = report.results(&installation.state());
    print_line(&output::check(&results, &report, settings.json));
    let upgrades = results.iter().any(|r| r.status == Status::Update && !r.downgrade_refused);
    Ok(if upgrades { ExitCode::from(EXIT_UPGRADES) } else { ExitCode::SUCCESS })
}

fn status(settings: Settings) -> Result<ExitCode, ExitCode> {
    let installation = Installation::open_read_only(settings.existing_root()?).map_err(installation_error)?;
    print_line(&output::status(&installation.state(), &installation.interrupted(), settings.json));
    Ok(ExitCode::SUCCESS)
}

/// `update` and `install`: the flow with bars, then the plan (dry run) or the summary, then
/// the hand-over to a new upgram if one was staged.
fn upgrade(
    settings: &Settings,
    dry_run: bool,
    install: bool,
    flow: impl AsyncFnOnce(&Installation, &Client, &Hooks) -> Result<UpdateReport, FlowError>,
) -> Result<ExitCode, ExitCode> {
    let client = settings.client()?;
    let installation = settings.open()?;
    let bars = Arc::new(progress_bars::DownloadBars::new(!settings.json && std::io::stderr().is_terminal()));
    let hooks = settings.hooks(bars.clone());
    let started = SystemTime::now();
    let report = run(flow(&installation, &client, &hooks))?;
    if !settings.json {
        echo_installer_logs(&installation, &report, started);
    }
    let already = install.then_some(report.already_installed.as_slice());
    if dry_run {
        print_line(&summary::plan(&report.plan, &report.declined, already, settings.json));
        return Ok(ExitCode::SUCCESS);
    }
    let summary = summary::RunSummary::new(&report.outcomes, &[&report.plan[..], &report.declined[..]].concat(), &bars)
        .with_patches(report.patches);
    print_line(&summary.render(already, report.declined.len(), settings.json));
    let layout = installation.layout();
    // The new upgram takes the installation's lock once this process has exited.
    drop(installation);
    if let Some(successor) = &report.self_update {
        match selfupdate::hand_over(&layout, successor, Duration::from_secs(30)) {
            Ok(pid) => eprintln!(
                "upgram: the new upgram (process {pid}) replaces this one when it exits; its log is {}",
                layout.self_update_log().display()
            ),
            Err(e) => eprintln!(
                "upgram: could not start the new upgram ({e}); run `upgram apply-pending --trigger self-update` to finish"
            ),
        }
    }
    Ok(if report.failed() { ExitCode::from(EXIT_FAILED) } else { ExitCode::SUCCESS })
}

/// Copies to standard error what the install packages this run started printed (each kept in
/// its log under the installation).
fn echo_installer_logs(installation: &Installation, report: &UpdateReport, started: SystemTime) {
    let root = installation.layout().root().to_owned();
    for outcome in &report.outcomes {
        let to = match &outcome.outcome {
            Outcome::Upgraded(_, to) | Outcome::UpgradedNeedsRestart(_, to) => to.clone(),
            Outcome::Failed(_) => match report.plan.iter().find(|l| l.id == outcome.id) {
                Some(line) => line.to.clone(),
                None => continue,
            },
            _ => continue,
        };
        let log = upgram_client::apply::package::installer_log(&root, &outcome.id, &to);
        let fresh = std::fs::metadata(&log).and_then(|m| m.modified()).is_ok_and(|at| at >= started);
        let Ok(text) = std::fs::read(&log) else { continue };
        if !fresh || text.is_empty() {
            continue;
        }
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "upgram: the install package of {} {to} printed ({}):", outcome.id, log.display());
        let _ = stderr.write_all(&text);
        if !text.ends_with(b"\n") {
            let _ = writeln!(stderr);
        }
    }
}

fn apply_pending(
    settings: Settings,
    trigger: Option<TriggerArg>,
    wait_pid: Option<u32>,
    kill_after: u64,
) -> Result<ExitCode, ExitCode> {
    let trigger = trigger.map(Into::into);
    if let Some(pid) = wait_pid {
        let how = selfupdate::wait_for_exit(pid, Duration::from_secs(kill_after));
        eprintln!("upgram: process {pid} is gone ({how:?})");
    }
    let installation = settings.open()?;
    let hooks = Hooks { self_exe: None, ..settings.hooks(Arc::new(progress_bars::DownloadBars::new(false))) };
    let outcomes = run(flows::apply_pending(&installation, trigger, &hooks))?;
    print_line(&output::pending(&outcomes, settings.json));
    let failed = outcomes.iter().any(|o| matches!(o, upgram_client::apply::defer::PendingOutcome::Failed { .. }));
    Ok(if failed { ExitCode::from(EXIT_FAILED) } else { ExitCode::SUCCESS })
}

fn recover(settings: Settings) -> Result<ExitCode, ExitCode> {
    let done = flows::recover(settings.root()?).map_err(installation_error)?;
    print_line(&output::recovered(&done, settings.json));
    Ok(ExitCode::SUCCESS)
}

/// `upgram self-test`: the checks a new binary passes before it replaces the running one.
fn self_test() -> ExitCode {
    match selfupdate::self_check() {
        Ok(()) => {
            print_line(&format!("{} {}", selfupdate::SELF_TEST_OK, env!("CARGO_PKG_VERSION")));
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn inspect(input: &Path) -> ExitCode {
    let bytes = if input.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).map(|_| bytes)
    } else {
        std::fs::read(input)
    };
    let bytes = match bytes {
        Ok(bytes) => bytes,
        Err(e) => return usage_error(format!("cannot read {}: {e}", input.display())),
    };
    match upgram_client::inspect::inspect(&bytes) {
        Ok(value) => {
            print_line(&serde_json::to_string_pretty(&value).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("upgram inspect: {}: {e}", input.display());
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Runs `command` with the settings of `local`.
fn with_local(local: Local, command: impl FnOnce(Settings) -> Result<ExitCode, ExitCode>) -> ExitCode {
    local.settings().and_then(command).unwrap_or_else(|code| code)
}

/// Runs `command` with the settings of `remote`.
fn with_remote(remote: Remote, command: impl FnOnce(Settings) -> Result<ExitCode, ExitCode>) -> ExitCode {
    remote.settings().and_then(command).unwrap_or_else(|code| code)
}

/// Logs on standard error: `RUST_LOG` if set, else warnings (`-q`: errors; `-v`: debug; `-vv`:
/// trace, of upgram's crates). No colour codes unless standard error is a terminal.
fn init_logs(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "warn,upgram_client=debug,upgram_core=debug,upgram=debug",
        (false, _) => "warn,upgram_client=trace,upgram_core=trace,upgram=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true)
        .try_init();
}

#[cfg(feature = "demo")]
fn demo() -> ExitCode {
    match upgram_client::demo::run() {
        Ok(()) => ExitCode::SUCCESS,
        // `upgram demo | head`: the reader has what it wanted.
        Err(e) if e.is_closed_output() => ExitCode::SUCCESS,
        Err(e) => fail(format!("demo: {e}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.verbose, cli.quiet);
    match cli.command {
        #[cfg(feature = "demo")]
        Command::Demo => demo(),
        Command::Check(remote) => with_remote(remote, check),
        Command::Status(local) => with_local(local, status),
        Command::Update { remote, yes, only_forced, dry_run } => with_remote(remote, |settings| {
            let optional = match (yes, only_forced) {
                (true, _) => Optional::Take,
                (_, true) => Optional::Decline,
                _ if !settings.json && std::io::stdin().is_terminal() && std::io::stderr().is_terminal() => {
                    Optional::Ask
                }
                _ => Optional::Decline,
            };
            upgrade(&settings, dry_run, false, async |installation, client, hooks| {
                flows::update(installation, client, optional, dry_run, hooks).await
            })
        }),
        Command::Install { remote, modules, dry_run } => with_remote(remote, |settings| {
            upgrade(&settings, dry_run, true, async |installation, client, hooks| {
                flows::install(installation, client, &modules, dry_run, hooks).await
            })
        }),
        Command::Recover(local) => with_local(local, recover),
        Command::ApplyPending { local, trigger, wait_pid, kill_after } => {
            with_local(local, |settings| apply_pending(settings, trigger, wait_pid, kill_after))
        }
        Command::SelfTest => self_test(),
        Command::Inspect { input } => inspect(&input),
    }
}

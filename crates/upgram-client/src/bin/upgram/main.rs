//! `upgram`: the upgram client command. It parses arguments, calls the library's flows
//! ([`upgram_client::flows`]) and prints what they did.
//!
//! ```text
//! upgram demo                      a server on loopback with the demo catalog, and a check
//! upgram check  [--config F] [--server H:P]... [--public-key HEX]... [--root DIR] [--json]
//! upgram status [--config F] [--root DIR] [--json]
//! upgram update [--yes | --only-forced] [--dry-run] (+ the options of check)
//! upgram install ID... [--dry-run] (+ the options of check)
//! upgram recover [--root DIR] [--json]
//! upgram apply-pending [--trigger T] [--wait-pid PID [--kill-after SECS]] [--root DIR] [--json]
//! upgram inspect FILE|-
//! ```
//!
//! Every command but `demo` and `inspect` (always JSON) prints a table for people, or with
//! `--json` one JSON object for scripts (shapes in README.md); `update` and `install` draw a
//! progress bar per download on standard error when it is a terminal and `--json` is off.
//! Errors go to standard error in every mode.
//!
//! Exit codes: 0 success (for `check`: everything is up to date); 100 `check` found upgrades
//! (as `dnf check-update` does); 1 the operation failed (no server answered, verification or
//! fallback fetch failed); 2 usage or configuration error; 3 the state file is unreadable.

mod args;
mod config;
mod output;
mod progress_bars;
mod summary;

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use upgram_client::apply::selfupdate;
use upgram_client::flows::{self, FlowError, Optional, UpdateReport};
use upgram_client::hooks::Hooks;
use upgram_client::state::Trigger;
use upgram_client::{Client, ClientError, Installation, InstallationError};
use upgram_core::body::Status;

use crate::args::{Cli, Command, Common};
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
    let installation = Installation::open_read_only(settings.root()?).map_err(installation_error)?;
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
    let report = run(flow(&installation, &client, &hooks))?;
    let already = install.then_some(report.already_installed.as_slice());
    if dry_run {
        print_line(&summary::plan(&report.plan, already, settings.json));
        return Ok(ExitCode::SUCCESS);
    }
    let summary = summary::RunSummary::new(&report.outcomes, &report.plan, &bars);
    print_line(&summary.render(already, settings.json));
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

fn apply_pending(
    settings: Settings,
    trigger: Option<String>,
    wait_pid: Option<u32>,
    kill_after: u64,
) -> Result<ExitCode, ExitCode> {
    let trigger = trigger.as_deref().map(str::parse::<Trigger>).transpose().map_err(usage_error)?;
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

/// Runs `command` with the settings of `common`.
fn with_settings(common: Common, command: impl FnOnce(Settings) -> Result<ExitCode, ExitCode>) -> ExitCode {
    common.settings().and_then(command).unwrap_or_else(|code| code)
}

fn main() -> ExitCode {
    match Cli::parse().command {
        #[cfg(feature = "demo")]
        Command::Demo => match upgram_client::demo::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("demo: {e}")),
        },
        Command::Check(common) => with_settings(common, check),
        Command::Status(common) => with_settings(common, status),
        Command::Update { common, yes, only_forced, dry_run } => with_settings(common, |settings| {
            let optional = match (yes, only_forced) {
                (true, _) => Optional::Take,
                (_, true) => Optional::Decline,
                _ if std::io::stdin().is_terminal() => Optional::Ask,
                _ => Optional::Decline,
            };
            upgrade(&settings, dry_run, false, async |installation, client, hooks| {
                flows::update(installation, client, optional, dry_run, hooks).await
            })
        }),
        Command::Install { common, modules, dry_run } => with_settings(common, |settings| {
            upgrade(&settings, dry_run, true, async |installation, client, hooks| {
                flows::install(installation, client, &modules, dry_run, hooks).await
            })
        }),
        Command::Recover(common) => with_settings(common, recover),
        Command::ApplyPending { common, trigger, wait_pid, kill_after } => {
            with_settings(common, |settings| apply_pending(settings, trigger, wait_pid, kill_after))
        }
        Command::SelfTest => self_test(),
        Command::Inspect { input } => inspect(&input),
    }
}

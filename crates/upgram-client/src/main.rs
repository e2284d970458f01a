//! `upgram`: the upgram client command (C12).
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

#[cfg(feature = "demo")]
mod demo;
mod progress_bars;
mod summary;

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use upgram_client::apply::{Layout, Recovered, lock, recover};
use upgram_client::config::{ConfigFile, parse_public_key, resolve_servers, state_path};
use upgram_client::defer::{PendingOutcome, Trigger, apply_pending};
use upgram_client::state::InstalledState;
use upgram_client::update::{Hooks, Outcome, PlanLine, plan_lines, update_with};
use upgram_client::{CheckReport, Client, ClientError, ModuleResult};
use upgram_core::body::value::is_valid_module_id;
use upgram_core::body::{ModuleAnswer, Status};
use upgram_core::plan::Choice;

/// Exit code: upgrades are available.
const EXIT_UPGRADES: u8 = 100;
/// Exit code: the operation failed.
const EXIT_FAILED: u8 = 1;
/// Exit code: usage or configuration error.
const EXIT_USAGE: u8 = 2;
/// Exit code: the state file is unreadable.
const EXIT_STATE: u8 = 3;

/// The upgram client.
#[derive(Parser)]
#[command(name = "upgram", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
struct Common {
    /// Configuration file (TOML: servers, public_keys, root, deadline_secs, nonce_bound).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A server, host:port (repeatable; replaces the file's list).
    #[arg(long = "server")]
    servers: Vec<String>,
    /// A pinned public key, 64 hex digits (repeatable; replaces the file's list).
    #[arg(long = "public-key")]
    public_keys: Vec<String>,
    /// The installation root (its state is ROOT/.upgram/state.json).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Deadline of the check, in seconds.
    #[arg(long)]
    deadline: Option<u64>,
    /// Print JSON for scripts instead of a table.
    #[arg(long)]
    json: bool,
}

struct Settings {
    file: ConfigFile,
    json: bool,
}

impl Common {
    fn settings(self) -> Result<Settings, String> {
        let mut file = match &self.config {
            Some(path) => ConfigFile::load(path).map_err(|e| e.to_string())?,
            None => ConfigFile::default(),
        };
        if !self.servers.is_empty() {
            file.servers = self.servers;
        }
        if !self.public_keys.is_empty() {
            file.public_keys = self.public_keys;
        }
        file.root = self.root.or(file.root);
        file.deadline_secs = self.deadline.or(file.deadline_secs);
        Ok(Settings { file, json: self.json })
    }
}

impl Settings {
    fn root(&self) -> Result<&Path, String> {
        self.file
            .root
            .as_deref()
            .ok_or_else(|| "no installation root: pass --root DIR or set `root` in the configuration".into())
    }
}

fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("upgram: {message}");
    ExitCode::from(EXIT_USAGE)
}

fn print_line(text: &str) {
    // A closed pipe (`| head`) is not an error of ours.
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// A plain table: a header, then rows, columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

/// The table of a check's results.
fn results_table(results: &[ModuleResult]) -> String {
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let mut flags = Vec::new();
            if r.forced {
                flags.push("forced");
            }
            if r.dependency {
                flags.push("dependency");
            }
            if r.downgrade_refused {
                flags.push("downgrade-refused");
            }
            vec![
                r.id.clone(),
                r.installed.clone().unwrap_or_else(|| "-".into()),
                r.latest.clone().unwrap_or_else(|| "-".into()),
                r.status.name().into(),
                r.how.clone(),
                flags.join(","),
            ]
        })
        .collect();
    table(&["MODULE", "INSTALLED", "LATEST", "STATUS", "HOW", "FLAGS"], &rows)
}

fn results_json(results: &[ModuleResult], report: &CheckReport) -> serde_json::Value {
    let modules: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id, "installed": r.installed, "latest": r.latest, "status": r.status.name(),
                "how": r.how, "forced": r.forced, "dependency": r.dependency, "downgrade_refused": r.downgrade_refused,
            })
        })
        .collect();
    serde_json::json!({ "modules": modules, "exchanges": report.exchanges, "fallbacks": report.fallbacks })
}

/// Builds the client from the settings, or says what is missing.
fn build_client(settings: &Settings) -> Result<Client, ExitCode> {
    let servers = match resolve_servers(&settings.file.servers) {
        Ok(servers) if !servers.is_empty() => servers,
        Ok(_) => return Err(usage_error("no server: pass --server HOST:PORT or set `servers` in the configuration")),
        Err(e) => return Err(usage_error(e)),
    };
    let mut builder = Client::builder();
    for server in servers {
        builder = builder.server(server);
    }
    for key in &settings.file.public_keys {
        match parse_public_key(key) {
            Ok(key) => builder = builder.public_key(key),
            Err(e) => return Err(usage_error(e)),
        }
    }
    builder = builder.nonce_bound(settings.file.nonce_bound.unwrap_or(false));
    if let Some(secs) = settings.file.deadline_secs {
        builder = builder.deadline(Duration::from_secs(secs));
    }
    builder.build().map_err(usage_error)
}

/// Recovery, then the state: what every command that touches an installation starts with.
fn open_installation(root: &Path) -> Result<InstalledState, ExitCode> {
    let layout = Layout::new(root);
    match recover(&layout) {
        Ok(done) => {
            for item in done {
                eprintln!("upgram: recovered an interrupted upgrade: {item:?}");
            }
        }
        Err(e) => return Err(fail(format!("recovery failed: {e}"))),
    }
    InstalledState::load(&layout.state).map_err(|e| {
        eprintln!("upgram: {e}");
        ExitCode::from(EXIT_STATE)
    })
}

/// Runs a check; saves the server's hints and cookies.
fn run_check(settings: &Settings, root: &Path) -> Result<(Client, InstalledState, CheckReport), ExitCode> {
    run_check_installing(settings, root, &[])
}

/// Runs a check that also asks how to install the modules `install`; saves the server's hints
/// and cookies.
fn run_check_installing(
    settings: &Settings,
    root: &Path,
    install: &[&str],
) -> Result<(Client, InstalledState, CheckReport), ExitCode> {
    let client = build_client(settings)?;
    let mut state = open_installation(root)?;
    client.set_cookie_jar(state.cookie_jar());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    let report = runtime.block_on(client.check_installing(&state, install)).map_err(fail)?;
    report.apply_hints(&mut state);
    state.set_cookie_jar(&client.cookie_jar());
    if let Err(e) = state.save(&state_path(root)) {
        eprintln!("upgram: could not save hints and cookies: {e}");
    }
    Ok((client, state, report))
}

fn check(settings: Settings) -> ExitCode {
    let root = match settings.root() {
        Ok(root) => root.to_owned(),
        Err(e) => return usage_error(e),
    };
    let (_, state, report) = match run_check(&settings, &root) {
        Ok(done) => done,
        Err(code) => return code,
    };
    let results = report.results(&state);
    if settings.json {
        print_line(&results_json(&results, &report).to_string());
    } else {
        print_line(&results_table(&results));
    }
    let upgrades = results.iter().any(|r| r.status == Status::Update && !r.downgrade_refused);
    if upgrades { ExitCode::from(EXIT_UPGRADES) } else { ExitCode::SUCCESS }
}

fn update(settings: Settings, yes: bool, only_forced: bool, dry_run: bool) -> ExitCode {
    let root = match settings.root() {
        Ok(root) => root.to_owned(),
        Err(e) => return usage_error(e),
    };
    // One process at a time changes an installation.
    let _lock = match lock(&Layout::new(&root)) {
        Ok(lock) => lock,
        Err(e) => return fail(e),
    };
    let (client, state, report) = match run_check(&settings, &root) {
        Ok(done) => done,
        Err(code) => return code,
    };
    let answers = report.modules();
    let interactive = !yes && !only_forced && std::io::stdin().is_terminal();
    let mut choice = if yes { Choice::All } else { Choice::OnlyForced };
    if interactive && confirm("Apply optional upgrades too? [y/N] ") {
        choice = Choice::All;
    }
    let lines = match plan_lines(&answers, &state, &choice) {
        Ok(lines) => lines,
        Err(e) => return fail(e),
    };
    if dry_run {
        print_line(&summary::plan(&lines, None, settings.json));
        return ExitCode::SUCCESS;
    }
    apply_plan(&settings, &Layout::new(&root), &client, &answers, &lines, &choice, None)
}

/// Applies the plan with a progress bar per download and prints the summary. `already` lists
/// what `install` found installed already.
fn apply_plan(
    settings: &Settings,
    layout: &Layout,
    client: &Client,
    answers: &[ModuleAnswer<'_>],
    lines: &[PlanLine],
    choice: &Choice<'_>,
    already: Option<&[summary::AlreadyInstalled]>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start: {e}")),
    };
    let bars = progress_bars::DownloadBars::new(!settings.json && std::io::stderr().is_terminal());
    let in_use = settings.file.in_use_check();
    let plugins = settings.file.plugin_manager();
    let exe = upgram_client::selfupdate::running_exe();
    let hooks = Hooks {
        in_use: &in_use,
        plugins: plugins.as_ref().map(|p| p as &dyn upgram_client::defer::PluginManager),
        self_exe: exe.as_deref(),
        progress: &bars,
    };
    let outcomes = match runtime.block_on(update_with(client.fetcher(), layout, answers, choice, hooks)) {
        Ok(outcomes) => outcomes,
        Err(e) => return fail(e),
    };
    let summary = summary::RunSummary::new(&outcomes, lines, &bars);
    print_line(&summary.render(already, settings.json));
    // The new upgram takes the installation's lock once this process has exited.
    let self_update =
        outcomes.iter().any(|o| matches!(o.outcome, Outcome::Deferred { trigger: Trigger::SelfUpdate, .. }));
    if self_update && let Some(exe) = &exe {
        hand_over(layout, exe);
    }
    if summary.failed() { ExitCode::from(EXIT_FAILED) } else { ExitCode::SUCCESS }
}

/// `upgram install`: the modules of `ids` that are not installed, with what they require.
fn install(settings: Settings, ids: &[String], dry_run: bool) -> ExitCode {
    let root = match settings.root() {
        Ok(root) => root.to_owned(),
        Err(e) => return usage_error(e),
    };
    if let Some(bad) = ids.iter().find(|id| !is_valid_module_id(id)) {
        return usage_error(ClientError::ModuleId(bad.clone()));
    }
    let layout = Layout::new(&root);
    let _lock = match lock(&layout) {
        Ok(lock) => lock,
        Err(e) => return fail(e),
    };
    let state = match open_installation(&root) {
        Ok(state) => state,
        Err(code) => return code,
    };
    let (already, missing) = split_installed(&state, ids);
    if missing.is_empty() {
        let text = if dry_run {
            summary::plan(&[], Some(&already), settings.json)
        } else {
            summary::RunSummary::default().render(Some(&already), settings.json)
        };
        print_line(&text);
        return ExitCode::SUCCESS;
    }
    let (client, state, report) = match run_check_installing(&settings, &root, &missing) {
        Ok(done) => done,
        Err(code) => return code,
    };
    let answers = report.modules();
    if let Err(e) = installable(&answers, &missing) {
        return fail(e);
    }
    let choice = Choice::Selected(&missing);
    let lines = match plan_lines(&answers, &state, &choice) {
        Ok(lines) => lines,
        Err(e) => return fail(e),
    };
    if dry_run {
        print_line(&summary::plan(&lines, Some(&already), settings.json));
        return ExitCode::SUCCESS;
    }
    apply_plan(&settings, &layout, &client, &answers, &lines, &choice, Some(&already))
}

/// The modules of `ids` installed already (with their versions), and the others, each once.
fn split_installed<'i>(state: &InstalledState, ids: &'i [String]) -> (Vec<summary::AlreadyInstalled>, Vec<&'i str>) {
    let mut already: Vec<summary::AlreadyInstalled> = Vec::new();
    let mut missing: Vec<&str> = Vec::new();
    for id in ids {
        match state.modules.get(id) {
            Some(_) if already.iter().any(|(a, _)| a == id) => {}
            Some(module) => already.push((id.clone(), module.version.clone())),
            None if missing.contains(&id.as_str()) => {}
            None => missing.push(id),
        }
    }
    (already, missing)
}

/// Whether the servers offer an install of every module of `ids`, or what stops one.
fn installable(answers: &[ModuleAnswer<'_>], ids: &[&str]) -> Result<(), String> {
    for id in ids {
        match answers.iter().find(|a| a.id == *id) {
            Some(answer) if answer.status == Status::Update => {}
            Some(answer) if answer.status == Status::Unknown => {
                return Err(format!("cannot install `{id}`: the servers do not know this module"));
            }
            Some(answer) => {
                let code = answer.code.map_or_else(String::new, |c| format!(" (error code {c})"));
                return Err(format!("cannot install `{id}`: the server answered `{}`{code}", answer.status.name()));
            }
            None => return Err(format!("cannot install `{id}`: no server answered for it")),
        }
    }
    Ok(())
}

/// Starts the new upgram, which replaces this one once it has exited \[0120\].
fn hand_over(layout: &Layout, exe: &Path) {
    let Some(successor) = upgram_client::selfupdate::pending_successor(layout, exe) else { return };
    match upgram_client::selfupdate::hand_over(layout, &successor, Duration::from_secs(30)) {
        Ok(pid) => eprintln!(
            "upgram: the new upgram (process {pid}) replaces this one when it exits; its log is {}",
            layout.root.join(".upgram/self-update.log").display()
        ),
        Err(e) => eprintln!(
            "upgram: could not start the new upgram ({e}); run `upgram apply-pending --trigger self-update` to finish"
        ),
    }
}

fn apply_pending_command(
    settings: Settings,
    trigger: Option<String>,
    wait_pid: Option<u32>,
    kill_after: u64,
) -> ExitCode {
    let root = match settings.root() {
        Ok(root) => root.to_owned(),
        Err(e) => return usage_error(e),
    };
    let trigger = match trigger.as_deref().map(str::parse::<Trigger>).transpose() {
        Ok(trigger) => trigger,
        Err(e) => return usage_error(e),
    };
    if let Some(pid) = wait_pid {
        let how = upgram_client::selfupdate::wait_for_exit(pid, Duration::from_secs(kill_after));
        eprintln!("upgram: process {pid} is gone ({how:?})");
    }
    let layout = Layout::new(&root);
    let _lock = match lock(&layout) {
        Ok(lock) => lock,
        Err(e) => return fail(e),
    };
    if let Err(code) = open_installation(&root) {
        return code;
    }
    let in_use = settings.file.in_use_check();
    let plugins = settings.file.plugin_manager();
    let plugins = plugins.as_ref().map(|p| p as &dyn upgram_client::defer::PluginManager);
    let outcomes = match apply_pending(&layout, trigger, &in_use, plugins) {
        Ok(outcomes) => outcomes,
        Err(e) => return fail(e),
    };
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| match o {
            PendingOutcome::Applied { module, version } => {
                vec![module.clone(), "applied".into(), format!("now {version}")]
            }
            PendingOutcome::Waiting { module, reason } => vec![module.clone(), "waiting".into(), reason.clone()],
            PendingOutcome::Failed { module, reason } => vec![module.clone(), "failed".into(), reason.clone()],
        })
        .collect();
    if settings.json {
        let json: Vec<serde_json::Value> =
            rows.iter().map(|r| serde_json::json!({ "module": r[0], "outcome": r[1], "detail": r[2] })).collect();
        print_line(&serde_json::Value::Array(json).to_string());
    } else if rows.is_empty() {
        print_line("nothing pending");
    } else {
        print_line(&table(&["MODULE", "OUTCOME", "DETAIL"], &rows));
    }
    if outcomes.iter().any(|o| matches!(o, PendingOutcome::Failed { .. })) {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// `upgram self-test`: the checks a new binary passes before it replaces the running one: its
/// cryptography signs and verifies, its decoder reads a datagram it encoded.
fn self_test() -> ExitCode {
    use upgram_core::sign::{KeyRing, ReplySigner};
    use upgram_core::wire::MessageKind;
    let signer = ReplySigner::from_seed(&[7; 32]);
    let body = b"<response/>";
    let block = signer.sign(MessageKind::Response, None, body);
    let mut ring = KeyRing::new();
    ring.add(signer.verifying_key());
    let verified = ring.verify(MessageKind::Response, None, body, &block).is_ok()
        && ring.verify(MessageKind::Response, None, b"<response></response>", &block).is_err();
    let version_ok = "1.2.3".parse::<upgram_core::version::Version<'_>>().is_ok();
    if verified && version_ok {
        print_line(&format!("{} {}", upgram_client::selfupdate::SELF_TEST_OK, env!("CARGO_PKG_VERSION")));
        ExitCode::SUCCESS
    } else {
        fail("self-test failed")
    }
}

fn confirm(question: &str) -> bool {
    eprint!("{question}");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok() && matches!(answer.trim(), "y" | "Y" | "yes")
}

fn recover_command(settings: Settings) -> ExitCode {
    let root = match settings.root() {
        Ok(root) => root.to_owned(),
        Err(e) => return usage_error(e),
    };
    let layout = Layout::new(&root);
    let _lock = match lock(&layout) {
        Ok(lock) => lock,
        Err(e) => return fail(e),
    };
    match recover(&layout) {
        Ok(done) => {
            print_line(&recovered_text(&done, settings.json));
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// What `recover` did: a line, a table, or `{"recovered": [{"module", "action"}]}`.
fn recovered_text(done: &[Recovered], json: bool) -> String {
    let rows: Vec<[&str; 2]> = done
        .iter()
        .map(|item| match item {
            Recovered::Finished(module) => [module.as_str(), "finished"],
            Recovered::RolledBack(module) => [module.as_str(), "rolled-back"],
            Recovered::InstallNotStarted(module) => [module.as_str(), "install-not-started"],
            Recovered::InstallInterrupted(module) => [module.as_str(), "install-interrupted"],
        })
        .collect();
    if json {
        let list: Vec<serde_json::Value> =
            rows.iter().map(|[module, action]| serde_json::json!({ "module": module, "action": action })).collect();
        return serde_json::json!({ "recovered": list }).to_string();
    }
    if rows.is_empty() {
        return "nothing to recover".into();
    }
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| c.to_string()).collect()).collect();
    table(&["MODULE", "ACTION"], &rows)
}

fn fail(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("upgram: {error}");
    ExitCode::from(EXIT_FAILED)
}

fn status(settings: Settings) -> ExitCode {
    let root = match settings.root() {
        Ok(root) => root.to_owned(),
        Err(e) => return usage_error(e),
    };
    let state = match open_installation(&root) {
        Ok(state) => state,
        Err(code) => return code,
    };
    if settings.json {
        print_line(&status_json(&state).to_string());
        return ExitCode::SUCCESS;
    }
    let rows: Vec<Vec<String>> = state
        .modules
        .iter()
        .map(|(id, m)| vec![id.clone(), m.version.clone(), m.files.len().to_string(), m.frequent.join(" ")])
        .collect();
    print_line(&table(&["MODULE", "VERSION", "FILES", "FREQUENT FILES"], &rows));
    if !state.pending.is_empty() {
        let rows: Vec<Vec<String>> = state
            .pending
            .iter()
            .map(|(id, p)| {
                let why = if p.waits_for.is_empty() {
                    format!("in use: {}", p.busy.join(", "))
                } else {
                    format!("waits for {}", p.waits_for.join(", "))
                };
                vec![id.clone(), p.after.version.clone(), p.trigger.to_string(), why]
            })
            .collect();
        print_line("\npending upgrades (`upgram apply-pending` completes them):");
        print_line(&table(&["MODULE", "TO", "TRIGGER", "WHY"], &rows));
    }
    ExitCode::SUCCESS
}

/// `{"modules": [{"id", "version", "files": [{"id", "version", "sha256"}], "frequent",
/// "restart_needed", "interrupted"}], "pending": [{"id", "to", "trigger", "busy", "waits_for"}]}`:
/// the installation, without the cookies of the state file.
fn status_json(state: &InstalledState) -> serde_json::Value {
    let modules: Vec<serde_json::Value> = state
        .modules
        .iter()
        .map(|(id, m)| {
            let files: Vec<serde_json::Value> = m
                .files
                .iter()
                .map(|(file, f)| serde_json::json!({ "id": file, "version": f.version, "sha256": f.sha256 }))
                .collect();
            serde_json::json!({
                "id": id, "version": m.version, "files": files, "frequent": m.frequent,
                "restart_needed": m.restart_needed, "interrupted": m.interrupted,
            })
        })
        .collect();
    let pending: Vec<serde_json::Value> = state
        .pending
        .iter()
        .map(|(id, p)| {
            serde_json::json!({
                "id": id, "to": p.after.version, "trigger": p.trigger.name(), "busy": p.busy, "waits_for": p.waits_for,
            })
        })
        .collect();
    serde_json::json!({ "modules": modules, "pending": pending })
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

/// Runs `command` with the settings of `common`, or reports why they are unusable.
fn with_settings(common: Common, command: impl FnOnce(Settings) -> ExitCode) -> ExitCode {
    match common.settings() {
        Ok(settings) => command(settings),
        Err(e) => usage_error(e),
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        #[cfg(feature = "demo")]
        Command::Demo => match demo::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("demo: {e}")),
        },
        Command::Check(common) => with_settings(common, check),
        Command::Status(common) => with_settings(common, status),
        Command::Update { common, yes, only_forced, dry_run } => {
            with_settings(common, |settings| update(settings, yes, only_forced, dry_run))
        }
        Command::Install { common, modules, dry_run } => {
            with_settings(common, |settings| install(settings, &modules, dry_run))
        }
        Command::Recover(common) => with_settings(common, recover_command),
        Command::ApplyPending { common, trigger, wait_pid, kill_after } => {
            with_settings(common, |settings| apply_pending_command(settings, trigger, wait_pid, kill_after))
        }
        Command::SelfTest => self_test(),
        Command::Inspect { input } => inspect(&input),
    }
}

//! The demo behind `upgram demo`, the README's first command: publishes the demo catalog (the
//! repository's `demo/` folder, built into the binary) into a scratch folder, starts the reference server on loopback (UDP and HTTP, random port),
//! and checks a scratch installation against it, showing each step: a module-level check whose
//! answer is too large for a datagram and arrives as a signed fallback, the signature and the
//! document verified, the server's frequent-file hint taken, a file-level check of that
//! frequent file answered with a record delta, the upgrade plan, dependencies first, and the
//! upgrade itself, applied to the scratch installation and checked file by file. The PDF
//! plug-in is "running" (it holds an advisory lock on a file), so its upgrade waits for a
//! plug-in restart, which the demo's plug-in manager then performs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::RngCore;
use thiserror::Error;
use upgram_core::body::{FileAction, UpgradeInfo};
use upgram_core::cookie::CookieSecret;
use upgram_core::plan::Choice;
use upgram_core::sign::ReplySigner;
use upgram_server::catalog::{self, Catalog};
use upgram_server::server::{Config, CookieSecrets, Shared};

use crate::Client;
use crate::apply::defer::PendingOutcome;
use crate::flows::{self, Optional, Outcome, plan_lines};
use crate::hooks::{AdvisoryLock, Hooks, PluginError, PluginManager};
use crate::installation::Installation;
use crate::layout::Layout;
use crate::state::{InstalledFile, InstalledModule, InstalledState, Trigger};

/// Why the demo stopped.
#[derive(Debug, Error)]
#[error("{message}")]
pub struct DemoError {
    message: String,
    closed_output: bool,
}

impl DemoError {
    /// Whether the demo stopped because its standard output was closed (`upgram demo | head`):
    /// the reader has what it wanted, which is no failure.
    pub fn is_closed_output(&self) -> bool {
        self.closed_output
    }
}

impl From<String> for DemoError {
    fn from(message: String) -> Self {
        Self { message, closed_output: false }
    }
}

impl From<&str> for DemoError {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

// The demo's files, built in by build.rs: `DEMO_FILES`.
include!(concat!(env!("OUT_DIR"), "/demo_files.rs"));

/// Writes the demo's built-in files into `dir` (executable ones executable) and returns it.
fn unpack_demo(dir: &Path) -> Result<PathBuf, DemoError> {
    if DEMO_FILES.is_empty() {
        return Err("this upgram was built without the demo's files (build it from the repository)".into());
    }
    for (rel, content, executable) in DEMO_FILES {
        let path = dir.join(rel);
        let folder = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
        std::fs::write(&path, content).map_err(|e| format!("{}: {e}", path.display()))?;
        #[cfg(unix)]
        if *executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        #[cfg(not(unix))]
        let _ = executable;
    }
    Ok(dir.to_owned())
}

/// Prints a line on standard output; a closed output stops the demo.
fn say(text: &str) -> Result<(), DemoError> {
    use std::io::Write as _;
    writeln!(std::io::stdout().lock(), "{text}")
        .map_err(|e| DemoError { message: format!("standard output: {e}"), closed_output: true })
}

/// [`say`] with `format!` arguments, returning from the caller when the output is closed.
macro_rules! say {
    ($($arg:tt)*) => {
        say(&format!($($arg)*))?
    };
}

fn step(text: &str) -> Result<(), DemoError> {
    say(&format!("\n== {text}"))
}

/// Publishes every release of `publish-demo.sh` in the demo folder `demo` into `catalog_dir`.
fn publish_demo(demo: &Path, catalog_dir: &Path) -> Result<Catalog, DemoError> {
    let script_path = demo.join("publish-demo.sh");
    let script = std::fs::read_to_string(&script_path).map_err(|e| format!("{}: {e}", script_path.display()))?;
    let steps = upgram_server::publish::script_steps(&script, demo, catalog_dir)?;
    for request in &steps {
        upgram_server::publish::publish(request).map_err(|e| e.to_string())?;
    }
    say!("published {} releases of the demo into {}", steps.len(), catalog_dir.display());
    Ok(catalog::load(catalog_dir).map_err(|e| e.to_string())?)
}

/// An installation at the oldest release of every module: its files written under `root` from
/// the catalog's store, and its state.
fn scratch_installation(catalog: &Catalog, catalog_dir: &Path, root: &Path) -> Result<InstalledState, String> {
    let mut state = InstalledState::default();
    for (id, module) in &catalog.modules {
        let Some(first) = module.releases.first() else { continue };
        for file in &first.files {
            let target = root.join(&file.id);
            let blob = catalog::store::blob_path(catalog_dir, &file.blob.sha256);
            std::fs::create_dir_all(target.parent().unwrap_or(root)).map_err(|e| e.to_string())?;
            std::fs::copy(&blob, &target).map_err(|e| format!("{}: {e}", blob.display()))?;
        }
        let files: BTreeMap<String, InstalledFile> = first
            .files
            .iter()
            .map(|f| {
                let file = InstalledFile {
                    version: f.version.to_string(),
                    sha256: f.blob.sha256.to_hex(),
                    executable: f.executable,
                };
                (f.id.clone(), file)
            })
            .collect();
        state.modules.insert(
            id.clone(),
            InstalledModule { version: first.version.to_string(), files, frequent: vec![], ..Default::default() },
        );
    }
    Ok(state)
}

struct RunningServer {
    udp: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
}

async fn start_server(catalog: Catalog, catalog_dir: &Path, signer: ReplySigner) -> Result<RunningServer, DemoError> {
    let io = |e: std::io::Error| e.to_string();
    let listener = upgram_server::http::bind("127.0.0.1:0".parse().map_err(|_| "address")?).await.map_err(io)?;
    let http = listener.local_addr().map_err(io)?;
    let sockets = upgram_server::udp::bind("127.0.0.1:0".parse().map_err(|_| "address")?, 1).map_err(io)?;
    let udp = sockets[0].local_addr().map_err(io)?;
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let secrets = CookieSecrets { current: CookieSecret(secret), previous: None };
    let config = Config { public_url: format!("http://{http}/"), ..Config::default() };
    let shared = Arc::new(Shared::new(catalog, signer, secrets, config));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    upgram_server::udp::serve(shared.clone(), sockets, stopped.clone());
    let router = upgram_server::http::router(shared, catalog_dir);
    tokio::spawn(upgram_server::http::serve(listener, router, stopped));
    say!("server: UDP {udp}, HTTP {http}");
    Ok(RunningServer { udp, stop })
}

/// The demo's plug-in, and the file it keeps open while it runs.
const PLUGIN: &str = "pdf-plugin";
const PLUGIN_FILE: &str = "plugins/pdf/render.lua";

/// The running PDF plug-in: an open file with a shared advisory lock, as a running plug-in
/// would hold. It is also its own plug-in manager: stopping it closes the file.
struct RunningPlugin {
    file: std::sync::Mutex<Option<std::fs::File>>,
}

impl RunningPlugin {
    fn start(path: &Path) -> Result<Self, String> {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        file.lock_shared().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self { file: std::sync::Mutex::new(Some(file)) })
    }
}

impl PluginManager for RunningPlugin {
    fn stop(&self, module: &str) -> Result<(), PluginError> {
        let _ = say(&format!("  plug-in manager: stopping {module}"));
        self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        Ok(())
    }

    fn start(&self, module: &str) -> Result<(), PluginError> {
        let _ = say(&format!("  plug-in manager: starting {module} again"));
        Ok(())
    }
}

/// Runs the demo, printing each step on standard output, in a scratch folder it removes
/// afterwards.
pub fn run() -> Result<(), DemoError> {
    let scratch = std::env::temp_dir().join(format!("upgram-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let outcome = run_in(&scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    outcome
}

/// A check's results, a line per module.
fn results_lines(results: &[crate::ModuleResult]) -> String {
    let mut out = format!("  {:<14} {:<10} {:<8} {:<8} HOW", "MODULE", "INSTALLED", "LATEST", "STATUS");
    for r in results {
        out.push_str(&format!(
            "\n  {:<14} {:<10} {:<8} {:<8} {}",
            r.id,
            r.installed.as_deref().unwrap_or("-"),
            r.latest.as_deref().unwrap_or("-"),
            r.status.name(),
            r.how
        ));
    }
    out
}

fn run_in(scratch: &Path) -> Result<(), DemoError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    step("1. The publisher builds a catalog from the demo's releases")?;
    let demo = unpack_demo(&scratch.join("demo"))?;
    let catalog_dir = scratch.join("catalog");
    let catalog = publish_demo(&demo, &catalog_dir)?;
    let root = scratch.join("installation");
    let state = scratch_installation(&catalog, &catalog_dir, &root)?;
    state.save(&Layout::new(&root).state_file()).map_err(|e| e.to_string())?;
    let installation = Installation::open_locked(&root).map_err(|e| e.to_string())?;

    step("2. The reference server starts on loopback, with a fresh signing key")?;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let signer = ReplySigner::from_seed(&seed);
    let public_key = signer.verifying_key().to_bytes();
    say!("signing key id {} (the client pins its public key)", signer.key_id());
    let server = runtime.block_on(start_server(catalog, &catalog_dir, signer))?;
    let client = Client::builder().server(server.udp).public_key(public_key).build().map_err(|e| e.to_string())?;

    step(&format!("3. A scratch installation in {}, every module at its oldest release", root.display()))?;
    for (id, module) in &state.modules {
        say!("  {id:<14} {:<6} {} files", module.version, module.files.len());
    }

    step("4. Module-level check: one query datagram for all five modules")?;
    let report = runtime.block_on(flows::check(&installation, &client)).map_err(|e| e.to_string())?;
    say!(
        "{} exchange(s); {} answer(s) too large for 1024 bytes came as a signed fallback, fetched over HTTP and checked against the signed size and SHA-256",
        report.exchanges,
        report.fallbacks
    );
    say!("every reply verified: Ed25519 signature by the pinned key, bound to our query, fresh\n");
    say!("{}", results_lines(&report.results(&state)));

    step("5. The server's frequent-file hint updates the installation's list")?;
    let state = installation.state();
    for (id, module) in state.modules.iter().filter(|(_, m)| !m.frequent.is_empty()) {
        say!("  {id}: frequent files {:?}", module.frequent);
    }

    step("6. File-level check: the query now carries the frequent file and its version")?;
    let report = runtime.block_on(flows::check(&installation, &client)).map_err(|e| e.to_string())?;
    for module in report.modules() {
        let UpgradeInfo::Files(files) = &module.upgrade else { continue };
        for file in files
            .iter()
            .filter(|f| state.modules.get(module.id.as_ref()).is_some_and(|m| m.frequent.contains(&f.id.to_string())))
        {
            let how = match &file.action {
                FileAction::Incremental { delta, .. } => {
                    format!(
                        "incremental: a record delta from {} ({} bytes) instead of the whole file",
                        delta.from, delta.payload.size
                    )
                }
                FileAction::Replace(p) => format!("replace ({} bytes)", p.size),
                FileAction::Delete => "delete".into(),
            };
            say!("  {}/{} -> {}: {how}", module.id, file.id, file.version);
        }
    }

    step("7. The upgrade plan: dependencies first (main program, main module, plug-in)")?;
    let answers = report.modules();
    let lines = plan_lines(&answers, &state, &Choice::All).map_err(|e| e.to_string())?;
    for (i, line) in lines.iter().enumerate() {
        let forced = if line.forced { "  (forced)" } else { "" };
        say!("  {}. {:<14} {} -> {}{forced}", i + 1, line.id, line.from.as_deref().unwrap_or("-"), line.to);
    }

    step("8. The update: each payload staged and hash-checked, then each module applied all or nothing")?;
    let plugin = RunningPlugin::start(&root.join(PLUGIN_FILE))?;
    say!("  (the PDF plug-in is running: it holds an advisory lock on {PLUGIN_FILE})");
    let check = AdvisoryLock {
        trigger: Trigger::ProgramExit,
        modules: BTreeMap::from([(PLUGIN.to_owned(), Trigger::PluginRestart)]),
    };
    let plugin = Arc::new(plugin);
    let hooks = Hooks { in_use: Arc::new(check), ..Hooks::default() };
    let mut outcomes = runtime
        .block_on(flows::update(&installation, &client, Optional::Take, false, &hooks))
        .map_err(|e| e.to_string())?
        .outcomes;
    for outcome in &outcomes {
        let what = match &outcome.outcome {
            Outcome::Upgraded(from, to) => format!("upgraded {} -> {to}", from.as_deref().unwrap_or("-")),
            Outcome::UpgradedNeedsRestart(from, to) => {
                format!("upgraded {} -> {to} by its package; restart needed", from.as_deref().unwrap_or("-"))
            }
            Outcome::Deferred { from, to, trigger, reason } => {
                format!("deferred {} -> {to} until {trigger}: {reason}", from.as_deref().unwrap_or("-"))
            }
            Outcome::Skipped(why) => format!("skipped: {why}"),
            Outcome::Failed(why) => format!("FAILED: {why}"),
        };
        say!("  {:<14} {what}", outcome.id);
    }

    step("9. The deferred upgrade, as `upgram status` lists it: staged, verified, waiting for its trigger")?;
    let pending = installation.state().pending;
    for (id, p) in &pending {
        say!("  {id:<14} -> {} at {}: in use: {}", p.after.version, p.trigger, p.busy.join(", "));
    }

    step("10. The plug-in manager stops the plug-in, the upgrade is completed, the plug-in starts again")?;
    let hooks = Hooks { plugins: Some(plugin), ..hooks };
    let done = runtime
        .block_on(flows::apply_pending(&installation, Some(Trigger::PluginRestart), &hooks))
        .map_err(|e| e.to_string())?;
    for item in done {
        match item {
            PendingOutcome::Applied { module, version } => {
                say!("  {module:<14} upgraded to {version}");
                let from = state.modules.get(&module).map(|m| m.version.clone());
                if let Some(o) = outcomes.iter_mut().find(|o| o.id == module) {
                    o.outcome = Outcome::Upgraded(from, version);
                }
            }
            PendingOutcome::Waiting { module, reason } => return Err(format!("{module}: {reason}").into()),
            PendingOutcome::Failed { module, error } => return Err(format!("{module}: {error}").into()),
        }
    }

    step("11. Every upgraded module checked on disk against the signed hashes")?;
    let after = installation.state();
    for outcome in
        outcomes.iter().filter(|o| matches!(o.outcome, Outcome::Upgraded(..) | Outcome::UpgradedNeedsRestart(..)))
    {
        let module = &after.modules[&outcome.id];
        if module.files.is_empty() {
            say!("  {:<14} installed at {} by its package (verified before it ran)", outcome.id, module.version);
            continue;
        }
        installation.verify(&outcome.id).map_err(|e| format!("{}: {e}", outcome.id))?;
        say!("  {:<14} {} files at {}, every one as signed", outcome.id, module.files.len(), module.version);
    }
    let _ = server.stop.send(true);
    Ok(())
}

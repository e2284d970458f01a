//! The embedder's parts of deferred replacement through the library API: an
//! in-use check and a plug-in manager. A busy plug-in waits for `plugin-restart`; the embedder's
//! manager stops it, the upgrade runs, the manager starts it again, whether at once during the
//! update or later through `apply_pending`.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::{client, client_runtime, start_server};
use upgram_client::Installation;
use upgram_client::apply::defer::PendingOutcome;
use upgram_client::flows::{self, Optional, Outcome};
use upgram_client::hooks::{AdvisoryLock, Hooks, PluginError, PluginManager};
use upgram_client::layout::Layout;
use upgram_client::state::{InstalledFile, InstalledModule, InstalledState, Trigger};
use upgram_core::Sha256Digest;

/// A plug-in manager whose plug-in is a file handle with an advisory lock on `bin/app`: stopping
/// it closes the handle. It records every call.
struct Manager {
    plugin: Mutex<Option<File>>,
    calls: Mutex<Vec<String>>,
    refuse_stop: bool,
}

impl Manager {
    fn running(root: &Path, refuse_stop: bool) -> Self {
        let file = File::open(root.join("bin/app")).unwrap();
        file.lock_shared().unwrap();
        Self { plugin: Mutex::new(Some(file)), calls: Mutex::new(vec![]), refuse_stop }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl PluginManager for Manager {
    fn stop(&self, module: &str) -> Result<(), PluginError> {
        self.calls.lock().unwrap().push(format!("stop {module}"));
        if self.refuse_stop {
            return Err(PluginError::Other("the plug-in is busy with a user's document".into()));
        }
        self.plugin.lock().unwrap().take();
        Ok(())
    }

    fn start(&self, module: &str) -> Result<(), PluginError> {
        self.calls.lock().unwrap().push(format!("start {module}"));
        Ok(())
    }
}

/// `core` 1.0 of the test catalog, installed under `root`.
fn install_core(root: &Path) -> Installation {
    let mut files = std::collections::BTreeMap::new();
    for id in ["bin/app", "share/readme.txt"] {
        let content = format!("{id} at 1.0");
        std::fs::create_dir_all(root.join(id).parent().unwrap()).unwrap();
        std::fs::write(root.join(id), &content).unwrap();
        let sha256 = Sha256Digest::of(content.as_bytes()).to_hex();
        files.insert(id.to_owned(), InstalledFile { version: "1.0".into(), sha256, executable: false });
    }
    let mut state = InstalledState::default();
    state.modules.insert("core".into(), InstalledModule { version: "1.0".into(), files, ..Default::default() });
    state.save(&Layout::new(root).state_file()).unwrap();
    Installation::open_locked(root).unwrap()
}

fn app_content(root: &Path) -> String {
    std::fs::read_to_string(root.join("bin/app")).unwrap()
}

/// Checks and updates the installation with `hooks`; returns core's outcome.
fn update(server: std::net::SocketAddr, installation: &Installation, hooks: &Hooks) -> Outcome {
    let runtime = client_runtime();
    let client = client(&[server], Duration::from_secs(10), Duration::from_millis(200));
    let report = runtime.block_on(flows::update(installation, &client, Optional::Take, false, hooks)).unwrap();
    report.outcomes.into_iter().find(|o| o.id == "core").unwrap().outcome
}

/// Busy files wait for a plug-in restart, through `manager` if there is one.
fn plugin_hooks(manager: Option<&Arc<Manager>>) -> Hooks {
    let check = AdvisoryLock { trigger: Trigger::PluginRestart, ..AdvisoryLock::default() };
    let plugins = manager.map(|m| m.clone() as Arc<dyn PluginManager>);
    Hooks { in_use: Arc::new(check), plugins, ..Hooks::default() }
}

#[test]
fn the_plug_in_manager_restarts_a_busy_plug_in_around_its_upgrade() {
    let server = start_server(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let installation = install_core(dir.path());
    let manager = Arc::new(Manager::running(dir.path(), false));
    let outcome = update(server.udp, &installation, &plugin_hooks(Some(&manager)));
    assert!(matches!(&outcome, Outcome::Upgraded(Some(from), to) if from == "1.0" && to == "1.1"), "{outcome:?}");
    assert_eq!(manager.calls(), ["stop core", "start core"]);
    assert_eq!(app_content(dir.path()), "bin/app at 1.1");
    assert!(installation.state().pending.is_empty());
    assert!(InstalledState::load(&Layout::new(dir.path()).state_file()).unwrap().pending.is_empty(), "saved");
}

#[test]
fn without_a_manager_the_plug_in_waits_then_apply_pending_restarts_it() {
    let server = start_server(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let installation = install_core(dir.path());

    // The manager refuses to stop the plug-in: the upgrade waits, the plug-in is not restarted.
    let refusing = Arc::new(Manager::running(dir.path(), true));
    let outcome = update(server.udp, &installation, &plugin_hooks(Some(&refusing)));
    assert!(matches!(outcome, Outcome::Deferred { trigger: Trigger::PluginRestart, .. }), "{outcome:?}");
    assert_eq!(refusing.calls(), ["stop core"]);
    assert_eq!(app_content(dir.path()), "bin/app at 1.0");
    drop(refusing);

    // No manager at update time: recorded for plugin-restart.
    let manager = Arc::new(Manager::running(dir.path(), false));
    let outcome = update(server.udp, &installation, &plugin_hooks(None));
    assert!(matches!(outcome, Outcome::Deferred { trigger: Trigger::PluginRestart, .. }), "{outcome:?}");
    assert!(manager.calls().is_empty());
    let pending = InstalledState::load(&Layout::new(dir.path()).state_file()).unwrap().pending;
    assert_eq!(pending["core"].trigger, Trigger::PluginRestart);

    // Another trigger's pass leaves it; the plug-in-restart pass stops, upgrades, starts it.
    let hooks = plugin_hooks(Some(&manager));
    let runtime = client_runtime();
    let apply_pending = |trigger| runtime.block_on(flows::apply_pending(&installation, Some(trigger), &hooks)).unwrap();
    assert!(apply_pending(Trigger::Reboot).is_empty());
    let done = apply_pending(Trigger::PluginRestart);
    assert!(
        matches!(&done[..], [PendingOutcome::Applied { module, version }] if module == "core" && version == "1.1"),
        "{done:?}"
    );
    assert_eq!(manager.calls(), ["stop core", "start core"]);
    assert_eq!(app_content(dir.path()), "bin/app at 1.1");
    let state = InstalledState::load(&Layout::new(dir.path()).state_file()).unwrap();
    assert!(state.pending.is_empty());
    assert_eq!(state.modules["core"].version, "1.1");
}

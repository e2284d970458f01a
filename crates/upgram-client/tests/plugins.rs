//! The embedder's parts of deferred replacement through the library API (C9, C11, [0096]): an
//! in-use check and a plug-in manager. A busy plug-in waits for `plugin-restart`; the embedder's
//! manager stops it, the upgrade runs, the manager starts it again, whether at once during the
//! update or later through `apply_pending`.

use std::fs::File;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

mod common;
use common::{client, client_runtime, start_server};
use upgram_client::apply::Layout;
use upgram_client::defer::{AdvisoryLock, PendingOutcome, PluginManager, Trigger, apply_pending};
use upgram_client::state::{InstalledFile, InstalledModule, InstalledState};
use upgram_client::update::{Hooks, Outcome, update_with};
use upgram_core::Sha256Digest;
use upgram_core::plan::Choice;

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
    fn stop(&self, module: &str) -> Result<(), String> {
        self.calls.lock().unwrap().push(format!("stop {module}"));
        if self.refuse_stop {
            return Err("the plug-in is busy with a user's document".into());
        }
        self.plugin.lock().unwrap().take();
        Ok(())
    }

    fn start(&self, module: &str) -> Result<(), String> {
        self.calls.lock().unwrap().push(format!("start {module}"));
        Ok(())
    }
}

/// `core` 1.0 of the test catalog, installed under `root`.
fn install_core(root: &Path) -> Layout {
    let mut files = std::collections::BTreeMap::new();
    for id in ["bin/app", "share/readme.txt"] {
        let content = format!("{id} at 1.0");
        std::fs::create_dir_all(root.join(id).parent().unwrap()).unwrap();
        std::fs::write(root.join(id), &content).unwrap();
        let sha256 = Sha256Digest::of(content.as_bytes()).to_hex();
        files.insert(id.to_owned(), InstalledFile { version: "1.0".into(), sha256, executable: false });
    }
    let layout = Layout::new(root);
    std::fs::create_dir_all(root.join(".upgram")).unwrap();
    let mut state = InstalledState::default();
    state.modules.insert("core".into(), InstalledModule { version: "1.0".into(), files, ..Default::default() });
    state.save(&layout.state).unwrap();
    layout
}

fn app_content(root: &Path) -> String {
    std::fs::read_to_string(root.join("bin/app")).unwrap()
}

/// Checks and updates the installation with `hooks`; returns core's outcome.
fn update(server: std::net::SocketAddr, layout: &Layout, hooks: Hooks<'_>) -> Outcome {
    let runtime = client_runtime();
    let client = client(&[server], Duration::from_secs(10), Duration::from_millis(200));
    let state = InstalledState::load(&layout.state).unwrap();
    let outcomes = runtime.block_on(async {
        let report = client.check(&state).await.unwrap();
        update_with(client.fetcher(), layout, &report.modules(), &Choice::All, hooks).await.unwrap()
    });
    outcomes.into_iter().find(|o| o.id == "core").unwrap().outcome
}

fn plugin_check() -> AdvisoryLock {
    AdvisoryLock { trigger: Trigger::PluginRestart, ..AdvisoryLock::default() }
}

#[test]
fn the_plug_in_manager_restarts_a_busy_plug_in_around_its_upgrade() {
    let server = start_server(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let layout = install_core(dir.path());
    let manager = Manager::running(dir.path(), false);
    let check = plugin_check();
    let hooks = Hooks { in_use: &check, plugins: Some(&manager), ..Hooks::default() };
    let outcome = update(server.udp, &layout, hooks);
    assert_eq!(outcome, Outcome::Upgraded(Some("1.0".into()), "1.1".into()));
    assert_eq!(manager.calls(), ["stop core", "start core"]);
    assert_eq!(app_content(dir.path()), "bin/app at 1.1");
    assert!(InstalledState::load(&layout.state).unwrap().pending.is_empty());
}

#[test]
fn without_a_manager_the_plug_in_waits_then_apply_pending_restarts_it() {
    let server = start_server(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let layout = install_core(dir.path());
    let check = plugin_check();

    // The manager refuses to stop the plug-in: the upgrade waits, the plug-in is not restarted.
    let refusing = Manager::running(dir.path(), true);
    let hooks = Hooks { in_use: &check, plugins: Some(&refusing), ..Hooks::default() };
    let outcome = update(server.udp, &layout, hooks);
    assert!(matches!(outcome, Outcome::Deferred { trigger: Trigger::PluginRestart, .. }), "{outcome:?}");
    assert_eq!(refusing.calls(), ["stop core"]);
    assert_eq!(app_content(dir.path()), "bin/app at 1.0");
    drop(refusing);

    // No manager at update time: recorded for plugin-restart.
    let manager = Manager::running(dir.path(), false);
    let outcome = update(server.udp, &layout, Hooks { in_use: &check, plugins: None, ..Hooks::default() });
    assert!(matches!(outcome, Outcome::Deferred { trigger: Trigger::PluginRestart, .. }), "{outcome:?}");
    assert!(manager.calls().is_empty());
    let pending = InstalledState::load(&layout.state).unwrap().pending;
    assert_eq!(pending["core"].trigger, Trigger::PluginRestart);

    // Another trigger's pass leaves it; the plug-in-restart pass stops, upgrades, starts it.
    assert!(apply_pending(&layout, Some(Trigger::Reboot), &check, Some(&manager)).unwrap().is_empty());
    let done = apply_pending(&layout, Some(Trigger::PluginRestart), &check, Some(&manager)).unwrap();
    assert_eq!(done, [PendingOutcome::Applied { module: "core".into(), version: "1.1".into() }]);
    assert_eq!(manager.calls(), ["stop core", "start core"]);
    assert_eq!(app_content(dir.path()), "bin/app at 1.1");
    let state = InstalledState::load(&layout.state).unwrap();
    assert!(state.pending.is_empty());
    assert_eq!(state.modules["core"].version, "1.1");
}

//! The one handle on an installation: recovery only with the lock, nothing changed on a corrupt
//! state file, nothing changed through a read-only handle — through the library and through the
//! real `upgram` binary, with interrupted upgrades made by real crashes (killed child processes).

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

mod common;
use common::binaries::{
    ReleaseFiles, ServerProcess, install_release, serve_releases, server_args, tree, upgram, upgram_env,
    wait_for_lock_free,
};
use upgram_client::apply::ApplyError;
use upgram_client::layout::Layout;
use upgram_client::state::{InstalledModule, StateError};
use upgram_client::{Installation, InstallationError};

fn releases() -> Vec<ReleaseFiles<'static>> {
    vec![
        ("app", "1.0", vec![("a.txt", b"a one".as_slice()), ("lib/big.bin", b"big one")]),
        ("app", "1.1", vec![("a.txt", b"a two".as_slice()), ("new.txt", b"new")]),
    ]
}

fn install_old(root: &Path) {
    let (_, version, files) = &releases()[0];
    install_release(root, "app", version, files);
}

/// `upgram update --yes` killed at `failpoint`: leaves a real interrupted upgrade.
fn crash_update(server: &ServerProcess, root: &Path, failpoint: &str) {
    let mut argv = vec!["update", "--yes"];
    argv.extend(server_args(server, root.to_str().unwrap()));
    let output = upgram_env(&argv, &[("UPGRAM_FAILPOINT", failpoint)]);
    assert_eq!(output.status.signal(), Some(6), "killed at {failpoint}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Holds the installation's lock the way another upgram process would.
fn hold_lock(root: &Path) -> File {
    let file = File::options().write(true).open(Layout::new(root).lock_file()).unwrap();
    file.try_lock().unwrap();
    file
}

#[test]
fn a_corrupt_state_file_is_an_error_before_anything_changes() {
    let work = tempfile::tempdir().unwrap();
    let server = serve_releases(&work.path().join("server"), &releases());
    let root = work.path().join("install");
    install_old(&root);
    std::fs::write(Layout::new(&root).state_file(), b"{ this is not json").unwrap();
    let before = tree(&root);

    // The library: a typed error, and no recovery, no change.
    let error = Installation::open_locked(&root).unwrap_err();
    assert!(matches!(error, InstallationError::State(StateError::Malformed { .. })), "{error:?}");
    assert!(matches!(Installation::open_read_only(&root), Err(InstallationError::State(_))));

    // The command: exit 3, and the installation exactly as it was (no file deleted or added).
    let mut argv = vec!["update", "--yes"];
    argv.extend(server_args(&server, root.to_str().unwrap()));
    let (code, out, err) = upgram(&argv);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("not an upgram state file"), "{err}");
    assert_eq!(tree(&root), before, "nothing changed");
    let (code, _, err) = upgram(&["status", "--root", root.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
}

#[test]
fn only_the_lock_holder_recovers() {
    let work = tempfile::tempdir().unwrap();
    let server = serve_releases(&work.path().join("server"), &releases());
    let root = work.path().join("install");
    install_old(&root);
    // A real interrupted upgrade: killed after moving a.txt aside and installing its new content.
    crash_update(&server, &root, "apply:install:0");
    let layout = Layout::new(&root);
    let journal = layout.journal("app");
    assert!(journal.exists());
    let interrupted = tree(&root);

    // Another process (here: this test) holds the lock, as an updater at work would.
    let held = hold_lock(&root);
    let root_str = root.to_str().unwrap();
    let (code, out, err) = upgram(&["status", "--root", root_str]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("unfinished upgrades") && out.contains("app"), "status reports it: {out}");
    let (code, out, err) = upgram(&["status", "--json", "--root", root_str]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["unfinished"], serde_json::json!(["app"]));
    let mut check = vec!["check"];
    check.extend(server_args(&server, root_str));
    let (code, out, err) = upgram(&check);
    assert_eq!(code, 100, "a check still answers while another process holds the lock: {out}{err}");
    let mut update = vec!["update", "--yes"];
    update.extend(server_args(&server, root_str));
    let (code, _, err) = upgram(&update);
    assert_eq!(code, 1);
    assert!(err.contains("another upgram is working on this installation"), "{err}");
    assert!(matches!(Installation::open_locked(&root), Err(InstallationError::Locked { .. })));
    let fallback = Installation::open_locked_or_read_only(&root).unwrap();
    assert!(!fallback.is_locked(), "opened read-only while another process holds the lock");
    assert_eq!(fallback.interrupted(), ["app"]);
    assert_eq!(tree(&root), interrupted, "nobody undid the holder's journal under its feet");
    assert!(journal.exists());

    // A read-only handle sees the unfinished upgrade and cannot change anything.
    let read_only = Installation::open_read_only(&root).unwrap();
    assert_eq!(read_only.interrupted(), ["app"]);
    assert!(read_only.recovered().is_empty());
    let refused = read_only.apply("app", &[], InstalledModule { version: "9".into(), ..Default::default() });
    assert!(matches!(refused, Err(ApplyError::ReadOnly { .. })), "{refused:?}");
    assert!(matches!(read_only.update_state(|_| {}), Err(ApplyError::ReadOnly { .. })));
    assert_eq!(tree(&root), interrupted);

    // Once the lock is free, opening with it repairs the upgrade (rolled back: not committed).
    drop(held);
    wait_for_lock_free(&root);
    let installation = Installation::open_locked(&root).unwrap();
    let recovered: Vec<(String, &str)> =
        installation.recovered().iter().map(|r| (r.module().to_owned(), r.action())).collect();
    assert_eq!(recovered, [("app".to_owned(), "rolled-back")]);
    assert!(!journal.exists());
    assert!(installation.interrupted().is_empty());
    assert_eq!(installation.state().modules["app"].version, "1.0");
    assert_eq!(std::fs::read(root.join("a.txt")).unwrap(), b"a one");
}

#[test]
fn changes_through_the_handle_are_saved_and_clones_share_the_lock() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("install");
    install_old(&root);
    let installation = Installation::open_locked(&root).unwrap();
    // A change through the handle is on disk when the call returns.
    installation.update_state(|state| state.modules.get_mut("app").unwrap().frequent = vec!["a.txt".into()]).unwrap();
    let saved = upgram_client::state::InstalledState::load(&Layout::new(&root).state_file()).unwrap();
    assert_eq!(saved.modules["app"].frequent, ["a.txt"]);
    // Clones share the lock and the state.
    let clone = installation.clone();
    assert!(clone.is_locked());
    assert_eq!(clone.state().modules["app"].frequent, ["a.txt"]);
    drop(installation);
    assert!(matches!(Installation::open_locked(&root), Err(InstallationError::Locked { .. })), "the clone holds it");
    drop(clone);
    wait_for_lock_free(&root);
    assert!(Installation::open_locked(&root).is_ok());
}

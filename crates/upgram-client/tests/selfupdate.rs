//! Self-update of the `upgram` binary (C10, [0120]; issue 5 item 7) with the real binary: a copy
//! of `upgram` installed as a module upgrades itself. A new binary that fails its self-test is
//! never installed; a good one is started before the old process exits, waits for it, swaps
//! itself in through the journaled apply and cleans up; killed in the middle of the swap, it is
//! rolled back by `upgram recover` and the next update hands over again.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::binaries::{ReleaseFiles, ServerProcess, UPGRAM, install, publish_release, serve, state_json, upgram};

fn release<'a>(version: &'a str, content: &'a [u8]) -> ReleaseFiles<'a> {
    ("upgram", version, vec![("bin/upgram", content)])
}

/// Publishes `upgram` `version`. The binary is executable in the release folder, as a built
/// program is, so clients make it executable (SPEC.md §5.4); `publish_release` writes the same
/// content over it, which keeps its mode.
fn publish_upgram(dir: &Path, version: &str, content: &[u8]) {
    let binary = dir.join(format!("upgram-{version}/bin/upgram"));
    std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
    std::fs::write(&binary, content).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    publish_release(dir, &release(version, content), &[]);
}

/// Runs the installed copy's `update --yes`, with `env`.
fn run_installed(root: &Path, server: &ServerProcess, env: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new(root.join("bin/upgram"))
        .args(["update", "--yes", "--server", &server.udp, "--public-key", &server.public_key, "--root"])
        .arg(root)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (output.status.code().unwrap_or(-1), text(&output.stdout), text(&output.stderr))
}

/// The process id of the new upgram the old one handed over to, from its message.
fn successor(err: &str) -> u32 {
    err.split("(process ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no hand-over in: {err}"))
}

/// Waits (bounded) until the successor is gone, then checks that the state says `upgram` is at
/// `version`.
fn wait_for_swap(root: &Path, version: &str, successor: u32) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Path::new(&format!("/proc/{successor}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(root.join(".upgram/self-update.log")).unwrap_or_default();
    assert_eq!(state_json(root)["modules"]["upgram"]["version"], version, "the successor's log:\n{log}");
}

#[test]
fn upgram_replaces_itself_only_with_a_binary_that_passes_its_self_test() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("installation");
    let original = std::fs::read(UPGRAM).unwrap();
    // A working new upgram: the same program with a trailer (ELF ignores trailing bytes).
    let mut newer = original.clone();
    newer.extend_from_slice(b"\n# upgram 1.2\n");
    let broken = b"#!/bin/sh\nexit 3\n".to_vec();
    publish_upgram(dir.path(), "1.0", &original);
    publish_upgram(dir.path(), "1.1", &broken);
    install(&root, &release("1.0", &original));
    let binary = root.join("bin/upgram");
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();

    // 1.1 fails its self-test: refused, the running binary kept, nothing pending.
    let server = serve(dir.path());
    let (code, out, err) = run_installed(&root, &server, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("failed its self-test") && out.contains("the running upgram is kept"), "{out}");
    assert_eq!(std::fs::read(&binary).unwrap(), original);
    let state = state_json(&root);
    assert_eq!(state["modules"]["upgram"]["version"], "1.0");
    assert!(state.get("pending").is_none() && !root.join(".upgram/pending/upgram").exists());

    // 1.2 passes: deferred to the hand-over, then swapped in by the new process.
    drop(server);
    publish_upgram(dir.path(), "1.2", &newer);
    let server = serve(dir.path());

    // The new process dies right after renaming itself into place, before the commit: recovery
    // puts the old binary back, and the upgrade stays pending.
    let crash = [("UPGRAM_FAILPOINT", "apply:install:0")];
    let (code, out, err) = run_installed(&root, &server, &crash);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("deferred") && out.contains("self-update"), "{out}");
    wait_for_swap(&root, "1.0", successor(&err));
    assert!(std::fs::read(&binary).unwrap() == newer, "killed after the swap, before the commit");
    let (code, out, err) = upgram(&["recover", "--root", root.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(std::fs::read(&binary).unwrap() == original, "rolled back to the old binary");
    assert_eq!(std::fs::metadata(&binary).unwrap().permissions().mode() & 0o777, 0o755);
    assert_eq!(state_json(&root)["pending"]["upgram"]["trigger"], "self-update");

    // The next update hands over again; this time the swap completes.
    let (code, out, err) = run_installed(&root, &server, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("deferred") && out.contains("self-update"), "{out}");
    wait_for_swap(&root, "1.2", successor(&err));
    assert!(std::fs::read(&binary).unwrap() == newer, "the new binary is in place");
    assert_eq!(std::fs::metadata(&binary).unwrap().permissions().mode() & 0o777, 0o755, "still executable");
    let log = std::fs::read_to_string(root.join(".upgram/self-update.log")).unwrap();
    assert!(log.contains("applied"), "{log}");
    assert!(!root.join(".upgram/pending/upgram").exists(), "pending payloads removed");
    assert!(!root.join(".upgram/backup/upgram").exists(), "old binary's backup removed");
    let version = Command::new(&binary).arg("--version").output().unwrap();
    assert!(version.status.success() && String::from_utf8_lossy(&version.stdout).starts_with("upgram "));
}

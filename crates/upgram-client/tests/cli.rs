//! The `upgram` command as a person or a script runs it (C12): the demo, `check` against the
//! real server binary with a configuration file and flags, `--json`, `status`, and the
//! documented exit codes.

use std::path::Path;

mod common;
use common::binaries::{ServerProcess, run_server, serve_releases, upgram};

/// `app` 1.0 and 1.1 served by the real binary.
fn server(root: &Path) -> ServerProcess {
    let releases = vec![
        ("app", "1.0", vec![("app.txt", b"one".as_slice())]),
        ("app", "1.1", vec![("app.txt", b"two".as_slice())]),
    ];
    serve_releases(root, &releases)
}

fn installation(root: &Path, version: &str) -> std::path::PathBuf {
    let install = root.join("install");
    std::fs::create_dir_all(install.join(".upgram")).unwrap();
    let state = format!(r#"{{"modules": {{"app": {{"version": "{version}"}}}}}}"#);
    std::fs::write(install.join(".upgram/state.json"), state).unwrap();
    install
}

#[test]
fn check_status_and_exit_codes() {
    let root = tempfile::tempdir().unwrap();
    let server = server(root.path());
    let public = server.public_key.clone();
    let install = installation(root.path(), "1.0");
    let config = root.path().join("upgram.toml");
    std::fs::write(
        &config,
        format!("servers = [\"{}\"]\npublic_keys = [\"{public}\"]\nroot = \"{}\"\n", server.udp, install.display()),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let (code, out, err) = upgram(&["check", "--config", config]);
    assert_eq!(code, 100, "upgrades available: {out}{err}");
    assert!(out.contains("app") && out.contains("1.1") && out.contains("update"), "{out}");

    let (code, out, _) = upgram(&["check", "--config", config, "--json"]);
    assert_eq!(code, 100);
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json["modules"][0]["latest"], "1.1");

    let current = installation(root.path(), "1.1");
    let (code, out, _) = upgram(&["check", "--config", config, "--root", current.to_str().unwrap()]);
    assert_eq!(code, 0, "up to date: {out}");

    let (code, out, _) = upgram(&["status", "--root", current.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("app") && out.contains("1.1"), "{out}");

    // A valid key that is not the server's: nothing verifies, the check fails at its deadline.
    let other = root.path().join("other.key");
    let info = run_server(&["keygen", "--out", other.to_str().unwrap()]);
    let wrong = info.lines().next().unwrap().trim_start_matches("public key: ").to_owned();
    let (code, _, err) = upgram(&["check", "--config", config, "--public-key", &wrong, "--deadline", "2"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no verified reply"), "{err}");

    // Nobody listening: a clear failure.
    let (code, _, err) = upgram(&["check", "--config", config, "--server", "127.0.0.1:9", "--deadline", "2"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no verified reply"), "{err}");

    // Usage and state errors.
    assert_eq!(upgram(&["check", "--root", current.to_str().unwrap()]).0, 2, "no server configured");
    std::fs::write(current.join(".upgram/state.json"), "not json").unwrap();
    let (code, _, err) = upgram(&["status", "--root", current.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    drop(server);
}

#[test]
fn the_demo_runs_end_to_end() {
    let (code, out, err) = upgram(&["demo"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for expected in ["signed fallback", "frequent files", "incremental: a record delta", "main-program", "pdf-plugin"] {
        assert!(out.contains(expected), "the demo should show `{expected}`:\n{out}");
    }
    let order: Vec<&str> =
        out.lines().filter(|l| l.trim_start().starts_with(char::is_numeric) && l.contains("->")).collect();
    let position = |m: &str| order.iter().position(|l| l.contains(m)).unwrap_or(usize::MAX);
    assert!(
        position("main-program") < position("main-module") && position("main-module") < position("pdf-plugin"),
        "{order:?}"
    );
}

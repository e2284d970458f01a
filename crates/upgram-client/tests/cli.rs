//! The `upgram` command as a person or a script runs it (C12): the demo, `check` against the
//! real server binary with a configuration file and flags, `--json`, `status`, and the
//! documented exit codes; `install` of modules not installed (with their dependencies); the
//! summary after `update`; and JSON from every command that prints.

use std::path::Path;

mod common;
use common::binaries::{ServerProcess, publish_release, run_server, serve, serve_releases, upgram};

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
    // Per check: query datagrams, answers inline, answers as fallback documents.
    assert_eq!((&json["exchanges"], &json["inline"], &json["fallbacks"]), (&1.into(), &1.into(), &0.into()), "{out}");

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

/// `app` 1.0 and 1.1, `base` 1.0, and `plugin` 2.0 which requires `base` >= 1.0.
fn server_with_plugins(root: &Path) -> ServerProcess {
    publish_release(root, &("app", "1.0", vec![("app.txt", b"one".as_slice())]), &[]);
    publish_release(root, &("app", "1.1", vec![("app.txt", b"two".as_slice())]), &[]);
    publish_release(root, &("base", "1.0", vec![("base/lib.txt", b"base library".as_slice())]), &[]);
    publish_release(
        root,
        &("plugin", "2.0", vec![("plugin/p.txt", b"plug-in".as_slice())]),
        &["--depends", "base>=1.0"],
    );
    serve(root)
}

/// A configuration file naming `server`, its key and the installation `install`.
fn config_file(root: &Path, server: &ServerProcess, install: &Path) -> String {
    let config = root.join("upgram.toml");
    let text = format!(
        "servers = [\"{}\"]\npublic_keys = [\"{}\"]\nroot = \"{}\"\n",
        server.udp,
        server.public_key,
        install.display()
    );
    std::fs::write(&config, text).unwrap();
    config.to_str().unwrap().to_owned()
}

/// A served catalog and an installation of `app` 1.0, with a configuration file naming both.
struct Setup {
    root: tempfile::TempDir,
    install: std::path::PathBuf,
    config: String,
    _server: ServerProcess,
}

fn setup(serve: fn(&Path) -> ServerProcess) -> Setup {
    let root = tempfile::tempdir().unwrap();
    let server = serve(root.path());
    let install = installation(root.path(), "1.0");
    let config = config_file(root.path(), &server, &install);
    Setup { root, install, config, _server: server }
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn install_brings_a_module_and_what_it_requires() {
    let Setup { root, install, config, .. } = &setup(server_with_plugins);
    let config = config.as_str();

    // The plan: the dependency first, both new; nothing fetched.
    let (code, out, err) = upgram(&["install", "plugin", "--dry-run", "--json", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    let plan = json(&out);
    assert_eq!(plan["dry_run"], true);
    let order: Vec<&str> = plan["modules"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(order, ["base", "plugin"], "{out}");
    assert!(plan["modules"][0]["from"].is_null());
    assert!(!install.join("plugin/p.txt").exists(), "a dry run changes nothing");

    // The install: both modules on disk as published; `app`'s optional upgrade is not taken.
    let (code, out, err) = upgram(&["install", "plugin", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("DOWNLOADED") && out.contains("2 installed, 0 upgraded, 0 deferred, 0 skipped, 0 failed"),
        "{out}"
    );
    assert_eq!(std::fs::read(install.join("plugin/p.txt")).unwrap(), b"plug-in");
    assert_eq!(std::fs::read(install.join("base/lib.txt")).unwrap(), b"base library");
    let (_, out, _) = upgram(&["status", "--json", "--config", config]);
    let versions: Vec<(String, String)> = json(&out)["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap().to_owned(), m["version"].as_str().unwrap().to_owned()))
        .collect();
    let expected = [("app", "1.0"), ("base", "1.0"), ("plugin", "2.0")].map(|(m, v)| (m.to_owned(), v.to_owned()));
    assert_eq!(versions, expected);

    // Installed already: said so, and nothing changes, not even the state file.
    let state = std::fs::read(install.join(".upgram/state.json")).unwrap();
    let (code, out, err) = upgram(&["install", "plugin", "app", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("plugin is already installed (2.0)") && out.contains("app is already installed (1.0)"),
        "{out}"
    );
    assert_eq!(std::fs::read(install.join(".upgram/state.json")).unwrap(), state);

    // A module the server does not know, and one that is no module id.
    let (code, _, err) = upgram(&["install", "ghost", "--config", config]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot install `ghost`: the servers do not know this module"), "{err}");
    let (code, _, err) = upgram(&["install", "no/such", "--config", config]);
    assert_eq!(code, 2, "{err}");

    // Into an empty folder: the first module of a new installation.
    let fresh = root.path().join("fresh");
    let (code, out, err) = upgram(&["install", "base", "--config", config, "--root", fresh.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(std::fs::read(fresh.join("base/lib.txt")).unwrap(), b"base library");
}

#[test]
fn update_summarises_versions_and_bytes() {
    let Setup { config, .. } = &setup(server);
    let (code, out, err) = upgram(&["update", "--yes", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    let header = out.lines().next().unwrap();
    assert!(header.split_whitespace().eq(["MODULE", "OUTCOME", "FROM", "TO", "DOWNLOADED", "DETAIL"]), "{out}");
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, ["app", "upgraded", "1.0", "1.1", "3", "B"], "{out}");
    assert_eq!(out.lines().last().unwrap(), "0 installed, 1 upgraded, 0 deferred, 0 skipped, 0 failed; 3 B downloaded");
    assert!(!err.contains('\x1b'), "no progress bars when standard error is not a terminal: {err:?}");
}

#[test]
fn every_command_that_prints_speaks_json() {
    let Setup { install, config, .. } = &setup(server_with_plugins);
    let config = config.as_str();
    let run = |args: &[&str], expected: i32| {
        let args: Vec<&str> = args.iter().copied().chain(["--json", "--config", config]).collect();
        let (code, out, err) = upgram(&args);
        assert_eq!(code, expected, "{args:?}: {out}{err}");
        assert!(!err.contains('\x1b'), "{args:?}: {err:?}");
        json(&out)
    };

    assert_eq!(run(&["check"], 100)["modules"][0]["latest"], "1.1");
    assert_eq!(run(&["status"], 0)["modules"][0]["version"], "1.0");
    let plan = run(&["update", "--yes", "--dry-run"], 0);
    assert_eq!((&plan["dry_run"], &plan["modules"][0]["to"]), (&true.into(), &"1.1".into()));
    let done = run(&["update", "--yes"], 0);
    let app = &done["modules"][0];
    assert_eq!(
        (&app["id"], &app["outcome"], &app["from"], &app["to"]),
        (&"app".into(), &"upgraded".into(), &"1.0".into(), &"1.1".into())
    );
    assert_eq!(app["downloaded_bytes"], 3);
    assert_eq!(done["total"]["upgraded"], 1);
    assert_eq!(done["total"]["downloaded_bytes"], 3);
    assert_eq!(run(&["update", "--yes"], 0)["modules"], serde_json::json!([]), "up to date: nothing to do");
    assert_eq!(run(&["recover"], 0)["recovered"], serde_json::json!([]));
    let plan = run(&["install", "plugin", "--dry-run"], 0);
    assert_eq!(plan["modules"].as_array().unwrap().len(), 2);
    let installed = run(&["install", "plugin"], 0);
    assert_eq!(installed["total"]["installed"], 2);
    assert_eq!(installed["already_installed"], serde_json::json!([]));
    let again = run(&["install", "plugin", "app"], 0);
    assert_eq!(again["already_installed"][0], serde_json::json!({ "id": "plugin", "version": "2.0" }));
    assert_eq!(again["modules"], serde_json::json!([]));

    // Errors stay on standard error, with their exit codes, also with --json.
    let (code, out, err) = upgram(&["install", "ghost", "--json", "--config", config]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    let (code, out, err) = upgram(&["check", "--json", "--root", install.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (2, ""), "no server: {err}");
}

//! The `upgram` command as a person or a script runs it: the demo (also without the source
//! tree, and into a closed pipe), `check` against the real server binary with a configuration
//! file (found where documented) and flags, `--json`, `status`, and the documented exit codes;
//! `install` of modules not installed (with their dependencies, at a version); the summary after
//! `update`, optional upgrades left out included; installer output kept out of the JSON; errors
//! that say what arrived; `--help`; and JSON from every command that prints.

use std::path::Path;

mod common;
use common::binaries::{
    ServerProcess, publish, publish_release, run_server, serve, serve_releases, state_modules, upgram, upgram_env,
};

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

#[test]
fn update_without_yes_says_which_optional_upgrades_it_left_out() {
    let Setup { install, config, .. } = &setup(server);
    let config = config.as_str();
    // No terminal and no --yes: the optional upgrade is not applied, and the summary says so.
    let (code, out, err) = upgram(&["update", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    let row: Vec<&str> = out.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    assert_eq!(&row[..4], ["app", "skipped", "1.0", "1.1"], "{out}");
    assert!(out.contains("0 installed, 0 upgraded, 0 deferred, 1 skipped, 0 failed"), "{out}");
    assert_eq!(out.lines().last().unwrap(), "1 optional upgrade not applied (pass --yes)", "{out}");
    assert_eq!(state_modules(install)["app"].version, "1.0");

    let done = json(&upgram(&["update", "--json", "--config", config]).1);
    assert_eq!(done["modules"][0]["outcome"], "skipped", "{done}");
    assert_eq!(done["modules"][0]["detail"], "optional upgrade not taken", "{done}");
    assert_eq!(done["total"]["skipped"], 1, "{done}");
    let plan = json(&upgram(&["update", "--dry-run", "--json", "--config", config]).1);
    assert_eq!(plan["modules"], serde_json::json!([]), "{plan}");
    assert_eq!(plan["declined"][0]["id"], "app", "{plan}");
    let (_, out, _) = upgram(&["update", "--dry-run", "--config", config]);
    assert!(out.contains("nothing to do") && out.contains("1 optional upgrade not applied (pass --yes)"), "{out}");

    // `--only-forced` leaves it out too; `-y` takes it.
    let done = json(&upgram(&["update", "--only-forced", "--json", "--config", config]).1);
    assert_eq!(done["total"]["skipped"], 1, "{done}");
    let (code, out, err) = upgram(&["update", "-y", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 installed, 1 upgraded, 0 deferred, 0 skipped, 0 failed"), "{out}");
    assert!(!out.contains("optional upgrade"), "{out}");
    assert_eq!(state_modules(install)["app"].version, "1.1");
}

/// `drv` 1.0, installed by a package (its `.dll` is critical) that talks on both of its outputs.
fn server_with_a_talkative_package(root: &Path) -> ServerProcess {
    let script = root.join("install-drv.sh");
    std::fs::write(&script, "#!/bin/sh\necho 'installer says hello on stdout'\necho 'installer warns on stderr' >&2\n")
        .unwrap();
    publish(root, "drv", "1.0", &[("drv.dll", b"driver")], &["--package", script.to_str().unwrap()]);
    publish(root, "app", "1.0", &[("app.txt", b"one")], &[]);
    serve(root)
}

#[test]
fn the_installers_output_goes_to_a_log_and_never_into_the_json() {
    let Setup { root, install, config, .. } = &setup(server_with_a_talkative_package);
    let config = config.as_str();
    let (code, out, err) = upgram(&["install", "drv", "--json", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    let done: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("one JSON object ({e}): {out}"));
    assert_eq!(done["total"]["installed"], 1, "{done}");
    assert!(!err.contains("installer"), "with --json the installer's output stays in its log: {err}");
    let log = std::fs::read_to_string(install.join(".upgram/logs/drv-1.0.log")).expect("the installer's log");
    assert!(log.contains("installer says hello on stdout") && log.contains("installer warns on stderr"), "{log}");

    // For people, standard error shows it too (standard output keeps the summary only).
    let fresh = root.path().join("fresh");
    let (code, out, err) = upgram(&["install", "drv", "--config", config, "--root", fresh.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("installer"), "{out}");
    assert!(err.contains("installer says hello on stdout") && err.contains("installer warns on stderr"), "{err}");
    assert!(err.contains("drv-1.0.log"), "the log is named: {err}");

    // apply-pending answers with an object, so that fields can be added.
    let (code, out, err) = upgram(&["apply-pending", "--json", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(json(&out), serde_json::json!({ "modules": [] }));
}

#[test]
fn a_failed_check_says_what_arrived() {
    let Setup { root, config, .. } = &setup(server);
    let config = config.as_str();
    // A valid key that is not the server's: the replies fail verification, and the error says so.
    let other = root.path().join("other.key");
    let info = run_server(&["keygen", "--out", other.to_str().unwrap()]);
    let wrong = info.lines().next().unwrap().trim_start_matches("public key: ").to_owned();
    let (code, _, err) = upgram(&["check", "--config", config, "--public-key", &wrong, "--deadline", "2"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("failed verification") && err.contains("unknown key"), "{err}");
    assert!(err.contains("--public-key"), "the error points at the flag to fix: {err}");
    assert!(!err.contains("DEBUG"), "no debug logs by default: {err}");

    // With -v (or RUST_LOG) each dropped datagram is logged.
    let (_, _, err) = upgram(&["check", "-v", "--config", config, "--public-key", &wrong, "--deadline", "1"]);
    assert!(err.contains("DEBUG") && err.contains("datagram dropped"), "{err}");
    let output = upgram_env(
        &["check", "--config", config, "--public-key", &wrong, "--deadline", "1"],
        &[("RUST_LOG", "upgram_client=debug")],
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("datagram dropped"), "{err}");

    // Nothing listens on the port: the ICMP "port unreachable" ends the check, and is named.
    // (The deadline is long: without the ICMP, the check would run into it and say nothing.)
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let (code, _, err) = upgram(&["check", "--config", config, "--server", &closed, "--deadline", "120"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ICMP port unreachable") && err.contains(&closed), "{err}");
}

/// Runs `upgram ARGS` in `cwd` with `env`, without the test's own `UPGRAM_CONFIG` and
/// `XDG_CONFIG_HOME`.
fn upgram_in(cwd: &Path, args: &[&str], env: &[(&str, &Path)]) -> (i32, String, String) {
    let output = std::process::Command::new(common::binaries::UPGRAM)
        .args(args)
        .current_dir(cwd)
        .env_remove("UPGRAM_CONFIG")
        .env_remove("XDG_CONFIG_HOME")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (output.status.code().unwrap_or(-1), text(&output.stdout), text(&output.stderr))
}

#[test]
fn the_configuration_is_found_and_its_root_is_relative_to_it() {
    let Setup { root, config, _server: server, .. } = &setup(server_with_plugins);
    let elsewhere = tempfile::tempdir().unwrap();
    let cwd = elsewhere.path();
    let keys = format!("servers = [\"{}\"]\npublic_keys = [\"{}\"]\n", server.udp, server.public_key);
    // $UPGRAM_CONFIG, with a root relative to the file's folder (not to the working folder).
    let site = root.path().join("site");
    std::fs::create_dir_all(site.join("install/.upgram")).unwrap();
    std::fs::write(site.join("install/.upgram/state.json"), r#"{"modules": {"app": {"version": "1.1"}}}"#).unwrap();
    std::fs::write(site.join("config.toml"), format!("{keys}root = \"install\"\n")).unwrap();
    let (code, out, err) = upgram_in(cwd, &["status", "--json"], &[("UPGRAM_CONFIG", &site.join("config.toml"))]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(json(&out)["modules"][0]["version"], "1.1", "{out}");
    let (code, out, err) = upgram_in(cwd, &["check"], &[("UPGRAM_CONFIG", &site.join("config.toml"))]);
    assert_eq!(code, 0, "up to date: {out}{err}");
    // $XDG_CONFIG_HOME/upgram/config.toml when there is no $UPGRAM_CONFIG.
    let xdg = root.path().join("xdg");
    std::fs::create_dir_all(xdg.join("upgram")).unwrap();
    std::fs::write(xdg.join("upgram/config.toml"), format!("{keys}root = \"../../install\"\n")).unwrap();
    let (code, out, err) = upgram_in(cwd, &["status", "--json"], &[("XDG_CONFIG_HOME", &xdg)]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        json(&out)["modules"][0]["version"],
        "1.0",
        "the setup's installation, through xdg/upgram/../../install"
    );
    // $UPGRAM_CONFIG before $XDG_CONFIG_HOME; --config before both.
    let both = [("XDG_CONFIG_HOME", xdg.as_path()), ("UPGRAM_CONFIG", &site.join("config.toml"))];
    let (_, out, _) = upgram_in(cwd, &["status", "--json"], &both);
    assert_eq!(json(&out)["modules"][0]["version"], "1.1", "{out}");
    let (_, out, _) = upgram_in(cwd, &["status", "--json", "--config", config], &both);
    assert_eq!(json(&out)["modules"][0]["version"], "1.0", "{out}");
    // A named file that is missing is an error, not a silent default.
    let (code, _, err) = upgram_in(cwd, &["status"], &[("UPGRAM_CONFIG", &root.path().join("missing.toml"))]);
    assert_eq!(code, 2, "{err}");

    // `status` on a root that does not exist says so.
    let (code, out, err) = upgram(&["status", "--root", root.path().join("nowhere").to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("does not exist"), "{err}");

    // ID@VERSION: that version, if it is the one the servers offer.
    let fresh = root.path().join("fresh");
    let fresh = fresh.to_str().unwrap();
    let (code, _, err) = upgram(&["install", "base@0.9", "--config", config, "--root", fresh]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("version 0.9 was asked for, the servers offer 1.0"), "{err}");
    let (code, _, err) = upgram(&["install", "base@not a version", "--config", config, "--root", fresh]);
    assert_eq!(code, 2, "{err}");
    let (code, out, err) = upgram(&["install", "plugin@2.0", "--config", config, "--root", fresh]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(state_modules(Path::new(fresh))["plugin"].version, "2.0");
}

#[test]
fn help_shows_placeholders_defaults_exit_codes_and_config_keys() {
    let (code, out, _) = upgram(&["--help"]);
    assert_eq!(code, 0);
    for expected in ["Exit codes", "100", "servers", "public_keys", "deadline_secs", "nonce_bound", "defer_triggers"] {
        assert!(out.contains(expected), "`upgram --help` names `{expected}`:\n{out}");
    }
    assert!(out.contains("UPGRAM_CONFIG") && out.contains("XDG_CONFIG_HOME") && out.contains("/etc/upgram"), "{out}");
    let (_, out, _) = upgram(&["check", "--help"]);
    for expected in ["--server <HOST:PORT>", "--public-key <HEX>", "--root <DIR>", "--config <FILE>", "default: 20"] {
        assert!(out.contains(expected), "`upgram check --help` shows `{expected}`:\n{out}");
    }
    let (_, out, _) = upgram(&["update", "--help"]);
    assert!(out.contains("-y, --yes"), "{out}");
    let (_, out, _) = upgram(&["apply-pending", "--help"]);
    assert!(out.contains("possible values: reboot, program-exit") || out.contains("reboot:"), "{out}");
    assert!(out.contains("[default: 30]"), "{out}");
    assert!(!out.contains("--server"), "apply-pending asks no server: {out}");

    // Each command takes only the options it uses; a bad value is a usage error.
    assert_eq!(upgram(&["status", "--server", "127.0.0.1:1"]).0, 2);
    assert_eq!(upgram(&["recover", "--deadline", "3"]).0, 2);
    assert_eq!(upgram(&["apply-pending", "--trigger", "sometime"]).0, 2);

    // Messages name the command's flags, not the library's methods.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let (code, _, err) = upgram(&["check", "--server", "127.0.0.1:1", "--root", root]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--public-key") && err.contains("public_keys") && !err.contains(".public_key("), "{err}");
}

#[test]
fn the_demo_stops_quietly_when_its_reader_goes_and_cleans_up() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::binaries::UPGRAM)
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // `upgram demo | head -2`: two lines, then the pipe is closed.
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..2 {
        lines.next().expect("a line").unwrap();
    }
    drop(lines);
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(output.status.code(), Some(0), "{err}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "the scratch folder is removed: {left:?}");
}

#[test]
fn the_demo_runs_without_the_source_tree() {
    if !common::mounts::can_mount() {
        eprintln!("SKIPPED: cannot hide the repository's demo/ folder (no private mount namespace)");
        return;
    }
    // The repository's demo/ folder, hidden under an empty file system for this run only.
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../demo").canonicalize().unwrap();
    let hide = format!("mount -t tmpfs tmpfs {}", common::mounts::quote_path(&demo));
    let (code, out, err) = common::mounts::upgram_in_namespace(&[hide], &["demo"], &[], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("pdf-plugin") && out.contains("every one as signed"), "{out}");
}

/// A running `upgram-server serve`, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_unusable_fallback_is_named_with_its_fetch_error() {
    use std::io::BufRead;
    let root = tempfile::tempdir().unwrap();
    // Forty files: the answer is too large for a datagram and comes as a fallback.
    let files: Vec<(String, Vec<u8>)> =
        (0..40).map(|i| (format!("data/part-{i:02}.txt"), format!("part {i}").into_bytes())).collect();
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (p.as_str(), c.as_slice())).collect();
    publish(root.path(), "big", "1.0", &files, &[]);
    let key = root.path().join("server.key");
    let info = run_server(&["keygen", "--out", key.to_str().unwrap()]);
    let public = info.lines().next().unwrap().trim_start_matches("public key: ").to_owned();
    // The documents are announced at an address where nothing listens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut server = Child(
        std::process::Command::new(common::binaries::server_binary())
            .args(["serve", "--catalog", root.path().join("catalog").to_str().unwrap(), "--key", key.to_str().unwrap()])
            .args(["--udp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--public-url", &format!("http://{dead}/")])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(server.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let udp = line.split_whitespace().next().unwrap().trim_start_matches("udp=").to_owned();
    let fresh = root.path().join("fresh");
    let args = ["install", "big", "--server", &udp, "--public-key", &public, "--root", fresh.to_str().unwrap()];
    let (code, _, err) = upgram(&args);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("fallback document") && err.contains(&dead.to_string()), "{err}");
    assert!(!err.contains("no verified reply"), "the reply came and verified; its document did not: {err}");
}

#[test]
fn on_a_terminal_update_lists_the_optional_upgrades_and_asks() {
    let Setup { install, config, .. } = &setup(server);
    // `script` gives upgram a terminal and types `n` into it.
    let command = format!("{} update --config {config}", common::binaries::UPGRAM);
    let mut child = match std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("SKIPPED: no `script` to run upgram on a terminal ({e})");
            return;
        }
    };
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"n\n").unwrap();
    let output = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{out}");
    let listed = out.find("1 optional upgrade available:").unwrap_or_else(|| panic!("{out}"));
    let asked = out.find("Apply these optional upgrades too? [y/N]").unwrap_or_else(|| panic!("{out}"));
    assert!(listed < asked && out[listed..asked].contains("app: 1.0 -> 1.1"), "{out}");
    assert!(out.contains("optional upgrade declined") && out.contains("1 optional upgrade not applied"), "{out}");
    assert_eq!(state_modules(install)["app"].version, "1.0");
}

#[test]
fn the_system_configuration_is_read_last() {
    if !common::mounts::can_mount() {
        eprintln!("SKIPPED: cannot put a file in /etc/upgram for this run only (no private mount namespace)");
        return;
    }
    use common::mounts::quote_path;
    let dir = tempfile::tempdir().unwrap();
    let install = installation(dir.path(), "4.2");
    let config = dir.path().join("system.toml");
    std::fs::write(&config, format!("root = \"{}\"\n", install.display())).unwrap();
    // /etc under an overlay whose writable layer lives in this run's namespace only.
    let layer = dir.path().join("layer");
    std::fs::create_dir_all(&layer).unwrap();
    let (up, work) = (layer.join("up"), layer.join("work"));
    let setup = [
        format!("mount -t tmpfs tmpfs {}", quote_path(&layer)),
        format!("mkdir {} {}", quote_path(&up), quote_path(&work)),
        format!("mount -t overlay overlay -o lowerdir=/etc,upperdir={},workdir={} /etc", up.display(), work.display()),
        "mkdir -p /etc/upgram".to_owned(),
        format!("cp {} /etc/upgram/config.toml", quote_path(&config)),
    ];
    let empty = dir.path().join("xdg");
    std::fs::create_dir_all(&empty).unwrap();
    let env = [("UPGRAM_CONFIG", ""), ("XDG_CONFIG_HOME", empty.to_str().unwrap())];
    let (code, out, err) = common::mounts::upgram_in_namespace(&setup, &["status", "--json"], &env, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(json(&out)["modules"][0]["version"], "4.2", "{out}");
    // A user's file comes first.
    std::fs::create_dir_all(empty.join("upgram")).unwrap();
    let other = installation(&dir.path().join("user"), "1.0");
    std::fs::write(empty.join("upgram/config.toml"), format!("root = \"{}\"\n", other.display())).unwrap();
    let (code, out, err) = common::mounts::upgram_in_namespace(&setup, &["status", "--json"], &env, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(json(&out)["modules"][0]["version"], "1.0", "{out}");
}

//! The `upgram` command as a person or a script runs it (C12): the demo, `check` against the
//! real server binary with a configuration file and flags, `--json`, `status`, and the
//! documented exit codes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const UPGRAM: &str = env!("CARGO_BIN_EXE_upgram");

fn server_binary() -> std::path::PathBuf {
    // The server binary sits beside this one in target/<profile>/.
    let dir = Path::new(UPGRAM).parent().expect("target folder");
    dir.join("upgram-server")
}

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_server(args: &[&str]) -> String {
    let output = Command::new(server_binary()).args(args).output().expect("upgram-server runs");
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// A catalog with `app` 1.0 and 1.1 served by the real binary; returns it and its public key.
fn server(root: &Path) -> (Server, String) {
    let catalog = root.join("catalog");
    for (version, content) in [("1.0", "one"), ("1.1", "two")] {
        let folder = root.join(format!("app-{version}"));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("app.txt"), content).unwrap();
        run_server(&[
            "publish",
            "--catalog",
            catalog.to_str().unwrap(),
            "--module",
            "app",
            "--version",
            version,
            "--from",
            folder.to_str().unwrap(),
        ]);
    }
    let key = root.join("server.key");
    let info = run_server(&["keygen", "--out", key.to_str().unwrap()]);
    let public = info.lines().next().unwrap().trim_start_matches("public key: ").to_owned();
    let mut child = Command::new(server_binary())
        .args(["serve", "--catalog", catalog.to_str().unwrap(), "--key", key.to_str().unwrap()])
        .args(["--udp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--public-url", "http://{http}/"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let udp = line.split_whitespace().next().unwrap().trim_start_matches("udp=").to_owned();
    (Server(child, udp), public)
}

fn installation(root: &Path, version: &str) -> std::path::PathBuf {
    let install = root.join("install");
    std::fs::create_dir_all(install.join(".upgram")).unwrap();
    let state = format!(r#"{{"modules": {{"app": {{"version": "{version}"}}}}}}"#);
    std::fs::write(install.join(".upgram/state.json"), state).unwrap();
    install
}

fn upgram(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(UPGRAM).args(args).output().expect("upgram runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_status_and_exit_codes() {
    let root = tempfile::tempdir().unwrap();
    if !server_binary().exists() {
        // `cargo test --workspace` builds every binary first; a lone `-p upgram-client` may not.
        let status = Command::new(env!("CARGO")).args(["build", "-q", "-p", "upgram-server"]).status().unwrap();
        assert!(status.success());
    }
    let (server, public) = server(root.path());
    let install = installation(root.path(), "1.0");
    let config = root.path().join("upgram.toml");
    std::fs::write(
        &config,
        format!("servers = [\"{}\"]\npublic_keys = [\"{public}\"]\nroot = \"{}\"\n", server.1, install.display()),
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

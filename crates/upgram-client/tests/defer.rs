//! Deferred replacement of busy files (C9; issue 5 item 6) with the real binaries: a file the
//! running application holds an advisory lock on makes its whole module wait for its trigger,
//! `upgram status` lists it, `upgram apply-pending` completes it once the file is free (waiting
//! for and killing the exiting program), a dependent module waits with its dependency, a newer
//! update purges the stale pending work, and a crash while deferring or completing is repaired.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

mod common;
use common::binaries::{
    ReleaseFiles, ServerProcess, install, publish_release, serve, server_args, state_json, upgram, upgram_env,
};
use upgram_core::Sha256Digest;

fn app(version: &'static str) -> ReleaseFiles<'static> {
    match version {
        "1.0" => ("app", "1.0", vec![("bin/app.bin", b"app one".as_slice()), ("lib/helper.txt", b"helper one")]),
        "1.1" => ("app", "1.1", vec![("bin/app.bin", b"app two".as_slice()), ("lib/helper.txt", b"helper two")]),
        _ => ("app", "1.2", vec![("bin/app.bin", b"app three".as_slice()), ("lib/helper.txt", b"helper three")]),
    }
}

fn plugin(version: &'static str) -> ReleaseFiles<'static> {
    match version {
        "1.0" => ("plugin", "1.0", vec![("plugins/p.dat", b"plugin one".as_slice())]),
        _ => ("plugin", "1.1", vec![("plugins/p.dat", b"plugin two".as_slice())]),
    }
}

/// The installation has exactly `release`'s files with their contents, and the state says so.
fn assert_at(root: &Path, release: &ReleaseFiles<'_>) {
    let (module, version, files) = release;
    let state = state_json(root);
    assert_eq!(state["modules"][*module]["version"], *version, "{module} in the state");
    for (path, content) in files {
        assert_eq!(std::fs::read(root.join(path)).unwrap(), *content, "{module} {version}: {path}");
        let recorded = &state["modules"][*module]["files"][*path]["sha256"];
        assert_eq!(recorded, &Sha256Digest::of(content).to_hex(), "{path} in the state");
    }
}

/// A stand-in for the running application: a separate process that holds a shared advisory
/// lock on `file` (as an application does on its own files while it runs) until it is killed.
fn running_app(file: &Path) -> Child {
    let script = "import fcntl, sys, time\nf = open(sys.argv[1], 'rb')\nfcntl.flock(f, fcntl.LOCK_SH)\nprint('locked', flush=True)\ntime.sleep(600)\n";
    let mut child =
        Command::new("python3").args(["-c", script]).arg(file).stdout(Stdio::piped()).spawn().expect("python3 runs");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "locked");
    child
}

/// A server with app 1.0 and 1.1 published, and an installation of 1.0 under `dir`.
fn app_installed(dir: &Path) -> (std::path::PathBuf, ServerProcess) {
    let root = dir.join("installation");
    publish_release(dir, &app("1.0"), &[]);
    publish_release(dir, &app("1.1"), &[]);
    let server = serve(dir);
    install(&root, &app("1.0"));
    (root, server)
}

fn run(command: &[&str], server: &ServerProcess, root: &Path) -> (i32, String, String) {
    let mut all = command.to_vec();
    all.extend(server_args(server, root.to_str().unwrap()));
    upgram(&all)
}

fn apply_pending(root: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut all = vec!["apply-pending", "--root", root.to_str().unwrap()];
    all.extend(extra);
    upgram(&all)
}

/// App 1.0 installed and running (holding `bin/app.bin`), and `update --yes` run: it reports
/// the module deferred until the program exits.
fn deferred_while_running(dir: &Path) -> (std::path::PathBuf, ServerProcess, Child) {
    let (root, server) = app_installed(dir);
    let running = running_app(&root.join("bin/app.bin"));
    let (code, out, err) = run(&["update", "--yes"], &server, &root);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("deferred") && out.contains("program-exit") && out.contains("bin/app.bin"), "{out}");
    (root, server, running)
}

#[test]
fn a_busy_file_defers_its_module_until_the_program_exits() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _server, mut running) = deferred_while_running(dir.path());
    // The whole module waits: not even the free file changed.
    assert_at(&root, &app("1.0"));
    let state = state_json(&root);
    assert_eq!(state["pending"]["app"]["trigger"], "program-exit");
    assert_eq!(state["pending"]["app"]["busy"], serde_json::json!(["bin/app.bin"]));
    assert!(!root.join(".upgram/staging").exists(), "downloads removed once kept with the pending upgrade");

    let (_, status, _) = upgram(&["status", "--root", root.to_str().unwrap()]);
    assert!(status.contains("pending upgrades") && status.contains("program-exit"), "{status}");

    // Another trigger's turn does not touch it; while the file is busy it keeps waiting.
    let (code, out, _) = apply_pending(&root, &["--trigger", "program-start"]);
    assert_eq!((code, out.trim()), (0, "nothing pending"));
    let (code, out, _) = apply_pending(&root, &["--trigger", "program-exit"]);
    assert_eq!(code, 0);
    assert!(out.contains("waiting") && out.contains("still in use"), "{out}");
    assert_at(&root, &app("1.0"));

    // The program launches apply-pending before it exits; this one never exits, so it is
    // killed after the timeout [0120] and the module is completed.
    let pid = running.id().to_string();
    let (code, out, err) =
        apply_pending(&root, &["--trigger", "program-exit", "--wait-pid", &pid, "--kill-after", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("applied"), "{out}");
    assert_eq!(running.wait().unwrap().signal(), Some(9), "the program was killed");
    assert_at(&root, &app("1.1"));
    assert!(state_json(&root).get("pending").is_none());
    assert!(!root.join(".upgram/pending/app").exists(), "pending payloads removed");
}

#[test]
fn a_dependent_waits_with_its_busy_dependency_and_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("installation");
    publish_release(dir.path(), &app("1.0"), &[]);
    publish_release(dir.path(), &app("1.1"), &[]);
    publish_release(dir.path(), &plugin("1.0"), &["--depends", "app>=1.0"]);
    publish_release(dir.path(), &plugin("1.1"), &["--depends", "app>=1.1"]);
    let server = serve(dir.path());
    install(&root, &app("1.0"));
    install(&root, &plugin("1.0"));
    let held = std::fs::File::open(root.join("bin/app.bin")).unwrap();
    held.lock_shared().unwrap();

    let (code, out, err) = run(&["update", "--yes"], &server, &root);
    assert_eq!(code, 0, "{out}{err}");
    let state = state_json(&root);
    assert_eq!(state["pending"]["plugin"]["waits_for"], serde_json::json!(["app"]), "{out}");
    assert_at(&root, &app("1.0"));
    assert_at(&root, &plugin("1.0"));

    let (_, out, _) = apply_pending(&root, &[]);
    assert!(out.contains("dependency app is still pending"), "{out}");
    assert_at(&root, &plugin("1.0"));

    drop(held);
    let (code, out, _) = apply_pending(&root, &["--json"]);
    assert_eq!(code, 0);
    let outcomes: serde_json::Value = serde_json::from_str(&out).unwrap();
    let order: Vec<&str> =
        outcomes["modules"].as_array().unwrap().iter().map(|o| o["module"].as_str().unwrap()).collect();
    assert_eq!(order, ["app", "plugin"], "dependencies first");
    assert_at(&root, &app("1.1"));
    assert_at(&root, &plugin("1.1"));
}

#[test]
fn a_newer_update_purges_the_stale_pending_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let (root, server) = app_installed(dir.path());
    let held = std::fs::File::open(root.join("bin/app.bin")).unwrap();
    held.lock_shared().unwrap();
    let (code, out, _) = run(&["update", "--yes"], &server, &root);
    assert_eq!(code, 0);
    assert!(out.contains("deferred"), "{out}");
    assert_eq!(state_json(&root)["pending"]["app"]["after"]["version"], "1.1");

    // While it waits, 1.2 is published: the next update replaces the pending work.
    drop(server);
    publish_release(dir.path(), &app("1.2"), &[]);
    let server = serve(dir.path());
    let (code, out, _) = run(&["update", "--yes"], &server, &root);
    assert_eq!(code, 0);
    assert!(out.contains("deferred"), "{out}");
    let state = state_json(&root);
    assert_eq!(state["pending"]["app"]["after"]["version"], "1.2");
    let kept: Vec<String> = std::fs::read_dir(root.join(".upgram/pending/app"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let (_, _, files) = app("1.2");
    let mut expected: Vec<String> = files.iter().map(|(_, c)| Sha256Digest::of(c).to_hex()).collect();
    let mut kept = kept;
    kept.sort();
    expected.sort();
    assert_eq!(kept, expected, "only 1.2's payloads are kept");

    // Once the file is free, the next update completes it at once.
    drop(held);
    let (code, out, _) = run(&["update", "--yes"], &server, &root);
    assert_eq!(code, 0);
    assert!(out.contains("upgraded"), "{out}");
    assert_at(&root, &app("1.2"));
    assert!(state_json(&root).get("pending").is_none());
}

#[test]
fn crashes_while_deferring_or_completing_are_repaired() {
    let dir = tempfile::tempdir().unwrap();
    publish_release(dir.path(), &app("1.0"), &[]);
    publish_release(dir.path(), &app("1.1"), &[]);
    let server = serve(dir.path());
    for point in ["defer:files", "defer:state", "apply:backup:0", "apply:install:1", "apply:commit"] {
        let root = dir.path().join(format!("installation-{}", point.replace(':', "-")));
        install(&root, &app("1.0"));
        let held = std::fs::File::open(root.join("bin/app.bin")).unwrap();
        held.lock_shared().unwrap();
        let deferring = point.starts_with("defer");
        let env: &[(&str, &str)] = if deferring { &[("UPGRAM_FAILPOINT", point)] } else { &[] };
        let mut all = vec!["update", "--yes"];
        all.extend(server_args(&server, root.to_str().unwrap()));
        let output = upgram_env(&all, env);
        assert_eq!(output.status.signal().is_some(), deferring, "{point}: {output:?}");
        drop(held);
        if !deferring {
            let completing =
                upgram_env(&["apply-pending", "--root", root.to_str().unwrap()], &[("UPGRAM_FAILPOINT", point)]);
            assert!(completing.status.signal().is_some(), "{point}: killed while completing");
        }
        let (code, _, err) = upgram(&["recover", "--root", root.to_str().unwrap()]);
        assert_eq!(code, 0, "{point}: {err}");
        let state = state_json(&root);
        let pending = state.get("pending").is_some();
        match point {
            // Payloads copied, nothing recorded: the orphans are removed, nothing pending.
            "defer:files" => {
                assert!(!pending, "{point}");
                assert!(!root.join(".upgram/pending/app").exists(), "{point}: orphan payloads removed");
            }
            // Committed before the crash: finished, and the pending entry went with it.
            "apply:commit" => {
                assert_at(&root, &app("1.1"));
                assert!(!pending, "{point}");
            }
            // Recorded, or completed and rolled back: still pending, still at 1.0.
            _ => assert!(pending, "{point}"),
        }
        if point != "apply:commit" {
            assert_at(&root, &app("1.0"));
        }
        // Whatever the crash left, the installation gets to 1.1 with nothing left over.
        let (code, out, err) =
            if pending { apply_pending(&root, &[]) } else { run(&["update", "--yes"], &server, &root) };
        assert_eq!(code, 0, "{point}: {out}{err}");
        assert_at(&root, &app("1.1"));
        assert!(state_json(&root).get("pending").is_none(), "{point}");
        for leftover in ["pending/app", "backup/app", "journal/app.journal"] {
            assert!(!root.join(".upgram").join(leftover).exists(), "{point}: {leftover} left behind");
        }
    }
}

#[test]
fn the_launcher_in_contrib_completes_the_upgrade_when_the_program_exits() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _server, mut running) = deferred_while_running(dir.path());
    running.kill().unwrap();
    running.wait().unwrap();

    // The launcher starts the program (here `sh -c 'exit 7'`), waits for it, then completes
    // what waited for its exit, and passes the program's exit status on.
    let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/systemd/upgram-apply-pending-start.sh");
    let bin_dir = Path::new(common::binaries::UPGRAM).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let status =
        Command::new("sh").arg(&launcher).arg(&root).args(["sh", "-c", "exit 7"]).env("PATH", path).status().unwrap();
    assert_eq!(status.code(), Some(7), "the program's status");
    assert_at(&root, &app("1.1"));
    assert!(state_json(&root).get("pending").is_none());
}

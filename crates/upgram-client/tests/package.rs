//! Install packages through `upgram update` (SPEC.md §5.8) with real installer scripts and
//! real child processes: arguments without a shell, the installation root and environment,
//! exit statuses, a timeout, and crashes while an installer runs, judged by looking at the
//! installation rather than by running the installer again.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

mod common;
use common::binaries::{ServerProcess, run_server, upgram, upgram_env};
use upgram_client::Installation;
use upgram_client::apply::package::{InstallFailure, InstallResult};
use upgram_client::apply::recovery::Recovered;
use upgram_client::flows::recover;
use upgram_client::state::{InstalledModule, InstalledState};
use upgram_core::Sha256Digest;

/// `drv` 1.0 and 1.1, each with a critical `drv.dll` and an installer `script`.
fn serve_driver(work: &Path, script: &str) -> ServerProcess {
    let catalog = work.join("catalog");
    for version in ["1.0", "1.1"] {
        let folder = work.join(format!("drv-{version}"));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("drv.dll"), format!("driver {version}")).unwrap();
        let package = work.join(format!("install-{version}.sh"));
        std::fs::write(&package, script.replace("@V@", version)).unwrap();
        run_server(&[
            "publish",
            "--catalog",
            catalog.to_str().unwrap(),
            "--module",
            "drv",
            "--version",
            version,
            "--from",
            folder.to_str().unwrap(),
            "--package",
            package.to_str().unwrap(),
            "--installer-args",
            "--quiet  --mode=full",
        ]);
    }
    let key = work.join("server.key");
    let info = run_server(&["keygen", "--out", key.to_str().unwrap()]);
    let public_key = info.lines().next().unwrap().trim_start_matches("public key: ").to_owned();
    common::binaries::serve_catalog(&catalog, &key, public_key)
}

/// An installation with drv 1.0: its dll on disk and recorded.
fn install(root: &Path) {
    std::fs::create_dir_all(root.join(".upgram")).unwrap();
    std::fs::write(root.join("drv.dll"), "driver 1.0").unwrap();
    let mut state = InstalledState::default();
    let mut module = InstalledModule { version: "1.0".into(), ..Default::default() };
    let file = upgram_client::state::InstalledFile {
        version: "1.0".into(),
        sha256: Sha256Digest::of(b"driver 1.0").to_hex(),
        executable: false,
    };
    module.files.insert("drv.dll".into(), file);
    state.modules.insert("drv".into(), module);
    state.save(&root.join(".upgram/state.json")).unwrap();
}

fn version(root: &Path) -> InstalledModule {
    InstalledState::load(&root.join(".upgram/state.json")).unwrap().modules["drv"].clone()
}

fn update_args<'a>(server: &'a ServerProcess, root: &'a str) -> Vec<&'a str> {
    vec!["update", "--yes", "--server", &server.udp, "--public-key", &server.public_key, "--root", root]
}

/// Writes its arguments, environment and working folder, then replaces the dll.
const GOOD: &str = "#!/bin/sh\nprintf '%s|' \"$@\" > installer.log\necho \"$UPGRAM_MODULE $UPGRAM_VERSION $(pwd)\" >> installer.log\necho 'driver @V@' > drv.dll\nexit 0\n";

#[test]
fn a_package_runs_without_a_shell_in_the_installation() {
    let work = tempfile::tempdir().unwrap();
    let server = serve_driver(&work.path().join("server"), GOOD);
    let root = work.path().join("install");
    install(&root);
    let (code, out, err) = upgram(&update_args(&server, root.to_str().unwrap()));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(version(&root).version, "1.1");
    let log = std::fs::read_to_string(root.join("installer.log")).unwrap();
    let canonical = root.canonicalize().unwrap();
    assert_eq!(
        log,
        format!("--quiet|--mode=full|drv 1.1 {}\n", canonical.display()),
        "arguments split at spaces, no shell"
    );
    assert_eq!(std::fs::read_to_string(root.join("drv.dll")).unwrap(), "driver 1.1\n");
}

#[test]
fn a_failing_package_changes_no_state() {
    let work = tempfile::tempdir().unwrap();
    let server = serve_driver(&work.path().join("server"), "#!/bin/sh\nexit 7\n");
    let root = work.path().join("install");
    install(&root);
    let (code, out, err) = upgram(&update_args(&server, root.to_str().unwrap()));
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("exited with status 7"), "{out}");
    assert_eq!(version(&root).version, "1.0");
    assert!(!root.join(".upgram/journal/drv.journal").exists());
}

/// Runs an installer script `body` for drv 1.1 through the library, with a `timeout`, in a
/// fresh installation of drv 1.0 under `work`; returns the installation root and the result.
fn run_installer(work: &Path, body: &str, timeout: Duration) -> (std::path::PathBuf, InstallResult) {
    let root = work.join("install");
    install(&root);
    let script = work.join("installer.sh");
    std::fs::write(&script, body).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let after = InstalledModule { version: "1.1".into(), ..Default::default() };
    let installation = Installation::open_locked(&root).unwrap();
    let result = installation.install_package("drv", &script, &[], after, timeout).unwrap();
    (root, result)
}

#[test]
fn an_installer_that_hangs_is_stopped() {
    let work = tempfile::tempdir().unwrap();
    let (root, result) = run_installer(work.path(), "#!/bin/sh\nsleep 30\n", Duration::from_millis(300));
    assert!(matches!(result, InstallResult::Failure(InstallFailure::Timeout(_))), "{result:?}");
    assert_eq!(version(&root).version, "1.0");
}

/// Whether process `pid` still runs (a zombie no longer does).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
}

#[test]
fn an_installer_that_hangs_is_stopped_with_the_processes_it_started() {
    let work = tempfile::tempdir().unwrap();
    // The installer forks a child that would change the installation later, then hangs.
    let body = "#!/bin/sh\n(sleep 3; echo late > late.txt) &\necho $! > child.pid\nsleep 30\n";
    let (root, result) = run_installer(work.path(), body, Duration::from_millis(500));
    assert!(matches!(result, InstallResult::Failure(InstallFailure::Timeout(_))), "{result:?}");
    let child = std::fs::read_to_string(root.join("child.pid")).unwrap().trim().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while running(&child) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!running(&child), "the installer's child {child} outlived the timeout");
    std::thread::sleep(Duration::from_secs(4));
    assert!(!root.join("late.txt").exists(), "the installer's child changed the installation after the timeout");
}

#[test]
fn a_crash_while_the_installer_runs_is_judged_by_the_installation() {
    let work = tempfile::tempdir().unwrap();
    let server = serve_driver(&work.path().join("server"), GOOD);
    // Killed before the installer ran: nothing changed, the next update runs it.
    let root = work.path().join("before");
    install(&root);
    let output = upgram_env(&update_args(&server, root.to_str().unwrap()), &[("UPGRAM_FAILPOINT", "package:begin")]);
    assert_eq!(output.status.signal(), Some(6));
    assert_eq!(recover(&root).unwrap(), [Recovered::InstallNotStarted("drv".into())]);
    assert_eq!(version(&root).version, "1.0");
    let (code, out, err) = upgram(&update_args(&server, root.to_str().unwrap()));
    assert_eq!((code, version(&root).version), (0, "1.1".into()), "{out}{err}");

    // Killed after the installer changed the dll but before its success was recorded: the
    // module is marked interrupted and its package is not run again blindly.
    let root = work.path().join("after");
    install(&root);
    let output = upgram_env(&update_args(&server, root.to_str().unwrap()), &[("UPGRAM_FAILPOINT", "package:ran")]);
    assert_eq!(output.status.signal(), Some(6));
    assert_eq!(recover(&root).unwrap(), [Recovered::InstallInterrupted("drv".into())]);
    assert!(version(&root).interrupted);
    std::fs::remove_file(root.join("installer.log")).unwrap();
    let (code, out, _) = upgram(&update_args(&server, root.to_str().unwrap()));
    assert_eq!(code, 0);
    assert!(out.contains("interrupted"), "{out}");
    assert!(!root.join("installer.log").exists(), "the installer did not run again");

    // Killed after success was recorded: recovery finishes the state.
    let root = work.path().join("done");
    install(&root);
    let output = upgram_env(&update_args(&server, root.to_str().unwrap()), &[("UPGRAM_FAILPOINT", "package:done")]);
    assert_eq!(output.status.signal(), Some(6));
    assert_eq!(recover(&root).unwrap(), [Recovered::Finished("drv".into())]);
    assert_eq!(version(&root).version, "1.1");
}

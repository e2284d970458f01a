//! The launcher in contrib/systemd (`upgram-apply-pending-start.sh`) with real processes: a
//! stop request sent to the launcher reaches the program it started.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

const UPGRAM: &str = env!("CARGO_BIN_EXE_upgram");

fn launcher() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/systemd/upgram-apply-pending-start.sh")
}

/// Polls `done` every 20 ms until it holds or `limit` has passed.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(limit, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").args(["-s", name, &pid.to_string()]).status().expect("kill runs");
    assert!(status.success(), "kill -s {name} {pid}");
}

/// The program under the launcher: writes its pid, then runs until SIGTERM or SIGHUP, which it
/// records and answers by exiting with status 3.
const PROGRAM: &str = r#"trap 'echo TERM > "$2"; exit 3' TERM
trap 'echo HUP > "$2"; exit 3' HUP
echo $$ > "$3.tmp" && mv "$3.tmp" "$3"
i=0
while [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
exit 9"#;

/// Sends `sent` to the launcher; the program must receive `expected`.
fn stop_through_launcher(sent: &str, expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("app");
    std::fs::create_dir(&root).unwrap();
    let (got, ready) = (dir.path().join("got-signal"), dir.path().join("program-pid"));
    let bin_dir = Path::new(UPGRAM).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut running = Command::new("sh")
        .arg(launcher())
        .arg(&root)
        .args(["sh", "-c", PROGRAM, "program", "unused"])
        .arg(&got)
        .arg(&ready)
        .env("PATH", path)
        .spawn()
        .expect("the launcher starts");
    assert!(wait_until(Duration::from_secs(30), || ready.exists()), "the program did not start within 30 s");
    let program_pid: u32 = std::fs::read_to_string(&ready).unwrap().trim().parse().unwrap();

    signal(running.id(), sent);
    let status = wait_for_exit(&mut running, Duration::from_secs(30));
    let received = std::fs::read_to_string(&got).ok();
    // Whatever happened, leave no process behind.
    if status.is_none() {
        let _ = running.kill();
        let _ = running.wait();
    }
    if received.is_none() {
        let _ = Command::new("kill").args(["-s", "KILL", &program_pid.to_string()]).status();
    }

    let status = status.expect("the launcher exits within 30 s of the signal");
    assert_eq!(received.as_deref(), Some(format!("{expected}\n").as_str()), "{sent} to the launcher");
    assert_eq!(status.code(), Some(3), "the launcher exits with the program's status: {status:?}");
}

#[test]
fn sigterm_to_the_launcher_reaches_the_program_and_its_status_comes_back() {
    stop_through_launcher("TERM", "TERM");
}

#[test]
fn sighup_is_passed_on_and_sigint_arrives_as_sigterm() {
    stop_through_launcher("HUP", "HUP");
    // A program started in the background by sh ignores SIGINT: it gets SIGTERM instead.
    stop_through_launcher("INT", "TERM");
}

//! Real file-system limits for the client's tests: `upgram` run inside a private mount
//! namespace (`unshare -m`, which needs root or CAP_SYS_ADMIN), where a test can mount a tiny
//! tmpfs (a real full disk) or remount a folder read-only (which stops root too, unlike
//! permission bits). Every mount lives only as long as the namespace, so none is left on the
//! host, whatever happens to the test.

use std::path::Path;
use std::process::Command;

use super::binaries::UPGRAM;

/// The exit code of the namespace's script when a mount command failed (not `upgram`'s).
const SETUP_FAILED: i32 = 97;

/// Quotes `text` for `sh`.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Quotes a path for `sh`.
pub fn quote_path(path: &Path) -> String {
    quote(path.to_str().expect("utf-8 path"))
}

fn unshare() -> Command {
    let mut command = Command::new("unshare");
    command.args(["--mount", "--propagation", "private", "sh", "-c"]);
    command
}

/// Whether this process may mount a file system in a private mount namespace; says on
/// standard error when it may not, so a test's output shows which variant ran.
pub fn can_mount() -> bool {
    let Ok(dir) = tempfile::tempdir() else { return false };
    let script = format!("mount -t tmpfs -o size=4k tmpfs {}", quote_path(dir.path()));
    let output = unshare().arg(script).output();
    let allowed = output.as_ref().is_ok_and(|o| o.status.success());
    if !allowed {
        let why = match &output {
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
            Err(e) => e.to_string(),
        };
        eprintln!("mounting in a private namespace is not permitted here ({why})");
    }
    allowed
}

/// Runs `setup` (shell commands, run in order, each of which must succeed), then
/// `upgram ARGS` with `env`, then `after`, all in one private mount namespace; returns
/// `upgram`'s exit code, standard output and standard error.
pub fn upgram_in_namespace(
    setup: &[String],
    args: &[&str],
    env: &[(&str, &str)],
    after: &[String],
) -> (i32, String, String) {
    let step = |commands: &[String]| -> String {
        commands.iter().map(|c| format!("{c} >&2 || exit {SETUP_FAILED}\n")).collect()
    };
    let script = format!("{}code=0\n\"$@\" || code=$?\n{}exit $code\n", step(setup), step(after));
    let output = unshare()
        .arg(script)
        .arg("upgram-test")
        .arg(UPGRAM)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("unshare runs");
    let code = output.status.code().unwrap_or(-1);
    let (out, err) =
        (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned());
    assert_ne!(code, SETUP_FAILED, "a mount step failed: {err}");
    (code, out, err)
}

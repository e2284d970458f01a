//! Self-update of the `upgram` binary (SPEC.md §5.9).
//!
//! When an upgrade replaces the running `upgram` itself, the update does not overwrite it:
//!
//! 1. the module's upgrade is staged and recorded as pending with [`Trigger::SelfUpdate`]
//!    ([`super::defer`]), the new binary kept in the module's pending folder;
//! 2. the new binary must pass its self-test (`upgram self-test`, run with a timeout) — if it
//!    fails, the pending upgrade is purged and the running `upgram` stays as it is;
//! 3. before exiting, the old process starts the new one ([`hand_over`]):
//!    `NEW apply-pending --trigger self-update --wait-pid OLD --root ROOT`, detached, its output
//!    in the installation's self-update log ([`Layout::self_update_log`]);
//! 4. the new process waits for the old one to exit, kills it if it has not exited within the
//!    timeout ([`wait_for_exit`]), then completes the pending upgrade through the journaled
//!    apply (the old binary backed up, the new one renamed into place, all or nothing) and
//!    removes the pending payloads, itself included.
//!
//! A crash of the new process mid-swap is repaired by `upgram recover` like any other upgrade.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::layout::Layout;
use crate::paths;
use crate::state::{FileOp, InstalledState, PendingUpgrade, Trigger};

/// Why a new `upgram` binary is refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SelfTestError {
    /// It could not be made executable or started.
    #[error("the new binary {} could not start: {source}", path.display())]
    Start {
        /// The new binary.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It did not finish in time.
    #[error("the new binary's self-test did not finish within {0:?}")]
    Timeout(Duration),
    /// It ran and failed.
    #[error("the new binary failed its self-test ({0})")]
    Failed(std::process::ExitStatus),
    /// The pending upgrade holds no new binary.
    #[error("the new binary is missing from the pending upgrade")]
    Missing,
}

/// What a passing self-test prints first.
pub const SELF_TEST_OK: &str = "upgram self-test ok";

/// How long a self-test may run.
pub const SELF_TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The running executable, with symbolic links resolved.
pub fn running_exe() -> Option<PathBuf> {
    std::env::current_exe().ok()?.canonicalize().ok()
}

/// The index of the op of `ops` that replaces `exe`, if any.
pub fn replaces(layout: &Layout, ops: &[FileOp], exe: &Path) -> Option<usize> {
    // Only a file of the same name can be the running binary: no other target is resolved.
    ops.iter().position(|op| {
        matches!(op, FileOp::Replace { .. })
            && Path::new(op.file()).file_name() == exe.file_name()
            && paths::resolve(layout.root(), op.file())
                .ok()
                .and_then(|target| target.canonicalize().ok())
                .is_some_and(|target| target == exe)
    })
}

/// Makes `binary` executable and runs `binary self-test`: it must exit 0 and print
/// [`SELF_TEST_OK`] within [`SELF_TEST_TIMEOUT`].
pub fn self_test(binary: &Path) -> Result<(), SelfTestError> {
    let start = |source| SelfTestError::Start { path: binary.to_owned(), source };
    make_executable(binary).map_err(start)?;
    let mut child = Command::new(binary)
        .arg("self-test")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(start)?;
    let status = super::package::wait_timeout(&mut child, SELF_TEST_TIMEOUT)
        .map_err(start)?
        .ok_or(SelfTestError::Timeout(SELF_TEST_TIMEOUT))?;
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        use std::io::Read;
        let _ = stdout.read_to_string(&mut out);
    }
    if status.success() && out.starts_with(SELF_TEST_OK) { Ok(()) } else { Err(SelfTestError::Failed(status)) }
}

fn make_executable(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The pending new binary that replaces `exe`, if a self-update is pending.
pub fn pending_successor(layout: &Layout, state: &InstalledState, exe: &Path) -> Option<PathBuf> {
    state.pending.values().filter(|p| p.trigger == Trigger::SelfUpdate).find_map(|p| successor(layout, p, exe))
}

/// The new binary of `pending` that replaces `exe`, if it has one.
pub fn successor(layout: &Layout, pending: &PendingUpgrade, exe: &Path) -> Option<PathBuf> {
    match pending.ops.get(replaces(layout, &pending.ops, exe)?)? {
        FileOp::Replace { staged, .. } => Some(staged.clone()),
        FileOp::Delete { .. } => None,
    }
}

/// Starts the new binary to finish the self-update once this process exits; returns its
/// process id. The caller exits soon after (and must have released the installation lock).
pub fn hand_over(layout: &Layout, successor: &Path, kill_after: Duration) -> std::io::Result<u32> {
    let log = std::fs::File::create(layout.self_update_log())?;
    let mut command = Command::new(successor);
    command
        .args(["apply-pending", "--trigger", Trigger::SelfUpdate.name()])
        .arg("--wait-pid")
        .arg(std::process::id().to_string())
        .arg("--kill-after")
        .arg(kill_after.as_secs().max(1).to_string())
        .arg("--root")
        .arg(layout.root())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Its own process group: a Ctrl-C that ends the old process does not end the new one.
        command.process_group(0);
    }
    Ok(command.spawn()?.id())
}

/// How the wait for another process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exited {
    /// It exited by itself (or was not running).
    ByItself,
    /// It was still running at the timeout and was killed.
    Killed,
}

/// Waits for process `pid` to exit; kills it if it is still running after `timeout` \[0120\].
pub fn wait_for_exit(pid: u32, timeout: Duration) -> Exited {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() >= deadline {
            kill(pid);
            // Bounded: a killed process is gone within moments; a zombie counts as gone.
            let grace = Instant::now() + Duration::from_secs(10);
            while alive(pid) && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(20));
            }
            return Exited::Killed;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Exited::ByItself
}

#[cfg(unix)]
fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else { return false };
    if rustix::process::test_kill_process(pid).is_err() {
        return false;
    }
    // An exited child its parent has not reaped yet still answers; it is gone all the same.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero()));
    !stat.is_ok_and(|s| s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
}

#[cfg(unix)]
fn kill(pid: u32) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

#[cfg(not(unix))]
fn alive(_pid: u32) -> bool {
    false
}

#[cfg(not(unix))]
fn kill(_pid: u32) {}

/// The checks `upgram self-test` runs in a new binary before it may replace the running one:
/// its cryptography signs and verifies (and refuses a changed body), its decoder parses.
pub fn self_check() -> Result<(), SelfCheckError> {
    use upgram_core::sign::{KeyRing, ReplySigner};
    use upgram_core::wire::MessageKind;
    let signer = ReplySigner::from_seed(&[7; 32]);
    let body = b"<response/>";
    let block = signer.sign(MessageKind::Response, None, body);
    let mut ring = KeyRing::new();
    ring.add(signer.verifying_key());
    if ring.verify(MessageKind::Response, None, body, &block).is_err()
        || ring.verify(MessageKind::Response, None, b"<response></response>", &block).is_ok()
    {
        return Err(SelfCheckError::Signatures);
    }
    if "1.2.3".parse::<upgram_core::version::Version<'_>>().is_err() {
        return Err(SelfCheckError::Decoder);
    }
    Ok(())
}

/// What a failed self-check found broken.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SelfCheckError {
    /// Signing and verifying do not agree.
    #[error("self-test failed: signatures do not verify as they should")]
    Signatures,
    /// The decoder does not parse what it should.
    #[error("self-test failed: the decoder does not parse a version")]
    Decoder,
}

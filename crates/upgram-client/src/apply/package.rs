//! Install packages (SPEC.md §5.8): the verified package is run directly, never
//! through a shell, with its arguments split at spaces, in the installation root, under a
//! timeout; its exit status maps to success, success-needs-restart (3010, 1641) or failure.
//!
//! Before it runs, the module's journal records the package and the hashes of the module's
//! recorded files. A crash while it runs is judged on recovery by looking at the installation,
//! not by running the installer again: if every recorded file still has its recorded hash, the
//! installer changed nothing that is known and the journal is dropped (the next update may run
//! it); otherwise the module is marked interrupted and updates refuse to run its package until
//! it is repaired.
//!
//! The installer runs in a process group of its own: when it overruns its timeout the whole
//! group is killed, so a child it forked cannot outlive it and go on changing the
//! installation.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How an installer run ended.
#[derive(Debug)]
pub enum InstallResult {
    /// Exit status 0.
    Success,
    /// Exit status 3010 or 1641: done, the application or system must restart.
    SuccessRestart,
    /// Anything else: another status, a signal, a timeout, or it could not start.
    Failure(InstallFailure),
}

impl InstallResult {
    /// Whether the installer succeeded (with or without a restart).
    pub fn succeeded(&self) -> bool {
        matches!(self, Self::Success | Self::SuccessRestart)
    }
}

/// Why an installer run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallFailure {
    /// It exited with another status.
    #[error("the installer exited with status {0}")]
    Status(i32),
    /// A signal ended it.
    #[error("the installer was ended by a signal")]
    Signal,
    /// It overran its time and was killed with its process group.
    #[error("the installer did not finish within {0:?} and was stopped, with every process it started")]
    Timeout(Duration),
    /// It could not be started or waited for.
    #[error("the installer could not be run: {0}")]
    Io(#[source] std::io::Error),
}

/// The installer's arguments: `args` split at runs of spaces, no quoting (SPEC.md §5.8).
pub fn split_args(args: Option<&str>) -> Vec<String> {
    args.unwrap_or("").split(' ').filter(|a| !a.is_empty()).map(str::to_owned).collect()
}

/// Maps an exit code to a result.
pub fn map_exit(code: Option<i32>) -> InstallResult {
    match code {
        Some(0) => InstallResult::Success,
        Some(3010 | 1641) => InstallResult::SuccessRestart,
        Some(code) => InstallResult::Failure(InstallFailure::Status(code)),
        None => InstallResult::Failure(InstallFailure::Signal),
    }
}

/// Copies the staged package to `run_dir` as an executable and returns its path.
pub fn prepare(staged: &Path, run_dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(run_dir)?;
    let path = run_dir.join(name);
    std::fs::copy(staged, &path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::File::open(&path)?.sync_all()?;
    Ok(path)
}

/// The log of the install package of `module` at `version` in the installation at `root`: its
/// standard output and standard error, of its last run.
pub fn installer_log(root: &Path, module: &str, version: &str) -> PathBuf {
    crate::layout::Layout::new(root).meta().join("logs").join(format!("{module}-{version}.log"))
}

/// Opens [`installer_log`] afresh, for both output streams of the installer.
fn open_log(root: &Path, module: &str, version: &str) -> std::io::Result<(Stdio, Stdio)> {
    let path = installer_log(root, module, version);
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder)?;
    }
    let log = std::fs::File::create(&path)?;
    // One open file for both streams: their lines interleave as the installer wrote them.
    let again = log.try_clone()?;
    Ok((Stdio::from(log), Stdio::from(again)))
}

/// Runs `program` with `args` in `root`, with `UPGRAM_ROOT`, `UPGRAM_MODULE` and
/// `UPGRAM_VERSION` set, killing it after `timeout`. Its standard output and standard error go
/// to [`installer_log`], never to the caller's (whose standard output may be a script's JSON).
pub fn run(
    program: &Path,
    args: &[String],
    root: &Path,
    module: &str,
    version: &str,
    timeout: Duration,
) -> InstallResult {
    let (stdout, stderr) = match open_log(root, module, version) {
        Ok(streams) => streams,
        Err(e) => return InstallResult::Failure(InstallFailure::Io(e)),
    };
    let mut command = Command::new(program);
    command
        .stdout(stdout)
        .stderr(stderr)
        .args(args)
        .current_dir(root)
        .env("UPGRAM_ROOT", root)
        .env("UPGRAM_MODULE", module)
        .env("UPGRAM_VERSION", version)
        .stdin(Stdio::null());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // A group of its own, so a timeout ends whatever it started too.
        command.process_group(0);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return InstallResult::Failure(InstallFailure::Io(e)),
    };
    match wait_timeout(&mut child, timeout) {
        Ok(Some(status)) => map_exit(status.code()),
        Ok(None) => InstallResult::Failure(InstallFailure::Timeout(timeout)),
        Err(e) => InstallResult::Failure(InstallFailure::Io(e)),
    }
}

/// Waits for `child` to exit; kills it after `timeout` (then `Ok(None)`), with its process
/// group when it leads one.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait()? {
            Some(status) => return Ok(Some(status)),
            None if Instant::now() >= deadline => {
                kill_group(child);
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Kills the process group `child` leads, if it leads one (installers do; see [`run`]).
#[cfg(unix)]
fn kill_group(child: &Child) {
    let Some(pid) = i32::try_from(child.id()).ok().and_then(rustix::process::Pid::from_raw) else { return };
    if rustix::process::getpgid(Some(pid)).is_ok_and(|group| group == pid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

#[cfg(not(unix))]
fn kill_group(_child: &Child) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_and_exit_codes() {
        assert_eq!(split_args(Some("  /S  --quiet ")), ["/S", "--quiet"]);
        assert!(split_args(None).is_empty());
        assert!(matches!(map_exit(Some(0)), InstallResult::Success));
        assert!(matches!(map_exit(Some(3010)), InstallResult::SuccessRestart));
        assert!(matches!(map_exit(Some(1641)), InstallResult::SuccessRestart));
        assert!(matches!(map_exit(Some(1)), InstallResult::Failure(_)));
        assert!(matches!(map_exit(None), InstallResult::Failure(_)));
    }
}

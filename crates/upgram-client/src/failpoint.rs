//! Crash and full-disk injection for the tests that kill real processes at every step.
//!
//! When the environment variable [`FAILPOINT_VAR`] names a step, the process aborts right after
//! that step's journal record, as `kill -9` would stop it, or a write fails as on a full disk;
//! the step names are listed in [`crate::apply`]. Unset, it costs one environment lookup per
//! step.

use std::io;

/// The environment variable that names a step to crash at.
pub const FAILPOINT_VAR: &str = "UPGRAM_FAILPOINT";

/// Aborts the process if `UPGRAM_FAILPOINT` names this step.
pub(crate) fn failpoint(name: &str) {
    if std::env::var_os(FAILPOINT_VAR).is_some_and(|v| v == name) {
        std::process::abort();
    }
}

/// Fails with "no space left on device" if `UPGRAM_FAILPOINT` names this step.
pub(crate) fn injected_enospc(name: &str) -> io::Result<()> {
    if std::env::var_os(FAILPOINT_VAR).is_some_and(|v| v == name) {
        return Err(io::Error::from_raw_os_error(28));
    }
    Ok(())
}

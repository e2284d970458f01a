//! The executable flag of a file list entry (SPEC.md §5.4, attribute `exec` of §4.4) applied to
//! a file before it is renamed into place, so no program ever runs it with the wrong mode.
//!
//! The file it is applied to starts with the mode the rest of the mode rule wants: a replaced
//! file's copy carries the old file's permissions; a new file's copy carries its staged
//! payload's, written with the default mode (0666 less the umask).

use std::io;
use std::path::Path;

/// Sets (`executable`) or clears the execute permission bits of `path`, keeping its other
/// mode bits (SPEC.md §5.4). Does nothing where files have no permission bits.
pub(crate) fn set_executable(path: &Path, executable: bool) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut permissions = std::fs::metadata(path)?.permissions();
        let mode = executable_mode(permissions.mode(), executable);
        if mode != permissions.mode() {
            permissions.set_mode(mode);
            std::fs::set_permissions(path, permissions)?;
        }
    }
    #[cfg(not(unix))]
    let _ = (path, executable);
    Ok(())
}

/// `mode` made executable — the owner's execute bit, and each other execute bit whose read bit
/// is set (0644 → 0755, 0640 → 0750, 0600 → 0700) — or with its three execute bits cleared.
#[cfg_attr(not(unix), allow(dead_code))]
fn executable_mode(mode: u32, executable: bool) -> u32 {
    if executable { mode | 0o100 | ((mode & 0o444) >> 2) } else { mode & !0o111 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execute_bits_follow_the_read_bits_and_nothing_else_changes() {
        for (mode, executable, expected) in [
            (0o644, true, 0o755),
            (0o640, true, 0o750),
            (0o600, true, 0o700),
            (0o200, true, 0o300),
            (0o755, true, 0o755),
            (0o4644, true, 0o4755),
            (0o755, false, 0o644),
            (0o4711, false, 0o4600),
            (0o100644, true, 0o100755),
        ] {
            assert_eq!(executable_mode(mode, executable), expected, "{mode:o} executable={executable}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_real_file_gets_and_loses_its_execute_bits() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tool");
        std::fs::write(&path, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        set_executable(&path, true).unwrap();
        assert_eq!(mode(&path), 0o750);
        set_executable(&path, false).unwrap();
        assert_eq!(mode(&path), 0o640);
    }
}

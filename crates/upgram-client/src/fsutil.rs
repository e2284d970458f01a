//! Durable file work: what survives a crash once the call returns.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Syncs the folder holding `path`, so that a file created or renamed in it survives a crash.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

/// Writes `bytes` to `path` atomically and durably: a new temporary file beside it (a hidden
/// name of its own, so concurrent writers of neighbouring files never share one), synced,
/// renamed over it, then the folder synced. A crash leaves the old content or the new one,
/// never a mix; a failed write leaves no temporary file.
pub fn write_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::create_dir_all(folder)?;
    let (temp, mut file) = create_temp(folder, path)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all()).and_then(|()| fs::rename(&temp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    sync_parent(path)
}

/// Creates a new file `.<name>.tmp-<process id>-<counter>` in `folder`, never opening one that
/// exists (a crashed process with the same id may have left one).
fn create_temp(folder: &Path, path: &Path) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map_or_else(|| "file".into(), |name| name.to_string_lossy());
    let mut attempts = 0;
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = folder.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => attempts += 1,
            opened => return opened.map(|file| (temp, file)),
        }
    }
}

/// Renames `from` to `to` (creating `to`'s folder) and syncs both folders.
pub fn rename_synced(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::rename(from, to)?;
    sync_parent(to)?;
    sync_parent(from)
}

/// Copies `from` to `to` and syncs the copy.
pub fn copy_synced(from: &Path, to: &Path) -> io::Result<()> {
    fs::copy(from, to)?;
    File::open(to)?.sync_all()
}

/// Removes `folder` and everything in it; a missing folder is fine.
pub fn remove_tree(folder: &Path) -> io::Result<()> {
    match fs::remove_dir_all(folder) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(folder: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(folder).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn writes_replace_whole_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        write_durable(&path, b"{\"old\": 1}").unwrap();
        write_durable(&path, b"{}").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{}");
        assert_eq!(names(&dir.path().join("sub")), ["state.json"]);
    }

    #[test]
    fn neighbours_of_one_stem_never_share_a_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The name `state.json` and `state.lock` would both have used; someone else's file.
        fs::write(dir.path().join("state.tmp"), b"not ours").unwrap();
        std::thread::scope(|scope| {
            for name in ["state.json", "state.lock", "state.toml", "state"] {
                let path = dir.path().join(name);
                scope.spawn(move || {
                    for i in 0..50u32 {
                        write_durable(&path, format!("{name} {i}").as_bytes()).unwrap();
                    }
                });
            }
        });
        for name in ["state.json", "state.lock", "state.toml", "state"] {
            assert_eq!(fs::read_to_string(dir.path().join(name)).unwrap(), format!("{name} 49"));
        }
        assert_eq!(fs::read(dir.path().join("state.tmp")).unwrap(), b"not ours");
        assert_eq!(names(dir.path()), ["state", "state.json", "state.lock", "state.tmp", "state.toml"]);
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("busy");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"x").unwrap();
        assert!(write_durable(&target, b"x").is_err(), "a non-empty folder cannot be renamed over");
        assert_eq!(names(dir.path()), ["busy"]);
    }
}

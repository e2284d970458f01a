//! Durable file writes, the one way the server and the publisher put a file in place: a new
//! hidden temporary file beside the target (a name no other writer uses), written and synced,
//! then moved to its name, then the folder synced. A reader never sees half a file under a
//! real name, and once a write returns, a crash leaves the new file.
//!
//! A file that must not replace an existing one (a signing key) is put in place with a hard
//! link, which fails when the name is taken: there is no moment between a check and a rename
//! in which another writer's file could be replaced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

/// A durable write that failed, naming the file or folder it failed on.
#[derive(Debug, Error)]
#[error("{}: {source}", path.display())]
pub(crate) struct WriteError {
    /// The file or folder.
    pub path: PathBuf,
    /// The I/O error; [`io::ErrorKind::AlreadyExists`] when [`Replace::Refuse`] met a file.
    #[source]
    pub source: io::Error,
}

impl WriteError {
    fn at(path: &Path) -> impl Fn(io::Error) -> WriteError + '_ {
        move |source| WriteError { path: path.to_owned(), source }
    }
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> io::Error {
        io::Error::new(e.source.kind(), e)
    }
}

/// Whether a write may replace a file already at its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replace {
    /// Replace it atomically (rename over it).
    Overwrite,
    /// Fail with [`io::ErrorKind::AlreadyExists`] and leave it as it is.
    Refuse,
}

/// Permission bits of a file only its owner may read (keys and secrets).
pub(crate) const OWNER_ONLY: u32 = 0o600;

/// How many names [`create_temp`] tries before giving up: a name is only taken when a file of a
/// crashed process with the same id is left over.
const TEMP_ATTEMPTS: u32 = 16;

/// Creates a new hidden temporary file in `folder` for `purpose` (the target's name, say),
/// never opening one that exists: `.<purpose>.tmp-<process id>-<counter>`. With `mode`, the
/// file is created with those permission bits (Unix).
pub(crate) fn create_temp(folder: &Path, purpose: &str, mode: Option<u32>) -> Result<(PathBuf, File), WriteError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut attempt = 0;
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = folder.join(format!(".{purpose}.tmp-{}-{n}", std::process::id()));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if let Some(mode) = mode {
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        match options.open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt + 1 < TEMP_ATTEMPTS => attempt += 1,
            Err(source) => return Err(WriteError { path, source }),
        }
    }
}

/// Writes `bytes` to a new temporary file in `folder` (see [`create_temp`]) and syncs it;
/// returns its path. Nothing is left behind on failure.
pub(crate) fn write_temp(folder: &Path, purpose: &str, bytes: &[u8], mode: Option<u32>) -> Result<PathBuf, WriteError> {
    let (temp, mut file) = create_temp(folder, purpose, mode)?;
    if let Err(source) = file.write_all(bytes).and_then(|()| file.sync_all()) {
        let _ = fs::remove_file(&temp);
        return Err(WriteError { path: temp, source });
    }
    Ok(temp)
}

/// Moves the complete, synced file `temp` to `path` in the same folder, replacing a file there
/// or not as `replace` says. The temporary file is gone afterwards, whatever the outcome. The
/// folder is not synced: call [`sync_dir`] once after a batch of moves.
pub(crate) fn place(temp: &Path, path: &Path, replace: Replace) -> Result<(), WriteError> {
    let moved = match replace {
        Replace::Overwrite => fs::rename(temp, path),
        // A link fails when the name is taken, atomically; then the temporary name goes.
        Replace::Refuse => fs::hard_link(temp, path).and_then(|()| fs::remove_file(temp)),
    };
    moved.map_err(|source| {
        let _ = fs::remove_file(temp);
        WriteError { path: path.to_owned(), source }
    })
}

/// Syncs a folder, so that the files created, renamed and linked in it survive a crash.
pub(crate) fn sync_dir(folder: &Path) -> Result<(), WriteError> {
    File::open(folder).and_then(|dir| dir.sync_all()).map_err(WriteError::at(folder))
}

/// Writes `bytes` to `path` durably: a temporary file beside it, synced, put in place (see
/// [`place`]), then the folder synced. The folder must exist.
pub(crate) fn write_file(path: &Path, bytes: &[u8], replace: Replace, mode: Option<u32>) -> Result<(), WriteError> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = path.file_name().map_or_else(|| "file".into(), |name| name.to_string_lossy());
    let temp = write_temp(folder, &name, bytes, mode)?;
    place(&temp, path, replace)?;
    sync_dir(folder)
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
    fn writes_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        write_file(&path, b"one", Replace::Overwrite, None).unwrap();
        write_file(&path, b"two", Replace::Overwrite, None).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(names(dir.path()), ["a.toml"]);
    }

    #[test]
    fn refuse_keeps_the_existing_file_and_says_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prod.key");
        write_file(&path, b"first", Replace::Refuse, Some(OWNER_ONLY)).unwrap();
        let e = write_file(&path, b"second", Replace::Refuse, Some(OWNER_ONLY)).unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(e.path, path);
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(names(dir.path()), ["prod.key"], "the refused write's temporary file is removed");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn temporary_names_are_never_shared_nor_reused() {
        let dir = tempfile::tempdir().unwrap();
        // A file another writer (or a crashed one) left under the old fixed name is untouched.
        fs::write(dir.path().join("prod.tmp"), b"not ours").unwrap();
        let (a, _) = create_temp(dir.path(), "prod.key", None).unwrap();
        let (b, _) = create_temp(dir.path(), "prod.key", None).unwrap();
        let (c, _) = create_temp(dir.path(), "prod.secret", None).unwrap();
        assert!(a != b && b != c && a != c, "{a:?} {b:?} {c:?}");
        assert_eq!(fs::read(dir.path().join("prod.tmp")).unwrap(), b"not ours");
    }

    #[test]
    fn a_failed_move_removes_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty folder: the rename fails.
        let target = dir.path().join("busy");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"x").unwrap();
        assert!(write_file(&target, b"x", Replace::Overwrite, None).is_err());
        assert_eq!(names(dir.path()), ["busy"]);
    }
}

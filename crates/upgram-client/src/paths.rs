//! Where a file id lands on disk: under the installation root and nowhere else.
//!
//! File ids are already relative paths without `.` or `..` segments (the decoder refuses
//! others, SPEC.md §4.2), but the installation itself could hold a symbolic link that leads
//! out of it: every existing component on the way is checked with `symlink_metadata`, so a
//! link, an absolute id or a climbing id is refused before anything is read or written.

use std::io;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;
use upgram_core::body::value::is_valid_file_id;

/// Why a file id cannot be placed under the root.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PathError {
    /// Not a valid file id (absolute, `..`, empty segment, backslash, control character).
    #[error("file id `{id}` is not a safe relative path")]
    Invalid {
        /// The file id.
        id: String,
    },
    /// A component on the way is a symbolic link.
    #[error("file id `{id}`: {} is a symbolic link; refusing to follow it out of the installation", at.display())]
    Symlink {
        /// The file id.
        id: String,
        /// The link.
        at: PathBuf,
    },
    /// A component on the way exists but is not a folder.
    #[error("file id `{id}`: {} is not a folder", at.display())]
    NotAFolder {
        /// The file id.
        id: String,
        /// The component.
        at: PathBuf,
    },
    /// The file system could not be asked.
    #[error("file id `{id}`: {source}")]
    Io {
        /// The file id.
        id: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// The path of file `id` under `root`, after checking that no existing component on the way
/// (the file itself included) is a symbolic link and every parent is a folder. Components that
/// do not exist yet are fine: they will be created as plain folders.
pub fn resolve(root: &Path, id: &str) -> Result<PathBuf, PathError> {
    let invalid = || PathError::Invalid { id: id.to_owned() };
    if !is_valid_file_id(id) || Path::new(id).components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(invalid());
    }
    let segments: Vec<&str> = id.split('/').collect();
    let mut path = root.to_path_buf();
    for (i, segment) in segments.iter().enumerate() {
        path.push(segment);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(PathError::Io { id: id.to_owned(), source }),
        };
        if meta.file_type().is_symlink() {
            return Err(PathError::Symlink { id: id.to_owned(), at: path });
        }
        let last = i + 1 == segments.len();
        if !last && !meta.is_dir() {
            return Err(PathError::NotAFolder { id: id.to_owned(), at: path });
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("install");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/app"), "x").unwrap();
        assert_eq!(resolve(&root, "bin/app").unwrap(), root.join("bin/app"));
        assert_eq!(resolve(&root, "new/dir/file").unwrap(), root.join("new/dir/file"), "missing parts are fine");
        for bad in ["../outside", "/etc/passwd", "a/../../b", "a//b", "", "a\\..\\b", "./a", "a/./b"] {
            assert!(matches!(resolve(&root, bad), Err(PathError::Invalid { .. })), "{bad:?}");
        }
        assert!(matches!(resolve(&root, "bin/app/inside"), Err(PathError::NotAFolder { .. })));
    }

    #[cfg(unix)]
    #[test]
    fn symbolic_links_on_the_way_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("install");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), root.join("victim-link")).unwrap();
        assert!(matches!(resolve(&root, "escape/file"), Err(PathError::Symlink { .. })));
        assert!(matches!(resolve(&root, "victim-link"), Err(PathError::Symlink { .. })), "the file itself a link");
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "nothing written outside");
    }
}

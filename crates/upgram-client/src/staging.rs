//! Staging downloads (C6; issue 5): every payload is fetched into a staging folder on the same
//! file system as the installation, resumed with an HTTP Range request after an interruption,
//! capped at its signed size, checked against its signed SHA-256 and synced — before anything
//! the user sees changes. A full disk or a bad download ends here, with the installation
//! untouched; a partial download that ran into a full disk is removed, not kept to resume, so
//! that giving up gives the space back.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;
use upgram_core::Sha256Digest;

use crate::fetch::{FetchError, Fetcher};
use crate::journal::sync_parent;

/// Why a payload could not be staged.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StageError {
    /// Fetching failed (the partial download is kept, to resume).
    #[error("download: {0}")]
    Fetch(#[from] FetchError),
    /// The download ended shorter than the signed size (kept, to resume).
    #[error("{url}: {len} of {size} bytes arrived; run again to resume")]
    Short {
        /// The URL.
        url: String,
        /// Bytes staged.
        len: u64,
        /// The signed size.
        size: u64,
    },
    /// The bytes do not hash to the signed SHA-256 (discarded).
    #[error("{url}: the download hashes to {found}, not to the signed {expected}; discarded")]
    Hash {
        /// The URL.
        url: String,
        /// The signed hash.
        expected: Sha256Digest,
        /// What arrived.
        found: Sha256Digest,
    },
    /// Writing to the staging folder failed (a full disk ends here).
    #[error("staging {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> StageError + '_ {
    move |source| StageError::Io { path: path.to_owned(), source }
}

/// SHA-256 and length of the file at `path`, read in blocks.
pub fn hash_file(path: &Path) -> io::Result<(Sha256Digest, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        len += n as u64;
    }
    Ok((Sha256Digest(hasher.finalize().into()), len))
}

/// The staged file of a payload with this hash.
pub fn staged_path(dir: &Path, sha256: &Sha256Digest) -> PathBuf {
    dir.join(sha256.to_hex())
}

/// Stages the payload at `url` (exactly `size` bytes hashing to `sha256`) into `dir`, resuming a
/// partial download left by an earlier run; returns the staged file. A payload already staged
/// is not fetched again.
pub async fn stage(
    fetcher: &impl Fetcher,
    url: &str,
    size: u64,
    sha256: &Sha256Digest,
    dir: &Path,
) -> Result<PathBuf, StageError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let done = staged_path(dir, sha256);
    if hash_file(&done).is_ok_and(|(found, len)| found == *sha256 && len == size) {
        return Ok(done);
    }
    let partial = dir.join(format!("{}.part", sha256.to_hex()));
    let have = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0).min(size);
    if have < size {
        let (bytes, ranged) = fetcher.fetch_from(url, have, size - have).await?;
        let mut file =
            OpenOptions::new().create(true).write(true).truncate(false).open(&partial).map_err(io_error(&partial))?;
        if ranged {
            file.set_len(have).map_err(io_error(&partial))?;
            io::Seek::seek(&mut file, io::SeekFrom::Start(have)).map_err(io_error(&partial))?;
        } else {
            file.set_len(0).map_err(io_error(&partial))?;
        }
        let written = file
            .write_all(&bytes)
            .and_then(|()| crate::apply::injected_enospc("enospc:stage"))
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            // Kept, a partial download that filled the disk would keep it full after we give up.
            if e.kind() == io::ErrorKind::StorageFull {
                let _ = fs::remove_file(&partial);
            }
            return Err(io_error(&partial)(e));
        }
    }
    let (found, len) = hash_file(&partial).map_err(io_error(&partial))?;
    if len < size {
        return Err(StageError::Short { url: url.to_owned(), len, size });
    }
    if found != *sha256 || len != size {
        let _ = fs::remove_file(&partial);
        return Err(StageError::Hash { url: url.to_owned(), expected: *sha256, found });
    }
    fs::rename(&partial, &done).map_err(io_error(&done))?;
    sync_parent(&done).map_err(io_error(&done))?;
    Ok(done)
}

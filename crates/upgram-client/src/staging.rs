//! Staging downloads: every payload is fetched into a staging folder on the same
//! file system as the installation, resumed with an HTTP Range request after an interruption,
//! capped at its signed size, checked against its signed SHA-256 and synced — before anything
//! the user sees changes. A full disk or a bad download ends here, with the installation
//! untouched; a partial download that ran into a full disk is removed, not kept to resume, so
//! that giving up gives the space back.
//!
//! Whoever stages can watch the bytes arrive through a [`Progress`] (an embedder draws its
//! own progress display; the `upgram` command draws bars on a terminal).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;
use upgram_core::Sha256Digest;

use crate::fetch::{FetchError, FetchedRange, Fetcher, Sink};
use crate::fsutil::sync_parent;

/// Why a payload could not be staged.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StageError {
    /// Fetching failed (the partial download is kept, to resume, unless more bytes came than
    /// signed).
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
    /// The server announces a resource of another length than the signed size (the partial
    /// download is kept: it may come from a mirror that had it right).
    #[error("{url}: the server has {announced} bytes, the signed size is {size}")]
    Size {
        /// The URL.
        url: String,
        /// The length in the server's `Content-Range`.
        announced: u64,
        /// The signed size.
        size: u64,
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

/// One payload download, as a [`Progress`] hears of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Download<'a> {
    /// The module the payload belongs to (empty when staged outside an update).
    pub module: &'a str,
    /// What the payload is, for a person: a file id, `package`, or `FILE (delta)`.
    pub name: &'a str,
    /// Where it comes from.
    pub url: &'a str,
    /// Its signed size in bytes.
    pub size: u64,
}

/// Watches payload downloads. Every method has a default that does nothing, so an
/// embedder implements only what it shows. For each download that fetches anything the calls
/// are `started`, any number of `advanced`, then `finished`; a payload already staged whole is
/// not downloaded and not reported. Downloads of one [`crate::flows::update`] run one
/// after the other, but an embedder staging concurrently gets interleaved calls: each names its
/// download.
pub trait Progress: Send + Sync {
    /// `download` begins, `resumed` of its bytes already staged by an earlier run.
    fn started(&self, download: &Download<'_>, resumed: u64) {
        let _ = (download, resumed);
    }

    /// `bytes` more bytes of `download` arrived. A server that ignores the Range request
    /// resends from the start, so the total may pass the size less `resumed`.
    fn advanced(&self, download: &Download<'_>, bytes: u64) {
        let _ = (download, bytes);
    }

    /// The transfer of `download` ended: `complete` if every byte arrived (the hash is checked
    /// after this), else it failed and what arrived is kept to resume.
    fn finished(&self, download: &Download<'_>, complete: bool) {
        let _ = (download, complete);
    }
}

/// The [`Progress`] of downloads nobody watches.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

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
    let download = Download { module: "", name: url, url, size };
    stage_reporting(fetcher, &download, sha256, dir, &NoProgress).await
}

/// [`stage`], telling `progress` how the download goes.
pub async fn stage_reporting(
    fetcher: &impl Fetcher,
    download: &Download<'_>,
    sha256: &Sha256Digest,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<PathBuf, StageError> {
    let (url, size) = (download.url, download.size);
    let done = staged_path(dir, sha256);
    let partial = dir.join(format!("{}.part", sha256.to_hex()));
    // Hashing and syncing are blocking file work: off the runtime's threads.
    let (dir_owned, done_owned, partial_owned, expected) = (dir.to_owned(), done.clone(), partial.clone(), *sha256);
    let have = blocking(move || {
        fs::create_dir_all(&dir_owned).map_err(io_error(&dir_owned))?;
        if hash_file(&done_owned).is_ok_and(|(found, len)| found == expected && len == size) {
            return Ok(None);
        }
        Ok(Some(fs::metadata(&partial_owned).map(|m| m.len()).unwrap_or(0).min(size)))
    })
    .await?;
    let Some(have) = have else { return Ok(done) };
    if have < size {
        progress.started(download, have);
        let fetched = fetch_into(fetcher, download, have, &partial, progress).await;
        progress.finished(download, fetched.is_ok());
        fetched?;
    }
    let url = url.to_owned();
    blocking(move || {
        let (found, len) = hash_file(&partial).map_err(io_error(&partial))?;
        if len < size {
            return Err(StageError::Short { url, len, size });
        }
        if found != expected || len != size {
            let _ = fs::remove_file(&partial);
            return Err(StageError::Hash { url, expected, found });
        }
        fs::rename(&partial, &done).map_err(io_error(&done))?;
        sync_parent(&done).map_err(io_error(&done))?;
        Ok(done)
    })
    .await
}

/// Runs blocking file work on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StageError> + Send + 'static,
) -> Result<T, StageError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(StageError::Io { path: PathBuf::new(), source: io::Error::other(e) }))
}

/// Streams the bytes of `download` from `have` on into `partial` (from 0 if the server sends the
/// whole body), and syncs what arrived, also when the transfer broke off, so that the next run
/// resumes from there.
async fn fetch_into(
    fetcher: &impl Fetcher,
    download: &Download<'_>,
    have: u64,
    partial: &Path,
    progress: &dyn Progress,
) -> Result<(), StageError> {
    let mut sink = PartFile { path: partial, have, download, progress, file: None, failure: None };
    let fetched = fetcher.fetch_into(download.url, have, download.size, &mut sink).await;
    // Writing out the buffer and syncing: blocking file work, off the runtime's threads.
    let file = sink.file.take();
    let closed = tokio::task::spawn_blocking(move || close(file)).await.unwrap_or_else(|e| Err(io::Error::other(e)));
    let result = match (sink.failure.take(), fetched, closed) {
        (Some(failure), _, _) => Err(failure),
        (None, Err(error), _) => Err(StageError::Fetch(error)),
        (None, Ok(_), closed) => closed.map_err(io_error(partial)),
    };
    // Kept, a partial download that filled the disk would keep it full after we give up; and
    // bytes of a resource larger than signed are not the payload.
    let discard = match &result {
        Err(StageError::Io { source, .. }) => source.kind() == io::ErrorKind::StorageFull,
        Err(StageError::Fetch(FetchError::TooLong { .. })) => true,
        _ => false,
    };
    if discard {
        let _ = fs::remove_file(partial);
    }
    result
}

/// Writes out what is buffered and syncs the file, whatever became of the transfer.
fn close(file: Option<BufWriter<File>>) -> io::Result<()> {
    match file {
        Some(file) => file.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all(),
        None => Ok(()),
    }
}

/// Size of the buffer in front of a partial file: chunks from the network are small.
const WRITE_BUFFER: usize = 256 * 1024;

/// The partial file of a download, as the [`Sink`] its fetcher streams into. A failure is kept
/// typed in `failure` (the fetcher hears only that the sink stopped).
struct PartFile<'a> {
    path: &'a Path,
    /// Bytes already staged by an earlier run.
    have: u64,
    download: &'a Download<'a>,
    progress: &'a dyn Progress,
    file: Option<BufWriter<File>>,
    failure: Option<StageError>,
}

impl PartFile<'_> {
    /// Keeps `failure` and tells the fetcher to stop.
    fn fail(&mut self, failure: StageError) -> io::Error {
        let stop = match &failure {
            StageError::Io { source, .. } => io::Error::new(source.kind(), source.to_string()),
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        };
        self.failure = Some(failure);
        stop
    }

    fn open(&self, start: u64) -> io::Result<BufWriter<File>> {
        let mut file = OpenOptions::new().create(true).write(true).truncate(false).open(self.path)?;
        file.set_len(start)?;
        file.seek(SeekFrom::Start(start))?;
        Ok(BufWriter::with_capacity(WRITE_BUFFER, file))
    }
}

impl Sink for PartFile<'_> {
    fn begin(&mut self, range: &FetchedRange) -> io::Result<()> {
        let (url, size) = (self.download.url, self.download.size);
        if range.start != 0 && range.start != self.have {
            let sent = format!("bytes from {}", range.start);
            return Err(self.fail(FetchError::Range { url: url.to_owned(), asked: self.have, sent }.into()));
        }
        if let Some(announced) = range.total.filter(|&total| range.start != 0 && total != size) {
            return Err(self.fail(StageError::Size { url: url.to_owned(), announced, size }));
        }
        match self.open(range.start) {
            Ok(file) => {
                self.file = Some(file);
                Ok(())
            }
            Err(source) => Err(self.fail(StageError::Io { path: self.path.to_owned(), source })),
        }
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("a body chunk before its start"));
        };
        let written = file.write_all(chunk).and_then(|()| crate::failpoint::injected_enospc("enospc:stage"));
        if let Err(source) = written {
            return Err(self.fail(StageError::Io { path: self.path.to_owned(), source }));
        }
        self.progress.advanced(self.download, chunk.len() as u64);
        Ok(())
    }
}

//! The content-addressed payload store of a catalog, `CATALOG/store/<sha256>`: files,
//! install packages and record deltas (SPEC.md §7.2), each named by the 64 lowercase hex digits
//! of its SHA-256, so that any static web server can serve the folder as it is.
//!
//! A blob is written to a hidden temporary file in `store/`, synced, and renamed to its name:
//! a reader (or a crash) never sees half a blob under a real name. A blob already present
//! with the right size is not written again. Temporary names start with `.`, which the loader
//! and web servers configured for the catalog ignore; a crash can leave one behind, harmlessly.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use upgram_core::Sha256Digest;

use super::error::CatalogError;
use super::model::Blob;
use crate::durable::{self, Replace};

/// The store folder of the catalog at `dir`.
pub fn store_dir(dir: &Path) -> PathBuf {
    dir.join("store")
}

/// Where the blob with this hash lives in the catalog at `dir`.
pub fn blob_path(dir: &Path, sha256: &Sha256Digest) -> PathBuf {
    store_dir(dir).join(sha256.to_hex())
}

/// Streams `source` into the store of the catalog at `dir` (created if absent) and returns
/// its hash and size. Durable when it returns: the blob and the store folder are synced.
pub fn store_blob(dir: &Path, source: impl Read) -> Result<Blob, CatalogError> {
    let store = store_dir(dir);
    fs::create_dir_all(&store).map_err(CatalogError::io(&store))?;
    let blob = put_reader(&store, source, None)?;
    sync_dir(&store)?;
    Ok(blob)
}

/// Stores the file at `path` (streamed, never read whole) in the catalog at `dir`; durable
/// when it returns. The file is hashed first and only copied when the store lacks it.
pub fn store_file(dir: &Path, path: &Path) -> Result<Blob, CatalogError> {
    let store = store_dir(dir);
    fs::create_dir_all(&store).map_err(CatalogError::io(&store))?;
    let blob = hash_file(path)?;
    put_file(&store, path, blob)?;
    sync_dir(&store)?;
    Ok(blob)
}

/// Hashes and measures the file at `path`, streaming.
pub fn hash_file(path: &Path) -> Result<Blob, CatalogError> {
    let file = File::open(path).map_err(CatalogError::io(path))?;
    let mut sink = HashingWriter::new(io::sink());
    copy(file, &mut sink, path)?;
    Ok(sink.blob())
}

/// Copies the file at `path`, whose hash and size the caller computed, into the store folder
/// `store` unless already there; fails if the file no longer has that content. Syncs the
/// blob, not the folder.
pub(crate) fn put_file(store: &Path, path: &Path, expected: Blob) -> Result<(), CatalogError> {
    if is_present(store, &expected) {
        return Ok(());
    }
    let file = File::open(path).map_err(CatalogError::io(path))?;
    let blob = put_reader(store, file, Some(path))?;
    if blob != expected {
        return Err(CatalogError::Io {
            path: path.to_owned(),
            source: io::Error::other("the file changed while it was being published"),
        });
    }
    Ok(())
}

/// Stores `bytes` in the store folder `store` unless already there. Syncs the blob, not the
/// folder.
pub(crate) fn put_bytes(store: &Path, bytes: &[u8]) -> Result<Blob, CatalogError> {
    let blob = Blob { sha256: Sha256Digest::of(bytes), size: bytes.len() as u64 };
    if is_present(store, &blob) {
        return Ok(blob);
    }
    put_reader(store, bytes, None)
}

/// Whether the store folder `store` has this blob with its size (the content is trusted: only
/// the publisher writes there, through a rename of a complete, synced file).
fn is_present(store: &Path, blob: &Blob) -> bool {
    fs::metadata(store.join(blob.sha256.to_hex())).is_ok_and(|meta| meta.is_file() && meta.len() == blob.size)
}

/// Writes `source` to a temporary file in `store`, then renames it to its hash (replacing a
/// blob of that name with the wrong size, removing the copy when a good one is there).
/// `origin` names the source in read errors.
fn put_reader(store: &Path, source: impl Read, origin: Option<&Path>) -> Result<Blob, CatalogError> {
    let (temp_path, temp) = create_temp(store, "blob")?;
    let mut writer = HashingWriter::new(temp);
    let written = copy(source, &mut writer, origin.unwrap_or(&temp_path))
        .and_then(|()| writer.inner.sync_all().map_err(CatalogError::io(&temp_path)));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp_path);
        return Err(e);
    }
    let blob = writer.blob();
    if is_present(store, &blob) {
        let _ = fs::remove_file(&temp_path);
        return Ok(blob);
    }
    let path = store.join(blob.sha256.to_hex());
    durable::place(&temp_path, &path, Replace::Overwrite).map_err(CatalogError::from_write)?;
    Ok(blob)
}

/// Streams `source` into `sink`; read and write errors both name `path`.
fn copy(mut source: impl Read, sink: &mut impl Write, path: &Path) -> Result<(), CatalogError> {
    io::copy(&mut source, sink).map(drop).map_err(CatalogError::io(path))
}

/// Creates a new hidden temporary file in `folder`, never reusing a name (see
/// [`durable::create_temp`]).
pub(crate) fn create_temp(folder: &Path, purpose: &str) -> Result<(PathBuf, File), CatalogError> {
    durable::create_temp(folder, purpose, None).map_err(CatalogError::from_write)
}

/// Syncs a folder, so that the renames and creations in it survive a crash.
pub(crate) fn sync_dir(folder: &Path) -> Result<(), CatalogError> {
    durable::sync_dir(folder).map_err(CatalogError::from_write)
}

impl CatalogError {
    /// The catalog's form of a failed durable write.
    pub(crate) fn from_write(e: durable::WriteError) -> CatalogError {
        CatalogError::Io { path: e.path, source: e.source }
    }
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self { inner, hasher: Sha256::new(), len: 0 }
    }

    fn blob(&self) -> Blob {
        Blob { sha256: Sha256Digest(self.hasher.clone().finalize().into()), size: self.len }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let written = buf.get(..n).unwrap_or(buf);
        self.hasher.update(written);
        self.len += written.len() as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

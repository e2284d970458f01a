//! The apply journal : an append-only file of checksummed records, each synced to
//! disk before the step it announces is taken, so that after a crash the journal tells exactly
//! which steps may have happened.
//!
//! A record on disk is `length (u32, little endian) ‖ checksum (first 8 bytes of SHA-256 of the
//! payload) ‖ payload (JSON)`. Reading stops at the first record that is incomplete or whose
//! checksum does not match: a record torn by a crash counts as never written, and so does
//! everything after it. Records are generic: the apply engine decides what they say.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use crate::fsutil::sync_parent;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The largest record accepted when reading: anything longer is corruption.
pub const MAX_RECORD_LEN: usize = 1 << 20;
const HEADER_LEN: usize = 4 + 8;

/// Why the journal could not be written or read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Writing, syncing or reading failed.
    #[error("journal {}: {source}", path.display())]
    Io {
        /// The journal file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A record could not be encoded.
    #[error("journal {}: cannot encode a record: {reason}", path.display())]
    Encode {
        /// The journal file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn checksum(payload: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(payload);
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// An open journal, appending.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
}

impl Journal {
    /// Creates a new, empty journal at `path` (failing if one exists: an unfinished journal
    /// must be recovered first), and syncs its folder so the file itself survives a crash.
    pub fn create(path: &Path) -> Result<Self, JournalError> {
        let io_error = |source| JournalError::Io { path: path.to_owned(), source };
        let file = OpenOptions::new().append(true).create_new(true).open(path).map_err(io_error)?;
        sync_parent(path).map_err(io_error)?;
        Ok(Self { file, path: path.to_owned() })
    }

    /// Opens an existing journal to append to it (during recovery).
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|source| JournalError::Io { path: path.to_owned(), source })?;
        Ok(Self { file, path: path.to_owned() })
    }

    /// Appends `record` and syncs it: when this returns, the record survives a crash.
    pub fn append<T: Serialize>(&mut self, record: &T) -> Result<(), JournalError> {
        let payload = serde_json::to_vec(record)
            .map_err(|e| JournalError::Encode { path: self.path.clone(), reason: e.to_string() })?;
        if payload.len() > MAX_RECORD_LEN {
            return Err(JournalError::Encode { path: self.path.clone(), reason: format!("{} bytes", payload.len()) });
        }
        let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&checksum(&payload));
        frame.extend_from_slice(&payload);
        let io_error = |source| JournalError::Io { path: self.path.clone(), source };
        self.file.write_all(&frame).map_err(io_error)?;
        self.file.sync_data().map_err(io_error)
    }
}

/// Every intact record of the journal at `path`, in order, up to the first torn or corrupt one.
/// Also says whether the file ended cleanly (no torn tail).
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<(Vec<T>, bool), JournalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| JournalError::Io { path: path.to_owned(), source })?;
    Ok(decode(&bytes))
}

/// The intact records of a journal's bytes, and whether they end cleanly.
pub fn decode<T: DeserializeOwned>(mut bytes: &[u8]) -> (Vec<T>, bool) {
    let mut records = Vec::new();
    while !bytes.is_empty() {
        let Some((header, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else { return (records, false) };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > MAX_RECORD_LEN || rest.len() < len {
            return (records, false);
        }
        let (payload, tail) = rest.split_at(len);
        if checksum(payload)[..] != header[4..] {
            return (records, false);
        }
        let Ok(record) = serde_json::from_slice(payload) else { return (records, false) };
        records.push(record);
        bytes = tail;
    }
    (records, true)
}

/// Removes a finished journal and syncs its folder.
pub fn remove(path: &Path) -> Result<(), JournalError> {
    let io_error = |source| JournalError::Io { path: path.to_owned(), source };
    std::fs::remove_file(path).map_err(io_error)?;
    sync_parent(path).map_err(io_error)
}

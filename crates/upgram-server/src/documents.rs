//! The fallback documents a server keeps for its HTTP side (SPEC.md §8.4), bounded in count
//! and in bytes, and their copies under `--docs-dir`.
//!
//! Documents leave in order of expiry: an index ordered by `(until, sha256)` beside the map by
//! hash makes every insert, expiry and eviction O(log n), with no scan. Files are written and
//! removed by one writer thread, so a worker never waits on the disk; the writer's queue is
//! bounded (a write that does not fit is skipped, and its document is served from memory only).
//! Files an earlier run left behind (it was stopped or crashed) are removed when their time is
//! over, as if this run had written them.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use upgram_core::Sha256Digest;
use upgram_core::limits::MAX_VALIDITY_SECS;

use crate::server::DOCUMENT_GRACE_SECS;

/// How many documents, and how many bytes of them, a store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentLimits {
    /// Most documents kept.
    pub max_count: usize,
    /// Most bytes kept, summed over the documents.
    pub max_bytes: usize,
}

impl Default for DocumentLimits {
    fn default() -> Self {
        Self { max_count: 16_384, max_bytes: 64 * 1024 * 1024 }
    }
}

/// Most file writes waiting for the writer thread.
const MAX_QUEUED_WRITES: usize = 4096;

#[derive(Debug)]
struct Kept {
    bytes: Bytes,
    until: u64,
    on_disk: bool,
}

/// Fallback documents by SHA-256, each kept until its answer's expiry plus a grace period.
#[derive(Debug)]
pub struct DocumentStore {
    limits: DocumentLimits,
    by_hash: HashMap<Sha256Digest, Kept>,
    by_expiry: BTreeSet<(u64, Sha256Digest)>,
    bytes: usize,
    writer: Option<DocumentWriter>,
}

impl DocumentStore {
    /// An empty store; with `docs_dir`, documents are also written as `doc/<sha256>.xml` under it
    /// and removed when they leave the store.
    pub fn new(limits: DocumentLimits, docs_dir: Option<PathBuf>) -> Self {
        Self {
            limits,
            by_hash: HashMap::new(),
            by_expiry: BTreeSet::new(),
            bytes: 0,
            writer: docs_dir.map(DocumentWriter::start),
        }
    }

    /// The document with this hash, if it is kept.
    pub fn get(&self, sha256: &Sha256Digest) -> Option<Bytes> {
        self.by_hash.get(sha256).map(|kept| kept.bytes.clone())
    }

    /// Whether the document with this hash is kept.
    pub fn contains(&self, sha256: &Sha256Digest) -> bool {
        self.by_hash.contains_key(sha256)
    }

    /// Documents kept.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether no document is kept.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Bytes kept, summed over the documents.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keeps `bytes` (whose hash is `sha256`) until unix time `until`, after dropping what has
    /// expired at `now` and, if still needed, the documents that expire first. A document larger
    /// than the byte bound is not kept. Returns how many documents were evicted early.
    pub fn insert(&mut self, sha256: Sha256Digest, bytes: Bytes, until: u64, now: u64) -> usize {
        self.expire(now);
        if let Some(kept) = self.by_hash.get_mut(&sha256) {
            if until > kept.until {
                self.by_expiry.remove(&(kept.until, sha256));
                self.by_expiry.insert((until, sha256));
                kept.until = until;
            }
            return 0;
        }
        if bytes.len() > self.limits.max_bytes || self.limits.max_count == 0 {
            return 0;
        }
        let mut evicted = 0;
        while self.by_hash.len() >= self.limits.max_count || self.bytes + bytes.len() > self.limits.max_bytes {
            if !self.remove_first() {
                break;
            }
            evicted += 1;
        }
        let on_disk = self.writer.as_ref().is_some_and(|w| w.write(sha256, bytes.clone()));
        self.bytes += bytes.len();
        self.by_expiry.insert((until, sha256));
        self.by_hash.insert(sha256, Kept { bytes, until, on_disk });
        evicted
    }

    /// Drops every document whose time ran out at `now` (and its file).
    pub fn expire(&mut self, now: u64) {
        while self.by_expiry.first().is_some_and(|(until, _)| *until <= now) {
            self.remove_first();
        }
    }

    /// Removes the document that expires first; false if there is none.
    fn remove_first(&mut self) -> bool {
        let Some((_, sha256)) = self.by_expiry.pop_first() else {
            return false;
        };
        if let Some(kept) = self.by_hash.remove(&sha256) {
            self.bytes -= kept.bytes.len();
            if kept.on_disk
                && let Some(writer) = &self.writer
            {
                writer.remove(sha256);
            }
        }
        true
    }
}

enum FileJob {
    Write(Sha256Digest, Bytes),
    Remove(Sha256Digest),
}

/// The thread that writes and removes document files, fed through a queue.
#[derive(Debug)]
struct DocumentWriter {
    jobs: Sender<FileJob>,
    queued_writes: Arc<AtomicUsize>,
}

impl std::fmt::Debug for FileJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileJob::Write(sha, _) => write!(f, "Write({sha})"),
            FileJob::Remove(sha) => write!(f, "Remove({sha})"),
        }
    }
}

impl DocumentWriter {
    fn start(dir: PathBuf) -> Self {
        let (jobs, queue) = channel();
        let queued_writes = Arc::new(AtomicUsize::new(0));
        let counter = queued_writes.clone();
        let spawned =
            std::thread::Builder::new().name("upgram-docs".into()).spawn(move || run_writer(&dir, &queue, &counter));
        if let Err(e) = spawned {
            tracing::error!("cannot start the document writer, documents stay in memory only: {e}");
        }
        Self { jobs, queued_writes }
    }

    /// Queues a write; false (nothing queued) when the queue is full or the writer is gone.
    fn write(&self, sha256: Sha256Digest, bytes: Bytes) -> bool {
        if self.queued_writes.load(Ordering::Relaxed) >= MAX_QUEUED_WRITES {
            tracing::warn!("document writer behind: {sha256} served from memory only");
            return false;
        }
        self.queued_writes.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send(FileJob::Write(sha256, bytes)).is_err() {
            self.queued_writes.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Queues a removal. Removals are never refused: each follows a queued write, so the queue
    /// holds at most one per kept document besides the bounded writes.
    fn remove(&self, sha256: Sha256Digest) {
        let _ = self.jobs.send(FileJob::Remove(sha256));
    }
}

/// How long after it was written a document file is certainly past its time: the longest
/// validity of an answer plus the grace period documents are kept beyond it.
pub const LEFTOVER_MAX_AGE_SECS: u64 = MAX_VALIDITY_SECS + DOCUMENT_GRACE_SECS;

fn run_writer(dir: &Path, queue: &Receiver<FileJob>, queued_writes: &AtomicUsize) {
    let folder = dir.join("doc");
    // Files an earlier run left (it stopped before their time ran out): removed now if their
    // time is over, else when it is.
    let mut leftovers = sweep_leftovers(&folder, SystemTime::now());
    // Ends when the store (the only sender) is dropped.
    loop {
        let job = match leftovers.peek() {
            Some(Reverse((due, _))) => {
                let wait = due.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
                match queue.recv_timeout(wait) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        if let Some(Reverse((_, path))) = leftovers.pop() {
                            remove_quietly(&path);
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        match job {
            FileJob::Write(sha256, bytes) => {
                queued_writes.fetch_sub(1, Ordering::Relaxed);
                if let Err(e) = write_document(&folder, &sha256, &bytes) {
                    tracing::warn!("cannot write fallback document {sha256} to {}: {e}", folder.display());
                }
            }
            FileJob::Remove(sha256) => remove_quietly(&document_path(&folder, &sha256)),
        }
    }
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove expired fallback document {}: {e}", path.display());
    }
}

/// Looks at the document files under `folder` at `now`: removes those (and unfinished
/// temporary files) older than [`LEFTOVER_MAX_AGE_SECS`], and returns the others with the
/// time each is due to go. Only names this store writes are touched.
fn sweep_leftovers(folder: &Path, now: SystemTime) -> BinaryHeap<Reverse<(SystemTime, PathBuf)>> {
    let mut due = BinaryHeap::new();
    let Ok(entries) = std::fs::read_dir(folder) else {
        return due;
    };
    let max_age = Duration::from_secs(LEFTOVER_MAX_AGE_SECS);
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_digest = |hex: &str| Sha256Digest::from_hex(hex).is_some();
        let ours = name.strip_suffix(".xml").is_some_and(is_digest)
            || name.strip_prefix('.').and_then(|n| n.split_once(".xml.tmp-")).is_some_and(|(hex, _)| is_digest(hex));
        if !ours {
            continue;
        }
        let path = entry.path();
        let written = entry.metadata().and_then(|m| m.modified()).unwrap_or(now);
        let until = written + max_age;
        if until <= now {
            remove_quietly(&path);
        } else {
            due.push(Reverse((until, path)));
        }
    }
    if !due.is_empty() {
        tracing::info!("{} fallback documents from an earlier run kept until their time runs out", due.len());
    }
    due
}

/// Where the document with this hash is written: `doc/<sha256>.xml` under the docs folder.
pub fn document_path(folder: &Path, sha256: &Sha256Digest) -> PathBuf {
    folder.join(format!("{sha256}.xml"))
}

/// Writes whole or not at all: a temporary file renamed into place, so a web server never
/// serves half a document.
fn write_document(folder: &Path, sha256: &Sha256Digest, bytes: &[u8]) -> std::io::Result<()> {
    let path = document_path(folder, sha256);
    if path.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(folder)?;
    Ok(crate::durable::write_file(&path, bytes, crate::durable::Replace::Overwrite, None)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(i: u8, len: usize) -> (Sha256Digest, Bytes) {
        let bytes = Bytes::from(vec![i; len]);
        (Sha256Digest::of(&bytes), bytes)
    }

    #[test]
    fn the_count_bound_evicts_what_expires_first() {
        let mut store = DocumentStore::new(DocumentLimits { max_count: 3, max_bytes: 1 << 20 }, None);
        let docs: Vec<_> = (0..4).map(|i| doc(i, 10)).collect();
        for (i, (sha, bytes)) in docs.iter().enumerate().take(3) {
            store.insert(*sha, bytes.clone(), 100 - i as u64, 0);
        }
        let evicted = store.insert(docs[3].0, docs[3].1.clone(), 200, 0);
        assert_eq!(evicted, 1);
        assert_eq!(store.len(), 3);
        assert!(store.get(&docs[2].0).is_none(), "the one expiring first (at 98) went");
        assert!(store.get(&docs[0].0).is_some());
        assert!(store.get(&docs[3].0).is_some());
    }

    #[test]
    fn the_byte_bound_holds_and_oversized_documents_are_not_kept() {
        let mut store = DocumentStore::new(DocumentLimits { max_count: 1000, max_bytes: 1000 }, None);
        for i in 0..50u8 {
            let (sha, bytes) = doc(i, 300);
            store.insert(sha, bytes, 100 + u64::from(i), 0);
            assert!(store.bytes() <= 1000, "{} bytes kept", store.bytes());
        }
        assert_eq!(store.len(), 3);
        assert_eq!(store.bytes(), 900);
        let (sha, bytes) = doc(99, 1001);
        store.insert(sha, bytes, 500, 0);
        assert!(store.get(&sha).is_none());
        assert_eq!(store.len(), 3, "nothing evicted for a document that cannot be kept");
    }

    #[test]
    fn a_sweep_removes_old_documents_and_unfinished_writes_and_leaves_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("doc");
        let (written, bytes) = doc(1, 100);
        write_document(&folder, &written, &bytes).unwrap();
        // What an interrupted write leaves: the temporary file of the real write path.
        let (unfinished, _) = doc(2, 100);
        let (temp, _file) = crate::durable::create_temp(&folder, &format!("{unfinished}.xml"), None).unwrap();
        std::fs::write(folder.join("notes.txt"), "not a document").unwrap();
        let names = || {
            let mut names: Vec<String> = std::fs::read_dir(&folder)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        // Young: kept, and due when their time is over.
        let due = sweep_leftovers(&folder, SystemTime::now());
        assert_eq!(due.len(), 2);
        assert_eq!(names().len(), 3);
        // Past their time: both of ours gone, the other file left alone.
        let later = SystemTime::now() + Duration::from_secs(LEFTOVER_MAX_AGE_SECS + 1);
        assert!(sweep_leftovers(&folder, later).is_empty());
        assert_eq!(names(), ["notes.txt"]);
        assert!(!temp.exists());
    }

    #[test]
    fn expired_documents_leave_and_a_later_expiry_extends_one() {
        let mut store = DocumentStore::new(DocumentLimits::default(), None);
        let (a, a_bytes) = doc(1, 10);
        let (b, b_bytes) = doc(2, 10);
        store.insert(a, a_bytes.clone(), 100, 0);
        store.insert(b, b_bytes, 50, 0);
        store.insert(a, a_bytes, 300, 10);
        store.expire(100);
        assert!(store.get(&b).is_none());
        assert!(store.get(&a).is_some(), "extended to 300");
        store.expire(300);
        assert!(store.is_empty());
        assert_eq!(store.bytes(), 0);
    }
}

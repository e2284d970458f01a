//! Record files and record deltas, as specified in §7 Record files and record deltas of
//! `protocol-spec/SPEC.md`.
//!
//! A record file is a sequence of records, each an identifier and non-empty content, in
//! strictly ascending identifier order. An incremental file update ships a record delta: for
//! each changed record its identifier and new content, empty content meaning "delete". Both
//! are binary, all integers big-endian:
//!
//! ```text
//! record file:  "UGRF" | 0x01 | count u32 | count × (id u64 | len u32 (>= 1) | content)
//! record delta: "UGRD" | 0x01 | base sha256 (32) | result sha256 (32) | count u32
//!               | count × (id u64 | len u32 | content)          len 0 = delete
//! ```
//!
//! The base hash is the SHA-256 of the record file the delta applies to, the result hash the
//! SHA-256 of the canonical encoding of the merged file. A client that finds either hash wrong
//! falls back to downloading the full file ([`RecordError::BaseMismatch`],
//! [`RecordError::ResultMismatch`]).

use std::cmp::Ordering;

use sha2::{Digest, Sha256};

/// Magic bytes opening a record file.
pub const RECORD_FILE_MAGIC: [u8; 4] = *b"UGRF";

/// Magic bytes opening a record delta.
pub const RECORD_DELTA_MAGIC: [u8; 4] = *b"UGRD";

/// The only format version of record files and deltas.
pub const RECORD_FORMAT_VERSION: u8 = 1;

/// Largest encoded record file (and record delta), in bytes: 256 MiB.
pub const MAX_RECORD_FILE_LEN: usize = 256 * 1024 * 1024;

/// Largest content of a single record, in bytes: 16 MiB.
pub const MAX_RECORD_LEN: usize = 16 * 1024 * 1024;

/// Most records in a file (and entries in a delta).
pub const MAX_RECORD_COUNT: usize = 16_777_216;

const FILE_HEADER_LEN: usize = 4 + 1 + 4;
const DELTA_HEADER_LEN: usize = 4 + 1 + 32 + 32 + 4;
const RECORD_HEADER_LEN: usize = 8 + 4;

/// Why a record file or delta could not be decoded, built or applied.
///
/// Offsets are byte offsets into the encoding being decoded, or, for values built in memory,
/// into the canonical encoding they would have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The input, or the encoding a value would have, exceeds [`MAX_RECORD_FILE_LEN`].
    #[error("record {what} is {len} bytes long, at most {MAX_RECORD_FILE_LEN} allowed")]
    TooLarge {
        /// `"file"` or `"delta"`.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The input ends before a complete structure.
    #[error("record {what} truncated at byte {offset}: expected {expected}")]
    Truncated {
        /// `"file"` or `"delta"`.
        what: &'static str,
        /// Where the incomplete part starts.
        offset: usize,
        /// What was being read.
        expected: &'static str,
    },
    /// The content of a record runs past the end of the input.
    #[error("record {what} truncated in record {id} at byte {offset}: content of {len} bytes, {available} left")]
    TruncatedContent {
        /// `"file"` or `"delta"`.
        what: &'static str,
        /// The record identifier.
        id: u64,
        /// Where the content starts.
        offset: usize,
        /// The announced content length.
        len: usize,
        /// Bytes left in the input.
        available: usize,
    },
    /// The input does not open with the expected magic bytes.
    #[error("record {what}: bad magic {found:02x?} at byte 0, expected {expected:?}")]
    BadMagic {
        /// `"file"` or `"delta"`.
        what: &'static str,
        /// The four bytes found.
        found: [u8; 4],
        /// The magic expected.
        expected: &'static str,
    },
    /// The format version byte is not [`RECORD_FORMAT_VERSION`].
    #[error("record {what}: unsupported format version {version} at byte 4")]
    UnsupportedFormat {
        /// `"file"` or `"delta"`.
        what: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// More records or entries than [`MAX_RECORD_COUNT`].
    #[error("record {what} has {count} records, at most {MAX_RECORD_COUNT} allowed")]
    TooManyRecords {
        /// `"file"` or `"delta"`.
        what: &'static str,
        /// The record count.
        count: usize,
    },
    /// A record longer than [`MAX_RECORD_LEN`].
    #[error("record {id} at byte {offset} is {len} bytes long, at most {MAX_RECORD_LEN} allowed")]
    RecordTooLarge {
        /// The record identifier.
        id: u64,
        /// Where the record header starts.
        offset: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// A record of a record file with empty content (only deltas use empty content, to delete).
    #[error("record {id} at byte {offset} is empty, records of a file must have content")]
    EmptyRecord {
        /// The record identifier.
        id: u64,
        /// Where the record header starts.
        offset: usize,
    },
    /// An identifier not greater than the one before it.
    #[error("record {id} at byte {offset} is out of order: it follows record {previous}")]
    OutOfOrder {
        /// The record identifier.
        id: u64,
        /// The identifier of the record before it.
        previous: u64,
        /// Where the record header starts.
        offset: usize,
    },
    /// An identifier that appears twice in a row.
    #[error("record {id} at byte {offset} is a duplicate")]
    DuplicateId {
        /// The record identifier.
        id: u64,
        /// Where the second occurrence starts.
        offset: usize,
    },
    /// Bytes after the last record.
    #[error("record {what}: {count} trailing bytes at byte {offset}")]
    TrailingBytes {
        /// `"file"` or `"delta"`.
        what: &'static str,
        /// Where the trailing bytes start.
        offset: usize,
        /// How many there are.
        count: usize,
    },
    /// A delta deletes a record the base file does not have.
    #[error("record delta deletes record {id}, which the base file does not have")]
    DeleteMissing {
        /// The record identifier.
        id: u64,
    },
    /// The base file is not the one the delta was made for: fall back to a full replace.
    #[error(
        "record delta base mismatch: delta expects sha256 {}, base file has {}",
        hex(.expected),
        hex(.actual)
    )]
    BaseMismatch {
        /// The base hash the delta carries.
        expected: [u8; 32],
        /// The hash of the base file given.
        actual: [u8; 32],
    },
    /// The merged file is not the one the delta promises: fall back to a full replace.
    #[error(
        "record delta result mismatch: delta promises sha256 {}, merge gave {}",
        hex(.expected),
        hex(.actual)
    )]
    ResultMismatch {
        /// The result hash the delta carries.
        expected: [u8; 32],
        /// The hash of the merged file.
        actual: [u8; 32],
    },
}

impl RecordError {
    /// The stable name of this error (SPEC.md §9.3, record layer).
    pub fn name(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } | Self::TooManyRecords { .. } | Self::RecordTooLarge { .. } => "too-large",
            Self::Truncated { .. } | Self::TruncatedContent { .. } => "truncated",
            Self::BadMagic { .. } => "bad-magic",
            Self::UnsupportedFormat { .. } => "unsupported-version",
            Self::TrailingBytes { .. } => "length-mismatch",
            Self::OutOfOrder { .. } | Self::DuplicateId { .. } => "unordered-records",
            Self::EmptyRecord { .. } => "empty-record",
            Self::DeleteMissing { .. } => "missing-record",
            Self::BaseMismatch { .. } => "base-mismatch",
            Self::ResultMismatch { .. } => "result-mismatch",
        }
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One record: an identifier and its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Record<'a> {
    /// The record identifier, unique within a file.
    pub id: u64,
    /// The record content, borrowed from the decoded input.
    pub content: &'a [u8],
}

/// A record file: records in strictly ascending identifier order, none empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RecordFile<'a> {
    records: Vec<Record<'a>>,
}

impl<'a> RecordFile<'a> {
    /// Builds a file from records, checking that identifiers strictly ascend, that no record
    /// is empty and that the encoding stays within the limits.
    pub fn from_records(records: Vec<Record<'a>>) -> Result<RecordFile<'a>, RecordError> {
        check_count("file", records.len())?;
        let mut offset = FILE_HEADER_LEN;
        let mut previous = None;
        for record in &records {
            check_record(offset, record.id, record.content.len(), previous, true)?;
            previous = Some(record.id);
            offset = advance(offset, record.content.len());
        }
        check_total_len("file", offset)?;
        Ok(RecordFile { records })
    }

    /// Decodes a record file, borrowing record contents from `input`.
    ///
    /// ```
    /// use upgram_core::records::RecordFile;
    /// let bytes = b"UGRF\x01\x00\x00\x00\x01\0\0\0\0\0\0\0\x07\0\0\0\x02hi";
    /// let file = RecordFile::decode(bytes)?;
    /// assert_eq!(file.get(7), Some(&b"hi"[..]));
    /// # Ok::<(), upgram_core::records::RecordError>(())
    /// ```
    pub fn decode(input: &'a [u8]) -> Result<RecordFile<'a>, RecordError> {
        let mut reader = Reader::new("file", input)?;
        reader.magic(RECORD_FILE_MAGIC, "UGRF")?;
        let count = reader.count()?;
        let mut records = Vec::with_capacity(reader.capacity_for(count));
        let mut previous = None;
        for _ in 0..count {
            let offset = reader.position;
            let (id, content) = reader.record()?;
            check_record(offset, id, content.len(), previous, true)?;
            previous = Some(id);
            records.push(Record { id, content });
        }
        reader.finish()?;
        Ok(RecordFile { records })
    }

    /// Appends the canonical encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.extend_from_slice(&RECORD_FILE_MAGIC);
        out.push(RECORD_FORMAT_VERSION);
        out.extend_from_slice(&encode_count(self.records.len()));
        for record in &self.records {
            out.extend_from_slice(&record_header(record.id, record.content.len()));
            out.extend_from_slice(record.content);
        }
    }

    /// The canonical encoding in a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }

    /// Length of the canonical encoding in bytes.
    pub fn encoded_len(&self) -> usize {
        self.records.iter().fold(FILE_HEADER_LEN, |len, r| advance(len, r.content.len()))
    }

    /// SHA-256 of the canonical encoding, computed without building it.
    pub fn sha256(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(RECORD_FILE_MAGIC);
        hasher.update([RECORD_FORMAT_VERSION]);
        hasher.update(encode_count(self.records.len()));
        for record in &self.records {
            hasher.update(record_header(record.id, record.content.len()));
            hasher.update(record.content);
        }
        hasher.finalize().into()
    }

    /// The records in ascending identifier order.
    pub fn records(&self) -> &[Record<'a>] {
        &self.records
    }

    /// The content of record `id`, if present.
    pub fn get(&self, id: u64) -> Option<&'a [u8]> {
        self.records
            .binary_search_by_key(&id, |r| r.id)
            .ok()
            .and_then(|index| self.records.get(index))
            .map(|r| r.content)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the file has no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records, consuming the file.
    pub fn into_records(self) -> Vec<Record<'a>> {
        self.records
    }
}

/// What a delta does to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change<'a> {
    /// Delete the record; it must exist in the base (encoded as empty content).
    Delete,
    /// Replace the record if it exists, add it otherwise; the content is never empty.
    Put(&'a [u8]),
}

/// One entry of a record delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeltaEntry<'a> {
    /// The record identifier.
    pub id: u64,
    /// What happens to the record.
    pub change: Change<'a>,
}

impl DeltaEntry<'_> {
    fn content_len(&self) -> usize {
        match self.change {
            Change::Delete => 0,
            Change::Put(content) => content.len(),
        }
    }
}

/// A record delta: the changes turning the base file into the result file, with the hashes
/// of both, entries in strictly ascending identifier order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordDelta<'a> {
    base_sha256: [u8; 32],
    result_sha256: [u8; 32],
    entries: Vec<DeltaEntry<'a>>,
}

impl<'a> RecordDelta<'a> {
    /// Builds a delta, checking that identifiers strictly ascend, that no `Put` is empty
    /// (empty content means delete on the wire) and that the encoding stays within the limits.
    pub fn new(
        base_sha256: [u8; 32],
        result_sha256: [u8; 32],
        entries: Vec<DeltaEntry<'a>>,
    ) -> Result<RecordDelta<'a>, RecordError> {
        check_count("delta", entries.len())?;
        let mut offset = DELTA_HEADER_LEN;
        let mut previous = None;
        for entry in &entries {
            let must_have_content = matches!(entry.change, Change::Put(_));
            check_record(offset, entry.id, entry.content_len(), previous, must_have_content)?;
            previous = Some(entry.id);
            offset = advance(offset, entry.content_len());
        }
        check_total_len("delta", offset)?;
        Ok(RecordDelta { base_sha256, result_sha256, entries })
    }

    /// Decodes a record delta, borrowing record contents from `input`.
    pub fn decode(input: &'a [u8]) -> Result<RecordDelta<'a>, RecordError> {
        let mut reader = Reader::new("delta", input)?;
        reader.magic(RECORD_DELTA_MAGIC, "UGRD")?;
        let base_sha256 = reader.hash("base sha256")?;
        let result_sha256 = reader.hash("result sha256")?;
        let count = reader.count()?;
        let mut entries = Vec::with_capacity(reader.capacity_for(count));
        let mut previous = None;
        for _ in 0..count {
            let offset = reader.position;
            let (id, content) = reader.record()?;
            check_record(offset, id, content.len(), previous, false)?;
            previous = Some(id);
            let change = if content.is_empty() { Change::Delete } else { Change::Put(content) };
            entries.push(DeltaEntry { id, change });
        }
        reader.finish()?;
        Ok(RecordDelta { base_sha256, result_sha256, entries })
    }

    /// Appends the canonical encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.extend_from_slice(&RECORD_DELTA_MAGIC);
        out.push(RECORD_FORMAT_VERSION);
        out.extend_from_slice(&self.base_sha256);
        out.extend_from_slice(&self.result_sha256);
        out.extend_from_slice(&encode_count(self.entries.len()));
        for entry in &self.entries {
            out.extend_from_slice(&record_header(entry.id, entry.content_len()));
            if let Change::Put(content) = entry.change {
                out.extend_from_slice(content);
            }
        }
    }

    /// The canonical encoding in a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }

    /// Length of the canonical encoding in bytes.
    pub fn encoded_len(&self) -> usize {
        self.entries.iter().fold(DELTA_HEADER_LEN, |len, e| advance(len, e.content_len()))
    }

    /// SHA-256 of the record file this delta applies to.
    pub fn base_sha256(&self) -> &[u8; 32] {
        &self.base_sha256
    }

    /// SHA-256 of the canonical encoding of the merged file.
    pub fn result_sha256(&self) -> &[u8; 32] {
        &self.result_sha256
    }

    /// The entries in ascending identifier order.
    pub fn entries(&self) -> &[DeltaEntry<'a>] {
        &self.entries
    }
}

/// Computes the delta turning `old` into `new`: deletes for records only in `old`, puts for
/// records only in `new` or whose content changed.
///
/// The delta is not checked against the decoding limits: a server should compare its
/// [`RecordDelta::encoded_len`] with the new file's and ship the full file when the delta is
/// not smaller (which also covers deltas too large to decode).
pub fn diff<'a>(old: &RecordFile<'a>, new: &RecordFile<'a>) -> RecordDelta<'a> {
    let mut entries = Vec::new();
    let (mut i, mut j) = (0, 0);
    loop {
        let (o, n) = (old.records.get(i), new.records.get(j));
        let order = match (o, n) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(o), Some(n)) => o.id.cmp(&n.id),
        };
        match (order, o, n) {
            (Ordering::Less, Some(o), _) => {
                entries.push(DeltaEntry { id: o.id, change: Change::Delete });
                i += 1;
            }
            (Ordering::Greater, _, Some(n)) => {
                entries.push(put(n));
                j += 1;
            }
            (Ordering::Equal, Some(o), Some(n)) => {
                if o.content != n.content {
                    entries.push(put(n));
                }
                i += 1;
                j += 1;
            }
            // Every other combination contradicts `order`; stop rather than panic.
            _ => break,
        }
    }
    RecordDelta { base_sha256: old.sha256(), result_sha256: new.sha256(), entries }
}

fn put<'a>(record: &Record<'a>) -> DeltaEntry<'a> {
    DeltaEntry { id: record.id, change: Change::Put(record.content) }
}

/// Applies `delta` to `base`: an empty entry deletes (the record must exist), a known
/// identifier is replaced, a new one added. The hashes are not checked here, see
/// [`apply_delta`].
pub fn merge<'a>(base: &RecordFile<'a>, delta: &RecordDelta<'a>) -> Result<RecordFile<'a>, RecordError> {
    let mut merged = Vec::with_capacity(base.records.len());
    let mut base_records = base.records.iter().peekable();
    for entry in &delta.entries {
        while let Some(record) = base_records.next_if(|r| r.id < entry.id) {
            merged.push(*record);
        }
        let existed = base_records.next_if(|r| r.id == entry.id).is_some();
        match entry.change {
            Change::Put(content) => merged.push(Record { id: entry.id, content }),
            Change::Delete if existed => {}
            Change::Delete => return Err(RecordError::DeleteMissing { id: entry.id }),
        }
    }
    merged.extend(base_records);
    check_count("file", merged.len())?;
    let file = RecordFile { records: merged };
    check_total_len("file", file.encoded_len())?;
    Ok(file)
}

/// Applies an encoded delta to an encoded base file and returns the encoded result.
///
/// Fails with [`RecordError::BaseMismatch`] when SHA-256(`base_bytes`) is not the delta's base
/// hash and with [`RecordError::ResultMismatch`] when the merged file's hash is not the
/// delta's result hash; either way the client should download the full file instead.
pub fn apply_delta(base_bytes: &[u8], delta_bytes: &[u8]) -> Result<Vec<u8>, RecordError> {
    let delta = RecordDelta::decode(delta_bytes)?;
    let actual: [u8; 32] = Sha256::digest(base_bytes).into();
    if actual != delta.base_sha256 {
        return Err(RecordError::BaseMismatch { expected: delta.base_sha256, actual });
    }
    let base = RecordFile::decode(base_bytes)?;
    let merged = merge(&base, &delta)?;
    let mut out = Vec::new();
    merged.encode(&mut out);
    let actual: [u8; 32] = Sha256::digest(&out).into();
    if actual != delta.result_sha256 {
        return Err(RecordError::ResultMismatch { expected: delta.result_sha256, actual });
    }
    Ok(out)
}

/// Bounds-checked big-endian reader over an untrusted input.
struct Reader<'a> {
    what: &'static str,
    input: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn new(what: &'static str, input: &'a [u8]) -> Result<Reader<'a>, RecordError> {
        check_total_len(what, input.len())?;
        Ok(Reader { what, input, position: 0 })
    }

    fn remaining(&self) -> usize {
        self.input.len() - self.position
    }

    fn take(&mut self, len: usize, expected: &'static str) -> Result<&'a [u8], RecordError> {
        let bytes = self.input.get(self.position..).and_then(|rest| rest.get(..len)).ok_or(RecordError::Truncated {
            what: self.what,
            offset: self.position,
            expected,
        })?;
        self.position += len;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, expected: &'static str) -> Result<[u8; N], RecordError> {
        let bytes = self.take(N, expected)?;
        let mut array = [0; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    fn magic(&mut self, magic: [u8; 4], expected: &'static str) -> Result<(), RecordError> {
        let found: [u8; 4] = self.array("magic")?;
        if found != magic {
            return Err(RecordError::BadMagic { what: self.what, found, expected });
        }
        let [version] = self.array("format version")?;
        if version != RECORD_FORMAT_VERSION {
            return Err(RecordError::UnsupportedFormat { what: self.what, version });
        }
        Ok(())
    }

    fn hash(&mut self, expected: &'static str) -> Result<[u8; 32], RecordError> {
        self.array(expected)
    }

    fn count(&mut self) -> Result<usize, RecordError> {
        let count = to_usize(u32::from_be_bytes(self.array("record count")?));
        check_count(self.what, count)?;
        Ok(count)
    }

    /// Capacity to reserve for `count` records: never more than the rest of the input can hold.
    fn capacity_for(&self, count: usize) -> usize {
        count.min(self.remaining() / RECORD_HEADER_LEN)
    }

    fn record(&mut self) -> Result<(u64, &'a [u8]), RecordError> {
        let id = u64::from_be_bytes(self.array("record id")?);
        let len = to_usize(u32::from_be_bytes(self.array("record length")?));
        if len > MAX_RECORD_LEN {
            return Err(RecordError::RecordTooLarge { id, offset: self.position - RECORD_HEADER_LEN, len });
        }
        if len > self.remaining() {
            return Err(RecordError::TruncatedContent {
                what: self.what,
                id,
                offset: self.position,
                len,
                available: self.remaining(),
            });
        }
        let content = self.take(len, "record content")?;
        Ok((id, content))
    }

    fn finish(&self) -> Result<(), RecordError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(RecordError::TrailingBytes { what: self.what, offset: self.position, count }),
        }
    }
}

/// Checks one record (header at `offset`) against the limits and its predecessor.
fn check_record(
    offset: usize,
    id: u64,
    len: usize,
    previous: Option<u64>,
    must_have_content: bool,
) -> Result<(), RecordError> {
    if len > MAX_RECORD_LEN {
        return Err(RecordError::RecordTooLarge { id, offset, len });
    }
    if must_have_content && len == 0 {
        return Err(RecordError::EmptyRecord { id, offset });
    }
    match previous {
        Some(previous) if previous == id => Err(RecordError::DuplicateId { id, offset }),
        Some(previous) if previous > id => Err(RecordError::OutOfOrder { id, previous, offset }),
        _ => Ok(()),
    }
}

fn check_count(what: &'static str, count: usize) -> Result<(), RecordError> {
    if count > MAX_RECORD_COUNT {
        return Err(RecordError::TooManyRecords { what, count });
    }
    Ok(())
}

fn check_total_len(what: &'static str, len: usize) -> Result<(), RecordError> {
    if len > MAX_RECORD_FILE_LEN {
        return Err(RecordError::TooLarge { what, len });
    }
    Ok(())
}

/// Offset after a record of `len` content bytes starting at `offset`; saturates so that
/// absurd in-memory sizes fail the length check instead of overflowing.
fn advance(offset: usize, len: usize) -> usize {
    offset.saturating_add(RECORD_HEADER_LEN).saturating_add(len)
}

fn to_usize(value: u32) -> usize {
    // usize is at least 32 bits on every target this crate supports.
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Big-endian count; counts are bounded by [`MAX_RECORD_COUNT`] < 2^32.
fn encode_count(count: usize) -> [u8; 4] {
    u32::try_from(count).unwrap_or(u32::MAX).to_be_bytes()
}

/// Record header; lengths are bounded by [`MAX_RECORD_LEN`] < 2^32.
fn record_header(id: u64, len: usize) -> [u8; RECORD_HEADER_LEN] {
    let mut header = [0; RECORD_HEADER_LEN];
    header[..8].copy_from_slice(&id.to_be_bytes());
    header[8..].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    header
}

//! Binary patches: a new version of a file made from the version the client already has and a
//! small patch, instead of downloading the whole file.
//!
//! The format is bsdiff 4 (`BSDIFF40`: a 32-byte header with the result's size, then three
//! bzip2 streams: controls, differences, extra bytes), made and applied with `qbsdiff`. It was
//! chosen by measurement against zstd with the old file as reference: on two builds of the
//! `upgram` binary and on shared libraries its patches are half to a third the size, and it
//! applies in time linear in the result (see the `patch` benchmark).
//!
//! Applying is bounded and checked before the patcher runs: the base is read into memory only
//! up to [`Limits::max_base`], the patch only up to [`Limits::max_result`] (a patch larger than
//! the result is no use), the header must declare exactly the signed result size, and the
//! control stream is decoded first, at most 24 bytes per result byte, and must describe exactly
//! the declared result from inside the base. Only then does the patcher run, writing through a
//! writer that refuses the first byte past the declared size. The result streams to disk, is
//! hashed on the way and lands under its final name only when its size and SHA-256 are the
//! signed ones; on any error nothing is written under that name.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;
use upgram_core::Sha256Digest;

use crate::fsutil::sync_parent;

/// The first bytes of a patch.
pub const MAGIC: &[u8; 8] = b"BSDIFF40";

/// The length of a patch's header: the magic, then the lengths of the compressed control and
/// difference streams and the result's size, each 8 bytes.
pub const HEADER_LEN: usize = 32;

/// One control: `add` bytes of the base plus differences, `copy` extra bytes, then move in the
/// base by `seek`.
const CONTROL_LEN: usize = 24;

/// What the signed answer says about a patch: the base it applies to and the result it gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// SHA-256 of the file the patch was made from.
    pub base_sha256: Sha256Digest,
    /// SHA-256 of the result.
    pub result_sha256: Sha256Digest,
    /// Size of the result in bytes.
    pub result_size: u64,
}

/// Bounds on applying one patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest base file read into memory, in bytes.
    pub max_base: u64,
    /// The largest result written, in bytes (the declared size must not pass it), and the
    /// largest patch read into memory.
    pub max_result: u64,
}

impl Default for Limits {
    /// 512 MiB of base and of result.
    fn default() -> Self {
        Limits { max_base: 512 << 20, max_result: 512 << 20 }
    }
}

/// Why a patch could not be applied. The caller falls back to the whole file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PatchError {
    /// The local file is not the one the patch was made from (changed locally, or another
    /// version).
    #[error("{}: the file hashes to {found}, the patch was made from {expected}", path.display())]
    BaseMismatch {
        /// The base file.
        path: PathBuf,
        /// The signed base hash.
        expected: Sha256Digest,
        /// What the local file hashes to.
        found: Sha256Digest,
    },
    /// The base file is larger than [`Limits::max_base`].
    #[error("{}: the file has {len} bytes, more than the {max} a patch is applied to", path.display())]
    BaseTooLarge {
        /// The base file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The cap.
        max: u64,
    },
    /// The patch file is larger than [`Limits::max_result`] (a patch larger than its result is
    /// no use).
    #[error("{}: the patch is larger than the cap of {max} bytes", path.display())]
    PatchTooLarge {
        /// The patch file.
        path: PathBuf,
        /// The cap.
        max: u64,
    },
    /// The signed result size is larger than [`Limits::max_result`].
    #[error("the patch's result would have {size} bytes, more than the cap of {max}")]
    ResultTooLarge {
        /// The signed result size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// The patch's own header declares another result size than the signed one (or none).
    #[error("the patch declares a result of {} bytes, the signed size is {signed}",
        in_patch.map_or_else(|| "unknown".to_owned(), |n| n.to_string()))]
    WrongDeclaredSize {
        /// The signed result size.
        signed: u64,
        /// The size in the patch's header, if it has one.
        in_patch: Option<u64>,
    },
    /// The patch ends before the result is complete.
    #[error("the patch is truncated: it ends after {produced} of {signed} result bytes")]
    Truncated {
        /// Result bytes produced before the end.
        produced: u64,
        /// The signed result size.
        signed: u64,
    },
    /// The patch produces more bytes than declared (a decompression bomb); decoding stopped at
    /// the declared size.
    #[error("the patch produces more than the declared {signed} bytes; stopped there")]
    PastDeclaredSize {
        /// The signed result size.
        signed: u64,
    },
    /// The patch is not a valid patch for this base (bad header, corrupt stream, a control
    /// reading outside the base).
    #[error("the patch is damaged: {reason}")]
    Damaged {
        /// What the decoder found.
        reason: String,
    },
    /// The result has the signed size but not the signed hash.
    #[error("the patched result hashes to {found}, not to the signed {expected}")]
    ResultMismatch {
        /// The signed result hash.
        expected: Sha256Digest,
        /// What the result hashes to.
        found: Sha256Digest,
    },
    /// Reading the base or the patch, or writing the result, failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> PatchError + '_ {
    move |source| PatchError::Io { path: path.to_owned(), source }
}

/// Makes a patch that turns `base` into `result` (what a publisher stores).
pub fn make(base: &[u8], result: &[u8]) -> io::Result<Vec<u8>> {
    let mut patch = Vec::new();
    qbsdiff::Bsdiff::new(base, result).compare(&mut patch)?;
    Ok(patch)
}

/// The result size a patch's header declares, if `patch` starts with a complete, well-formed
/// header.
pub fn declared_result_size(patch: &[u8]) -> Option<u64> {
    Header::parse(patch).ok().map(|header| header.result_size)
}

/// A patch's header, checked: non-negative lengths that fit in the patch.
struct Header {
    controls_len: u64,
    differences_len: u64,
    result_size: u64,
}

impl Header {
    fn parse(patch: &[u8]) -> Result<Header, PatchError> {
        let Some(head) = patch.first_chunk::<HEADER_LEN>() else {
            return Err(if MAGIC.starts_with(&patch[..patch.len().min(MAGIC.len())]) {
                PatchError::Truncated { produced: 0, signed: 0 }
            } else {
                damaged("not a bsdiff 4 patch")
            });
        };
        if &head[..8] != MAGIC {
            return Err(damaged("not a bsdiff 4 patch"));
        }
        let field = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&head[at..at + 8]);
            decode_int(bytes)
        };
        let (Ok(controls_len), Ok(differences_len), Ok(result_size)) =
            (u64::try_from(field(8)), u64::try_from(field(16)), u64::try_from(field(24)))
        else {
            return Err(damaged("a negative length in the header"));
        };
        let body = (patch.len() - HEADER_LEN) as u64;
        if controls_len.checked_add(differences_len).is_none_or(|streams| streams > body) {
            return Err(PatchError::Truncated { produced: 0, signed: result_size });
        }
        Ok(Header { controls_len, differences_len, result_size })
    }
}

/// A bsdiff integer: 63 bits of magnitude, little endian, and a sign bit (what `qbsdiff`
/// reads).
fn decode_int(bytes: [u8; 8]) -> i64 {
    let x = u64::from_le_bytes(bytes);
    let magnitude = (x & (u64::MAX >> 1)) as i64;
    if x >> 63 == 0 || x == 1 << 63 { x as i64 } else { -magnitude }
}

fn damaged(reason: &str) -> PatchError {
    PatchError::Damaged { reason: reason.to_owned() }
}

/// Maps an error of the patcher: the end of a stream is a truncated patch, anything else a
/// damaged one, and the writer's own refusal passes through.
fn decode_error(error: io::Error, produced: u64, signed: u64) -> PatchError {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        return PatchError::Truncated { produced, signed };
    }
    match error.downcast::<CapError>() {
        Ok(CapError::Past) => PatchError::PastDeclaredSize { signed },
        Ok(CapError::Write(source)) => PatchError::Io { path: PathBuf::from("<output>"), source },
        Err(error) => PatchError::Damaged { reason: error.to_string() },
    }
}

/// Decodes the control stream, one control at a time, and checks that it describes exactly
/// `signed` bytes, reading only inside `base_len`, in at most one control per result byte
/// (plus one): the patcher's work is then bounded by the result's size.
///
/// Returns the number of extra bytes the controls take.
fn check_controls(patch: &[u8], header: &Header, base_len: u64, signed: u64) -> Result<u64, PatchError> {
    let start = HEADER_LEN;
    let end = start + header.controls_len as usize;
    let mut decoder = bzip2::bufread::BzDecoder::new(&patch[start..end]);
    // i128: no sum of i64 values overflows.
    let (mut produced, mut position, mut extra, mut count) = (0i128, 0i128, 0i128, 0u64);
    let mut control = [0u8; CONTROL_LEN];
    loop {
        let filled = read_full(&mut decoder, &mut control).map_err(|e| decode_error(e, 0, signed))?;
        if filled == 0 {
            break;
        }
        if filled < CONTROL_LEN {
            return Err(PatchError::Truncated { produced: 0, signed });
        }
        count += 1;
        if count > signed.saturating_add(1) {
            return Err(damaged("more controls than result bytes"));
        }
        let field = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&control[at..at + 8]);
            i128::from(decode_int(bytes))
        };
        let (add, copy, seek) = (field(0), field(8), field(16));
        if add < 0 || copy < 0 {
            return Err(damaged("a control with a negative length"));
        }
        if add > 0 && (position < 0 || position + add > i128::from(base_len)) {
            return Err(damaged("a control reads outside the base"));
        }
        produced += add + copy;
        extra += copy;
        if produced > i128::from(signed) {
            return Err(PatchError::PastDeclaredSize { signed });
        }
        position += add + seek;
    }
    if !decoder.into_inner().is_empty() {
        return Err(damaged("bytes after the control stream"));
    }
    if produced != i128::from(signed) {
        return Err(PatchError::Truncated { produced: produced as u64, signed });
    }
    Ok(extra as u64)
}

/// Reads until `buffer` is full or the stream ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Decodes the extra stream (the rest of the patch) without keeping it, and checks that it
/// holds exactly the `extra` bytes the controls take and that nothing follows it: a patch cut
/// short or with bytes appended is refused even where the result would come out right.
fn check_extra(patch: &[u8], header: &Header, extra: u64, signed: u64) -> Result<(), PatchError> {
    let start = HEADER_LEN + (header.controls_len + header.differences_len) as usize;
    let mut decoder = bzip2::bufread::BzDecoder::new(&patch[start..]);
    let found = io::copy(&mut decoder.by_ref().take(extra.saturating_add(1)), &mut io::sink())
        .map_err(|e| decode_error(e, signed - extra, signed))?;
    if found < extra {
        return Err(PatchError::Truncated { produced: signed - extra + found, signed });
    }
    if found > extra {
        return Err(PatchError::PastDeclaredSize { signed });
    }
    // The stream must end here, with nothing after it.
    let mut probe = [0u8; 1];
    if decoder.read(&mut probe).map_err(|e| decode_error(e, signed, signed))? != 0 {
        return Err(PatchError::PastDeclaredSize { signed });
    }
    if !decoder.into_inner().is_empty() {
        return Err(damaged("bytes after the end of the patch"));
    }
    Ok(())
}

/// Applies `patch` to `base`, writing the result to `out`: at most `expected.result_size`
/// bytes are ever written, and the result is checked against the signed size and SHA-256.
/// The base's hash is the caller's to check ([`apply`] does). `out` may hold a partial result
/// when this fails.
pub fn apply_to_writer<W: Write>(
    base: &[u8],
    patch: &[u8],
    expected: &Expected,
    limits: &Limits,
    out: W,
) -> Result<(), PatchError> {
    let signed = expected.result_size;
    if signed > limits.max_result {
        return Err(PatchError::ResultTooLarge { size: signed, max: limits.max_result });
    }
    let header = Header::parse(patch).map_err(|e| match e {
        PatchError::Truncated { produced, .. } => PatchError::Truncated { produced, signed },
        other => other,
    })?;
    if header.result_size != signed {
        return Err(PatchError::WrongDeclaredSize { signed, in_patch: Some(header.result_size) });
    }
    let extra = check_controls(patch, &header, base.len() as u64, signed)?;
    check_extra(patch, &header, extra, signed)?;

    let patcher = qbsdiff::Bspatch::new(patch).map_err(|e| decode_error(e, 0, signed))?;
    let mut out = Capped { inner: out, written: 0, cap: signed, hasher: Sha256::new() };
    let applied = patcher.apply(base, &mut out);
    if let Err(e) = applied {
        return Err(decode_error(e, out.written, signed));
    }
    if out.written != signed {
        return Err(PatchError::Truncated { produced: out.written, signed });
    }
    let found = Sha256Digest(out.hasher.finalize().into());
    if found != expected.result_sha256 {
        return Err(PatchError::ResultMismatch { expected: expected.result_sha256, found });
    }
    out.inner.flush().map_err(|source| PatchError::Io { path: PathBuf::from("<output>"), source })
}

/// Why [`Capped`] refused a write.
#[derive(Debug, Error)]
enum CapError {
    #[error("past the declared size")]
    Past,
    #[error("{0}")]
    Write(io::Error),
}

/// A writer that refuses to pass `cap` bytes and hashes what it passes on.
struct Capped<W> {
    inner: W,
    written: u64,
    cap: u64,
    hasher: Sha256,
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let len = bytes.len() as u64;
        if len > self.cap - self.written {
            return Err(io::Error::other(CapError::Past));
        }
        let n = self.inner.write(bytes).map_err(|e| io::Error::other(CapError::Write(e)))?;
        self.hasher.update(&bytes[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().map_err(|e| io::Error::other(CapError::Write(e)))
    }
}

/// Applies the patch file `patch` to the file `base`, staging the result at `output`.
///
/// The base must hash to `expected.base_sha256`; the result is written to a temporary file
/// beside `output`, synced, and renamed to `output` only when its size and SHA-256 are the
/// signed ones. On any error nothing is written at `output` and no partial file is left
/// beside it.
pub fn apply(base: &Path, patch: &Path, expected: &Expected, limits: &Limits, output: &Path) -> Result<(), PatchError> {
    let base_bytes = read_base(base, expected, limits)?;
    let patch_bytes = read_capped(patch, limits.max_result)
        .map_err(io_error(patch))?
        .ok_or_else(|| PatchError::PatchTooLarge { path: patch.to_owned(), max: limits.max_result })?;

    let partial = partial_path(output);
    let file = File::create(&partial).map_err(io_error(&partial))?;
    let mut writer = BufWriter::new(file);
    let staged = apply_to_writer(&base_bytes, &patch_bytes, expected, limits, &mut writer)
        .map_err(|e| with_path(e, &partial))
        .and_then(|()| {
            let file = writer.into_inner().map_err(|e| e.into_error()).map_err(io_error(&partial))?;
            file.sync_all().map_err(io_error(&partial))
        })
        .and_then(|()| fs::rename(&partial, output).map_err(io_error(output)));
    if let Err(e) = staged {
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    sync_parent(output).map_err(|e| {
        let _ = fs::remove_file(output);
        io_error(output)(e)
    })
}

/// Names the staged file in an I/O error of the writer.
fn with_path(error: PatchError, path: &Path) -> PatchError {
    match error {
        PatchError::Io { source, .. } => PatchError::Io { path: path.to_owned(), source },
        other => other,
    }
}

/// `output` with `.partial` added to its name.
fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "patched".into());
    name.push(".partial");
    output.with_file_name(name)
}

/// Reads at most `max` bytes of the file at `path`; `None` if it has more.
fn read_capped(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    let file = File::open(path)?;
    if file.metadata()?.len() > max {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    // The file may grow between the two calls: read no more than the cap either way.
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

/// Reads the base into memory (at most `limits.max_base` bytes) and checks its hash.
fn read_base(path: &Path, expected: &Expected, limits: &Limits) -> Result<Vec<u8>, PatchError> {
    let too_large = || {
        let len = fs::metadata(path).map_or(limits.max_base.saturating_add(1), |m| m.len());
        PatchError::BaseTooLarge { path: path.to_owned(), len, max: limits.max_base }
    };
    let bytes = read_capped(path, limits.max_base).map_err(io_error(path))?.ok_or_else(too_large)?;
    let found = Sha256Digest(Sha256::digest(&bytes).into());
    if found != expected.base_sha256 {
        return Err(PatchError::BaseMismatch { path: path.to_owned(), expected: expected.base_sha256, found });
    }
    Ok(bytes)
}

//! Binary patches: a new version of a file made from the version the client already has and a
//! small patch, instead of downloading the whole file.
//!
//! The format is a single zstd frame compressed with the old file as reference prefix (what
//! `zstd --patch-from=OLD NEW` makes), with the result's size in the frame header and a content
//! checksum. It was chosen by measurement against bsdiff: see the `patch` benchmark.
//!
//! Applying is bounded: the base is read into memory only up to [`Limits::max_base`], the
//! declared result size must not pass [`Limits::max_result`], the patch must declare exactly the
//! signed result size, the decoder's window is capped, and decoding stops with an error at the
//! first byte past the declared size (a decompression bomb costs at most that many bytes of
//! work). The result streams to disk, is hashed on the way and lands under its final name only
//! when its size and SHA-256 are the signed ones; on any error no output file is left.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;
use upgram_core::Sha256Digest;
use zstd::zstd_safe::zstd_sys::ZSTD_ErrorCode;

use crate::fsutil::sync_parent;

/// The zstd level patches are made at: made once by the publisher, applied by every client.
pub const MAKE_LEVEL: i32 = 19;

/// The largest zstd window a patch may ask for (2 GiB): a frame asking for more is refused
/// before any memory is taken. The window actually allowed is the smallest that covers the
/// base and the declared result (see [`window_log`]).
pub const MAX_WINDOW_LOG: u32 = 31;

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
    /// The largest result written, in bytes (the declared size must not pass it).
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
    /// The patch is not a valid patch for this base (bad header, corrupt data, wrong checksum,
    /// too large a window, bytes after its end).
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

/// The zstd window log that covers both `base_len` and `result_len` bytes: the one [`make`]
/// writes and the largest [`apply_to_writer`] accepts for these sizes.
pub fn window_log(base_len: u64, result_len: u64) -> u32 {
    let span = base_len.max(result_len).max(1);
    let bits = 64 - (span - 1).leading_zeros();
    (bits + 1).clamp(10, MAX_WINDOW_LOG)
}

/// Makes a patch that turns `base` into `result` (what a publisher stores).
pub fn make(base: &[u8], result: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = zstd::stream::write::Encoder::with_ref_prefix(Vec::new(), MAKE_LEVEL, base)?;
    encoder.window_log(window_log(base.len() as u64, result.len() as u64))?;
    encoder.long_distance_matching(true)?;
    encoder.set_pledged_src_size(Some(result.len() as u64))?;
    encoder.include_contentsize(true)?;
    encoder.include_checksum(true)?;
    encoder.write_all(result)?;
    encoder.finish()
}

/// Applies the patch read from `patch` to `base`, writing the result to `out`: at most
/// `expected.result_size` bytes are ever written, and the result is checked against the signed
/// size and SHA-256. The base's hash is the caller's to check ([`apply`] does). `out` may hold
/// a partial result when this fails.
pub fn apply_to_writer<R: BufRead, W: Write>(
    base: &[u8],
    mut patch: R,
    expected: &Expected,
    limits: &Limits,
    out: W,
) -> Result<(), PatchError> {
    let signed = expected.result_size;
    if signed > limits.max_result {
        return Err(PatchError::ResultTooLarge { size: signed, max: limits.max_result });
    }
    let in_patch = declared_size(&mut patch, signed)?;
    if in_patch != Some(signed) {
        return Err(PatchError::WrongDeclaredSize { signed, in_patch });
    }
    let damaged = |e: io::Error| PatchError::Damaged { reason: e.to_string() };
    let mut decoder = zstd::stream::read::Decoder::with_ref_prefix(patch, base).map_err(damaged)?.single_frame();
    decoder.window_log_max(window_log(base.len() as u64, signed)).map_err(damaged)?;

    let mut out = Capped { inner: out, written: 0, cap: signed, hasher: Sha256::new() };
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match decoder.read(&mut buffer) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(PatchError::Truncated { produced: out.written, signed });
            }
            // The frame produces more than its header (checked equal to the signed size) says.
            Err(e) if zstd_error_is(&e, ZSTD_ErrorCode::ZSTD_error_dstSize_tooSmall) => {
                return Err(PatchError::PastDeclaredSize { signed });
            }
            Err(e) => return Err(damaged(e)),
        };
        if n == 0 {
            break;
        }
        out.write(&buffer[..n])?;
    }
    if out.written != signed {
        return Err(PatchError::Truncated { produced: out.written, signed });
    }
    let mut rest = decoder.finish();
    let trailing = rest.fill_buf().map_err(damaged)?;
    if !trailing.is_empty() {
        return Err(PatchError::Damaged { reason: "bytes after the end of the patch".to_owned() });
    }
    let found = Sha256Digest(out.hasher.finalize().into());
    if found != expected.result_sha256 {
        return Err(PatchError::ResultMismatch { expected: expected.result_sha256, found });
    }
    out.inner.flush().map_err(|source| PatchError::Io { path: PathBuf::from("<output>"), source })
}

/// Reads the result size from the patch's frame header without consuming anything.
fn declared_size<R: BufRead>(patch: &mut R, signed: u64) -> Result<Option<u64>, PatchError> {
    // A zstd frame header is at most 18 bytes; `fill_buf` of a buffered reader gives at least
    // that unless the patch is shorter.
    let head = patch.fill_buf().map_err(|e| PatchError::Damaged { reason: e.to_string() })?;
    match zstd::zstd_safe::get_frame_content_size(head) {
        Ok(size) => Ok(size),
        Err(_) if head.len() < 18 && ZSTD_MAGIC.starts_with(&head[..head.len().min(4)]) => {
            Err(PatchError::Truncated { produced: 0, signed })
        }
        Err(_) => Err(PatchError::Damaged { reason: "not a zstd frame".to_owned() }),
    }
}

/// The result size a patch's header declares, if `patch` starts with a complete header that
/// declares one.
pub fn declared_result_size(patch: &[u8]) -> Option<u64> {
    zstd::zstd_safe::get_frame_content_size(patch).ok().flatten()
}

/// Whether `error` is zstd's error of this kind.
fn zstd_error_is(error: &io::Error, kind: ZSTD_ErrorCode) -> bool {
    error.get_ref().and_then(|inner| inner.downcast_ref::<zstd::Error>()).is_some_and(|e| e.is(kind))
}

/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A writer that refuses to pass `cap` bytes and hashes what it passes on.
struct Capped<W> {
    inner: W,
    written: u64,
    cap: u64,
    hasher: Sha256,
}

impl<W: Write> Capped<W> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), PatchError> {
        let len = bytes.len() as u64;
        if len > self.cap - self.written {
            return Err(PatchError::PastDeclaredSize { signed: self.cap });
        }
        self.hasher.update(bytes);
        self.inner.write_all(bytes).map_err(|source| PatchError::Io { path: PathBuf::from("<output>"), source })?;
        self.written += len;
        Ok(())
    }
}

/// Applies the patch file `patch` to the file `base`, staging the result at `output`.
///
/// The base must hash to `expected.base_sha256`; the result is written to a temporary file
/// beside `output`, synced, and renamed to `output` only when its size and SHA-256 are the
/// signed ones. On any error no result is left: neither at `output` nor beside it.
pub fn apply(base: &Path, patch: &Path, expected: &Expected, limits: &Limits, output: &Path) -> Result<(), PatchError> {
    let base_bytes = read_base(base, expected, limits)?;
    let patch_file = File::open(patch).map_err(io_error(patch))?;

    let partial = partial_path(output);
    let file = File::create(&partial).map_err(io_error(&partial))?;
    let mut writer = BufWriter::new(file);
    let staged = apply_to_writer(&base_bytes, BufReader::new(patch_file), expected, limits, &mut writer)
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

/// Reads the base into memory (at most `limits.max_base` bytes) and checks its hash.
fn read_base(path: &Path, expected: &Expected, limits: &Limits) -> Result<Vec<u8>, PatchError> {
    let file = File::open(path).map_err(io_error(path))?;
    let len = file.metadata().map_err(io_error(path))?.len();
    if len > limits.max_base {
        return Err(PatchError::BaseTooLarge { path: path.to_owned(), len, max: limits.max_base });
    }
    let mut bytes = Vec::new();
    // The file may grow between the two calls: read no more than the cap either way.
    file.take(limits.max_base.saturating_add(1)).read_to_end(&mut bytes).map_err(io_error(path))?;
    if bytes.len() as u64 > limits.max_base {
        return Err(PatchError::BaseTooLarge { path: path.to_owned(), len: bytes.len() as u64, max: limits.max_base });
    }
    let found = Sha256Digest(Sha256::digest(&bytes).into());
    if found != expected.base_sha256 {
        return Err(PatchError::BaseMismatch { path: path.to_owned(), expected: expected.base_sha256, found });
    }
    Ok(bytes)
}

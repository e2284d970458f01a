//! Binary patches on real files in a temporary folder: a patch made from the old file gives the
//! new file's exact bytes; every hostile patch fails with its own error and leaves no result.

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use sha2::{Digest, Sha256};
use upgram_client::patch::{self, Expected, Limits, PatchError};
use upgram_core::Sha256Digest;

fn sha(bytes: &[u8]) -> Sha256Digest {
    Sha256Digest(Sha256::digest(bytes).into())
}

/// Bytes that look like a binary: repeated records with counters and some noise.
fn binary_like(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let record = out.len() as u32 / 16;
        out.extend_from_slice(&record.to_le_bytes());
        out.extend_from_slice(b"\x48\x89\xe5\x41");
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

struct Case {
    dir: tempfile::TempDir,
    base: PathBuf,
    patch: PathBuf,
    output: PathBuf,
    expected: Expected,
}

impl Case {
    /// Writes `old` as the base and the patch from `old` to `new`.
    fn new(old: &[u8], new: &[u8]) -> Case {
        let made = patch::make(old, new).expect("make a patch");
        Case::with_patch(old, new, &made)
    }

    fn with_patch(old: &[u8], new: &[u8], patch_bytes: &[u8]) -> Case {
        let dir = tempfile::tempdir().expect("temp folder");
        let base = dir.path().join("base.bin");
        let patch = dir.path().join("change.patch");
        fs::write(&base, old).expect("write base");
        fs::write(&patch, patch_bytes).expect("write patch");
        let output = dir.path().join("staged").join("new.bin");
        fs::create_dir_all(output.parent().expect("parent")).expect("staging folder");
        let expected = Expected { base_sha256: sha(old), result_sha256: sha(new), result_size: new.len() as u64 };
        Case { dir, base, patch, output, expected }
    }

    fn apply(&self) -> Result<(), PatchError> {
        self.apply_with(&self.expected, &Limits::default())
    }

    fn apply_with(&self, expected: &Expected, limits: &Limits) -> Result<(), PatchError> {
        patch::apply(&self.base, &self.patch, expected, limits, &self.output)
    }

    /// Applies with these values, expecting an error and no output; returns the error.
    fn refused(&self, expected: &Expected, limits: &Limits) -> PatchError {
        let err = self.apply_with(expected, limits).expect_err("a refused patch");
        self.assert_no_output();
        err
    }

    /// Nothing in the staging folder: no result, no partial file.
    fn assert_no_output(&self) {
        let staged: Vec<_> = fs::read_dir(self.output.parent().expect("parent"))
            .expect("staging folder")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(staged.is_empty(), "left in the staging folder: {staged:?}");
        assert!(self.dir.path().join("base.bin").exists(), "the base is kept");
    }
}

fn edited(old: &[u8]) -> Vec<u8> {
    let mut new = old.to_vec();
    new[1000..1016].copy_from_slice(b"sixteen new byte");
    new.splice(50_000..50_000, b"an inserted run of bytes".iter().copied());
    new.drain(90_000..90_100);
    new
}

#[test]
fn a_patch_made_from_the_old_file_gives_the_new_bytes() {
    let old = binary_like(200_000, 7);
    let new = edited(&old);
    let case = Case::new(&old, &new);
    case.apply().expect("the patch applies");
    assert_eq!(fs::read(&case.output).expect("staged result"), new);
    let names: Vec<_> = fs::read_dir(case.output.parent().expect("parent"))
        .expect("folder")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("new.bin")], "only the result is staged");
}

#[test]
fn a_16_byte_change_in_300_kib_moves_less_than_4_kib() {
    let old = binary_like(300 * 1024, 11);
    let mut new = old.clone();
    new[150_000..150_016].copy_from_slice(b"0123456789abcdef");
    let made = patch::make(&old, &new).expect("make");
    assert!(made.len() <= 4096, "the patch has {} bytes", made.len());
    let case = Case::with_patch(&old, &new, &made);
    case.apply().expect("applies");
    assert_eq!(fs::read(&case.output).expect("result"), new);
}

#[test]
fn a_changed_base_is_refused() {
    let old = binary_like(100_000, 3);
    let new = edited(&old);
    let case = Case::new(&old, &new);
    let mut changed = old.clone();
    changed[10] ^= 1;
    fs::write(&case.base, &changed).expect("change the base");
    let err = case.apply().expect_err("a changed base");
    assert!(matches!(&err, PatchError::BaseMismatch { found, .. } if *found == sha(&changed)), "{err}");
    case.assert_no_output();
}

#[test]
fn a_truncated_patch_is_refused() {
    let old = binary_like(100_000, 5);
    let new = edited(&old);
    let made = patch::make(&old, &new).expect("make");
    for cut in [made.len() - 1, made.len() / 2, 20, 6, 1, 0] {
        let case = Case::with_patch(&old, &new, &made[..cut]);
        let err = case.apply().expect_err("a truncated patch");
        assert!(matches!(err, PatchError::Truncated { .. }), "cut at {cut}: {err}");
        case.assert_no_output();
    }
}

/// A bsdiff integer (sign and magnitude, little endian).
fn encode_int(x: i64) -> [u8; 8] {
    if x < 0 { (x.unsigned_abs() | 1 << 63).to_le_bytes() } else { (x as u64).to_le_bytes() }
}

#[test]
fn a_decompression_bomb_stops_at_the_declared_size() {
    // A real patch to 8 MiB of zeros is a few hundred bytes; its header is made to declare
    // 100 000 bytes, the size the signed answer gives too.
    let old = binary_like(10_000, 9);
    let real = vec![0u8; 8 << 20];
    let mut bomb = patch::make(&old, &real).expect("make");
    assert!(bomb.len() < 4096, "a bomb is small: {}", bomb.len());
    let declared = 100_000;
    bomb[24..32].copy_from_slice(&encode_int(declared as i64));
    let case = Case::with_patch(&old, &real[..declared], &bomb);
    let err = case.apply().expect_err("a bomb");
    assert!(matches!(err, PatchError::PastDeclaredSize { signed: 100_000 }), "{err}");
    case.assert_no_output();
}

#[test]
fn controls_reading_outside_the_base_are_refused() {
    let old = binary_like(10_000, 31);
    let new = binary_like(20_000, 31);
    let made = patch::make(&old, &new).expect("make");
    // The declared size (bytes 24..32) and the header's negative lengths.
    for (at, value) in [(8, -1i64), (16, -5), (24, -20_000)] {
        let mut bad = made.clone();
        bad[at..at + 8].copy_from_slice(&encode_int(value));
        let case = Case::with_patch(&old, &new, &bad);
        let err = case.apply().expect_err("a negative length");
        assert!(matches!(err, PatchError::Damaged { .. } | PatchError::WrongDeclaredSize { .. }), "{at}: {err}");
        case.assert_no_output();
    }
    // A base shorter than the one the patch was made from (with its hash, so the patch is
    // the one that is wrong): the controls read past its end.
    let short = &old[..5_000];
    let case = Case::with_patch(short, &new, &made);
    let err = case.apply().expect_err("reads outside the base");
    assert!(matches!(err, PatchError::Damaged { .. }), "{err}");
    case.assert_no_output();
}

#[test]
fn a_patch_declaring_another_size_is_refused() {
    let old = binary_like(100_000, 13);
    let new = edited(&old);
    let case = Case::new(&old, &new);
    for signed in [new.len() as u64 - 1, new.len() as u64 + 1, 0] {
        let expected = Expected { result_size: signed, ..case.expected };
        let err = case.apply_with(&expected, &Limits::default()).expect_err("another size");
        assert!(
            matches!(err, PatchError::WrongDeclaredSize { in_patch: Some(n), .. } if n == new.len() as u64),
            "{err}"
        );
        case.assert_no_output();
    }
}

#[test]
fn a_damaged_patch_is_refused() {
    let old = binary_like(100_000, 17);
    let new = edited(&old);
    let made = patch::make(&old, &new).expect("make");
    // Garbage, a flipped bit in the data, bytes after the end.
    let mut flipped = made.clone();
    let middle = made.len() / 2;
    flipped[middle] ^= 0x10;
    let mut trailing = made.clone();
    trailing.extend_from_slice(b"tail");
    for (name, bytes) in
        [("garbage", b"not a patch at all, just some text".to_vec()), ("flipped", flipped), ("trailing", trailing)]
    {
        let case = Case::with_patch(&old, &new, &bytes);
        let err = case.apply().expect_err(name);
        assert!(matches!(err, PatchError::Damaged { .. }), "{name}: {err}");
        case.assert_no_output();
    }
}

#[test]
fn a_result_with_another_hash_is_refused() {
    let old = binary_like(100_000, 19);
    let new = edited(&old);
    let case = Case::new(&old, &new);
    let err = case.refused(&Expected { result_sha256: sha(b"something else"), ..case.expected }, &Limits::default());
    assert!(matches!(err, PatchError::ResultMismatch { found, .. } if found == sha(&new)), "{err}");
}

#[test]
fn the_caps_on_base_patch_and_result_hold() {
    let old = binary_like(100_000, 23);
    let new = edited(&old);
    let case = Case::new(&old, &new);
    let err = case.refused(&case.expected, &Limits { max_base: 99_999, ..Limits::default() });
    assert!(matches!(err, PatchError::BaseTooLarge { len: 100_000, max: 99_999, .. }), "{err}");
    let max_result = new.len() as u64 - 1;
    let err = case.refused(&case.expected, &Limits { max_result, ..Limits::default() });
    assert!(matches!(err, PatchError::ResultTooLarge { .. }), "{err}");
    // A patch file larger than the result it claims to give.
    let case = Case::with_patch(&old, &new, &vec![b'x'; new.len() + 1]);
    let err = case.refused(&case.expected, &Limits { max_result: new.len() as u64, ..Limits::default() });
    assert!(matches!(err, PatchError::PatchTooLarge { .. }), "{err}");
}

#[test]
fn a_stale_file_at_the_output_is_replaced() {
    let old = binary_like(100_000, 29);
    let new = edited(&old);
    let case = Case::new(&old, &new);
    fs::write(&case.output, b"stale").expect("stale result");
    case.apply().expect("applies");
    assert_eq!(fs::read(&case.output).expect("result"), new);
}

/// An edit: replace `len` bytes at `at` (a fraction of the length) with `with`.
fn apply_edits(base: &[u8], edits: &[(f64, usize, Vec<u8>)]) -> Vec<u8> {
    let mut out = base.to_vec();
    for (at, len, with) in edits {
        let start = ((*at * out.len() as f64) as usize).min(out.len());
        let end = (start + len).min(out.len());
        out.splice(start..end, with.iter().copied());
    }
    out
}

fn in_folder(dir: &Path, old: &[u8], new: &[u8]) -> Result<Vec<u8>, PatchError> {
    let made = patch::make(old, new).expect("make");
    let (base, patch_path, output) = (dir.join("base"), dir.join("patch"), dir.join("out"));
    fs::write(&base, old).expect("base");
    fs::write(&patch_path, made).expect("patch");
    let expected = Expected { base_sha256: sha(old), result_sha256: sha(new), result_size: new.len() as u64 };
    patch::apply(&base, &patch_path, &expected, &Limits::default(), &output)?;
    Ok(fs::read(&output).expect("result"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn make_then_apply_gives_the_same_bytes(
        base in proptest::collection::vec(any::<u8>(), 0..20_000),
        repeat in 1usize..4,
        edits in proptest::collection::vec((0.0f64..1.0, 0usize..300, proptest::collection::vec(any::<u8>(), 0..64)), 0..6),
    ) {
        // Repeating the base gives the encoder long matches, as in real binaries.
        let base = base.repeat(repeat);
        let new = apply_edits(&base, &edits);
        let dir = tempfile::tempdir().expect("temp folder");
        let result = in_folder(dir.path(), &base, &new).expect("applies");
        prop_assert_eq!(result, new);
    }
}

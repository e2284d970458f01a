//! Binary patch formats compared on real files: zstd with the old file as reference
//! ("patch-from") and bsdiff (`qbsdiff`), for patch size, time to make and time to apply; and
//! the client's checked apply of bsdiff patches (`upgram_client::patch`, the chosen format:
//! controls and extra stream checked first, output capped and hashed).
//!
//! Run: `cargo bench -p upgram-benches --bench patch`. Pairs of real files come from the
//! environment (each pair is skipped, loudly, when its variables are not set):
//!
//! - `PATCH_BENCH_BIN_OLD` / `PATCH_BENCH_BIN_NEW`: two builds of the `upgram` binary;
//! - `PATCH_BENCH_LIB_OLD` / `PATCH_BENCH_LIB_NEW`: a shared library at two versions;
//! - `PATCH_BENCH_LIB2_OLD` / `PATCH_BENCH_LIB2_NEW`: optionally a second one.
//!
//! The third input is made here: a 300 KiB file and the same file with 16 bytes changed.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use upgram_client::patch::{self, Expected, Limits};
use upgram_core::Sha256Digest;

/// The zstd level the publisher would use (patches are made once, applied many times).
const ZSTD_LEVEL: i32 = 19;
/// Times each apply is repeated; the median is printed.
const APPLY_RUNS: usize = 5;

struct Row {
    input: String,
    old_len: usize,
    new_len: usize,
    format: &'static str,
    patch_len: usize,
    make: Duration,
    apply: Duration,
}

/// The window that covers the base and the result, as `zstd --patch-from` picks it.
fn window_log(old: &[u8], new: &[u8]) -> u32 {
    let span = old.len().max(new.len()).max(1) as u64;
    (64 - (span - 1).leading_zeros()).clamp(10, 30) + 1
}

fn zstd_make(old: &[u8], new: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = zstd::stream::write::Encoder::with_ref_prefix(Vec::new(), ZSTD_LEVEL, old).expect("encoder");
    encoder.window_log(window_log(old, new)).expect("window");
    encoder.long_distance_matching(true).expect("ldm");
    encoder.set_pledged_src_size(Some(new.len() as u64)).expect("pledged size");
    encoder.include_contentsize(true).expect("content size");
    encoder.write_all(new).expect("compress");
    encoder.finish().expect("finish")
}

fn zstd_apply(old: &[u8], patch: &[u8], _: &Expected) -> Vec<u8> {
    use std::io::Read;
    let mut decoder = zstd::stream::read::Decoder::with_ref_prefix(patch, old).expect("decoder");
    decoder.window_log_max(31).expect("window");
    let mut out = Vec::new();
    decoder.read_to_end(&mut out).expect("decompress");
    out
}

fn bsdiff_make(old: &[u8], new: &[u8]) -> Vec<u8> {
    let mut patch = Vec::new();
    qbsdiff::Bsdiff::new(old, new).compare(&mut patch).expect("bsdiff");
    patch
}

fn bsdiff_apply(old: &[u8], patch: &[u8], _: &Expected) -> Vec<u8> {
    let mut out = Vec::new();
    qbsdiff::Bspatch::new(patch).expect("patch header").apply(old, &mut out).expect("bspatch");
    out
}

fn checked_make(old: &[u8], new: &[u8]) -> Vec<u8> {
    patch::make(old, new).expect("make")
}

fn checked_apply(old: &[u8], patch_bytes: &[u8], expected: &Expected) -> Vec<u8> {
    let mut out = Vec::new();
    patch::apply_to_writer(old, patch_bytes, expected, &Limits::default(), &mut out).expect("checked apply");
    out
}

type Make = fn(&[u8], &[u8]) -> Vec<u8>;
type Apply = fn(&[u8], &[u8], &Expected) -> Vec<u8>;

fn measure(input: &str, old: &[u8], new: &[u8], rows: &mut Vec<Row>) {
    let formats: [(&'static str, Make, Apply); 3] = [
        ("zstd patch-from -19", zstd_make, zstd_apply),
        ("bsdiff (qbsdiff)", bsdiff_make, bsdiff_apply),
        ("bsdiff, client's checked apply", checked_make, checked_apply),
    ];
    let sha = |bytes: &[u8]| Sha256Digest(Sha256::digest(bytes).into());
    let expected = Expected { base_sha256: sha(old), result_sha256: sha(new), result_size: new.len() as u64 };
    for (format, make, apply) in formats {
        let started = Instant::now();
        let patch = make(old, new);
        let make_time = started.elapsed();
        let mut applies = Vec::with_capacity(APPLY_RUNS);
        for _ in 0..APPLY_RUNS {
            let started = Instant::now();
            let out = apply(old, &patch, &expected);
            applies.push(started.elapsed());
            assert!(out == new, "{format} on {input}: the applied patch gives other bytes");
        }
        applies.sort();
        rows.push(Row {
            input: input.to_owned(),
            old_len: old.len(),
            new_len: new.len(),
            format,
            patch_len: patch.len(),
            make: make_time,
            apply: applies[APPLY_RUNS / 2],
        });
    }
}

fn pair(old_var: &str, new_var: &str) -> Option<(String, Vec<u8>, Vec<u8>)> {
    let (Ok(old), Ok(new)) = (std::env::var(old_var), std::env::var(new_var)) else {
        eprintln!("SKIPPED: set {old_var} and {new_var} to measure that pair");
        return None;
    };
    let name = std::path::Path::new(&new).file_name().map_or_else(|| new.clone(), |n| n.to_string_lossy().into_owned());
    let read = |path: &str| std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    Some((name, read(&old), read(&new)))
}

/// 300 KiB of deterministic pseudo-random bytes, and a copy with 16 bytes changed in the middle.
fn small_change() -> (Vec<u8>, Vec<u8>) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let old: Vec<u8> = (0..300 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let mut new = old.clone();
    for byte in &mut new[150_000..150_016] {
        *byte = !*byte;
    }
    (old, new)
}

fn main() {
    let mut rows = Vec::new();
    for (old_var, new_var) in [
        ("PATCH_BENCH_BIN_OLD", "PATCH_BENCH_BIN_NEW"),
        ("PATCH_BENCH_LIB_OLD", "PATCH_BENCH_LIB_NEW"),
        ("PATCH_BENCH_LIB2_OLD", "PATCH_BENCH_LIB2_NEW"),
    ] {
        if let Some((name, old, new)) = pair(old_var, new_var) {
            measure(&name, &old, &new, &mut rows);
        }
    }
    let (old, new) = small_change();
    measure("300 KiB, 16 bytes changed", &old, &new, &mut rows);

    println!(
        "| input | old → new (bytes) | format | patch (bytes) | patch / new | make | apply (median of {APPLY_RUNS}) |"
    );
    println!("|---|---|---|---:|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {} → {} | {} | {} | {:.2} % | {:.0} ms | {:.1} ms |",
            row.input,
            row.old_len,
            row.new_len,
            row.format,
            row.patch_len,
            100.0 * row.patch_len as f64 / row.new_len.max(1) as f64,
            row.make.as_secs_f64() * 1e3,
            row.apply.as_secs_f64() * 1e3,
        );
    }
}

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
//!
//! A second table gives the bytes an upgrade moves end to end: the releases published with the
//! real publisher (its default patch options) into a temporary catalog, the reference responder
//! answering a query from the first release with and without the patch signal, and every patch
//! of the answer applied with the client's checked apply: the demo's upgrades (every module of
//! `crates/upgram-client/demo/publish-demo.sh`, from its first release to its last; also with
//! `--patch-min-size 0`, since the demo's files are small), the two `upgram` builds, and the
//! 300 KiB file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use upgram_client::patch::{self, Expected, Limits};
use upgram_core::Sha256Digest;
use upgram_core::body::{Binding, FileAction, PATCH_FORMAT_BSDIFF, Query, QueryModule, UpgradeInfo};
use upgram_server::catalog::{self, Catalog};
use upgram_server::publish::{PatchOptions, PublishRequest, publish, script_steps};
use upgram_server::responder::respond;

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

/// What one upgrade moves, whole files against patches where the answer has them.
struct Moved {
    input: String,
    whole: u64,
    with_patches: u64,
    patches: usize,
    apply: Duration,
}

/// A fresh temporary folder for one catalog and its release folders.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("upgram-patch-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// Publishes `releases` (version, file id, content) of module `app`, one file each, into a
/// catalog under `dir`.
fn publish_releases(dir: &Path, releases: &[(&str, &str, &[u8])]) -> PathBuf {
    let catalog = dir.join("catalog");
    for (version, id, bytes) in releases {
        let folder = dir.join(format!("release-{version}"));
        let path = folder.join(id);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("release folder");
        std::fs::write(path, bytes).expect("release file");
        publish(&PublishRequest::new(&catalog, "app", version.parse().expect("version"), folder)).expect("publish");
    }
    catalog
}

/// The bytes a client moves from the first release of every module of `catalog` to its latest:
/// each payload of the responder's answer (a record delta where it has one, a package, a whole
/// file), and with the patch signal a patch instead of the whole file where the answer has
/// one; the patches are applied to their bases from the store with the client's checked apply.
fn upgrade_moved(input: &str, dir: &Path, loaded: &Catalog) -> Moved {
    let binding = Binding { query: Sha256Digest::of(b"bench"), issued: 0, expires: 300 };
    let modules: Vec<QueryModule<'_>> = loaded
        .modules
        .values()
        .filter_map(|m| {
            Some(QueryModule {
                id: m.id.as_str().into(),
                version: Some(m.releases.first()?.version.as_borrowed()),
                files: vec![],
            })
        })
        .collect();
    let plain = Query::new(modules);
    let patching = Query { patch: Some(PATCH_FORMAT_BSDIFF.into()), ..plain.clone() };
    let mut moved = Moved { input: input.to_owned(), whole: 0, with_patches: 0, patches: 0, apply: Duration::ZERO };
    for (query, patches) in [(&plain, false), (&patching, true)] {
        let answer = respond(loaded, query, binding, "https://updates.example/");
        for module in &answer.modules {
            let bytes: u64 = match &module.upgrade {
                UpgradeInfo::None => 0,
                UpgradeInfo::Package(package) => package.payload.size,
                UpgradeInfo::Files(files) => files
                    .iter()
                    .map(|file| match (&file.action, &file.patch) {
                        (FileAction::Replace(payload), Some(patch)) => {
                            let read = |sha: &Sha256Digest| {
                                std::fs::read(catalog::store::blob_path(dir, sha)).expect("stored blob")
                            };
                            let (base, patch_bytes) = (read(&patch.base_sha256), read(&patch.payload.sha256));
                            let expected = Expected {
                                base_sha256: patch.base_sha256,
                                result_sha256: payload.sha256,
                                result_size: payload.size,
                            };
                            let started = Instant::now();
                            let out = checked_apply(&base, &patch_bytes, &expected);
                            moved.apply += started.elapsed();
                            assert_eq!(out.len() as u64, payload.size);
                            moved.patches += 1;
                            patch.payload.size
                        }
                        (FileAction::Replace(payload), None) => payload.size,
                        (FileAction::Incremental { delta, .. }, _) => delta.payload.size,
                        (FileAction::Delete, _) => 0,
                    })
                    .sum(),
            };
            if patches {
                moved.with_patches += bytes;
            } else {
                moved.whole += bytes;
            }
        }
    }
    moved
}

/// What an upgrade of a module whose file `id` goes from `old` to `new` moves.
fn one_file_upgrade(input: &str, id: &str, old: &[u8], new: &[u8]) -> Moved {
    let dir = scratch(&input.len().to_string());
    let catalog_dir = publish_releases(&dir, &[("1.0", id, old), ("1.1", id, new)]);
    let loaded = catalog::load(&catalog_dir).expect("catalog");
    let moved = upgrade_moved(input, &catalog_dir, &loaded);
    let _ = std::fs::remove_dir_all(dir);
    moved
}

/// The demo's releases published into a scratch catalog with `options`.
fn demo_catalog(name: &str, options: PatchOptions) -> (PathBuf, Catalog) {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/upgram-client/demo");
    let script = std::fs::read_to_string(demo.join("publish-demo.sh")).expect("the demo's publish script");
    let dir = scratch(name);
    let catalog_dir = dir.join("catalog");
    for mut request in script_steps(&script, &demo, &catalog_dir).expect("the demo's publish steps") {
        request.patches = options;
        publish(&request).expect("publish a demo release");
    }
    let loaded = catalog::load(&catalog_dir).expect("the demo catalog");
    (dir, loaded)
}

fn moved_table() {
    let mut rows = Vec::new();
    for (name, options) in [
        ("the demo's upgrades (publisher defaults)", PatchOptions::default()),
        ("the demo's upgrades (--patch-min-size 0)", PatchOptions { min_size: 0, ..PatchOptions::default() }),
    ] {
        let (dir, loaded) = demo_catalog(&name.len().to_string(), options);
        rows.push(upgrade_moved(name, &dir.join("catalog"), &loaded));
        let _ = std::fs::remove_dir_all(dir);
    }
    if let Some((name, old, new)) = pair("PATCH_BENCH_BIN_OLD", "PATCH_BENCH_BIN_NEW") {
        rows.push(one_file_upgrade(&format!("two builds of `upgram` ({name})"), "bin/upgram", &old, &new));
    }
    let (old, new) = small_change();
    rows.push(one_file_upgrade("300 KiB, 16 bytes changed", "bin/app", &old, &new));

    println!();
    println!("| upgrade | whole files (bytes) | with patches (bytes) | patches | moved | apply |");
    println!("|---|---:|---:|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {} | {} | {} | {:.2} % | {:.1} ms |",
            row.input,
            row.whole,
            row.with_patches,
            row.patches,
            100.0 * row.with_patches as f64 / row.whole.max(1) as f64,
            row.apply.as_secs_f64() * 1e3,
        );
    }
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
    moved_table();
}

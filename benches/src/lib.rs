//! Benchmarks of upgram.
//!
//! - `benches/codec.rs`: encode and decode of a typical query and of a 1024-byte response,
//!   signature sign and verify, with the decode time reported as a ratio against a bare
//!   quick-xml event-and-attribute scan of the same bytes, measured in the same run.
//!
//! - `benches/load.rs`: the reference server under load on loopback, against a plain UDP
//!   echo server (`src/bin/udp-echo.rs`) measured in the same run.
//!
//! This library holds what the benchmark binaries share: the test vectors they measure and the
//! load generator ([`load`]).

pub mod load;

use std::path::{Path, PathBuf};

/// The folder of the protocol's test vectors.
pub fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol-spec/vectors")
}

/// The bytes of the test vector whose file name starts with `prefix` (e.g. `"13-"`).
///
/// Panics with a clear message if it is missing or malformed: benchmarks measure the committed
/// vectors and nothing else.
pub fn vector_bytes(prefix: &str) -> Vec<u8> {
    let dir = vectors_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let path = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
        .unwrap_or_else(|| panic!("no vector {prefix}* in {}", dir.display()));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let hex: String = value
        .get("hex")
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("{}: no hex", path.display()))
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    hex::decode(hex).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

//! Replays every committed corpus file (`corpus/<target>/`) and every crash ever found
//! (`regressions/<target>/`) through the target functions, on the stable toolchain.

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 7] = [
    ("datagram", upgram_fuzz::datagram),
    ("document", upgram_fuzz::document),
    ("version", upgram_fuzz::version),
    ("records", upgram_fuzz::records),
    ("roundtrip", upgram_fuzz::roundtrip),
    ("batch", upgram_fuzz::batch),
    ("patch", upgram_fuzz::patch),
];

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

fn replay(folder: &str, require_files: bool) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let mut total = 0;
    for (name, target) in TARGETS {
        let inputs = files(&root.join(name));
        assert!(!require_files || !inputs.is_empty(), "{folder}/{name} is empty");
        for path in &inputs {
            let data = std::fs::read(path).expect("readable input");
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} panics", path.display());
        }
        total += inputs.len();
    }
    total
}

#[test]
fn every_corpus_file_passes() {
    let count = replay("corpus", true);
    println!("replayed {count} corpus files");
}

#[test]
fn every_past_crash_stays_fixed() {
    let count = replay("regressions", false);
    println!("replayed {count} past crashes");
}

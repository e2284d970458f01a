//! Builds the demo's material (the repository's `demo/` folder: releases, install packages, the
//! publishing script) into the `upgram` binary when the `demo` feature is on, so that an
//! installed `upgram demo` needs no source tree. Each file keeps its executable bit, which the
//! publisher records.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("demo_files.rs");
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../demo");
    let mut files = Vec::new();
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_DEMO").is_some() {
        println!("cargo:rerun-if-changed={}", demo.display());
        if demo.is_dir() {
            collect(&demo, &demo, &mut files);
        } else {
            println!("cargo:warning=no demo/ folder at {}: `upgram demo` will say so", demo.display());
        }
    }
    files.sort();
    let mut code = String::from("/// The demo's files: path under demo/, content, executable.\n");
    code.push_str("pub(crate) static DEMO_FILES: &[(&str, &[u8], bool)] = &[\n");
    for (rel, path, executable) in &files {
        let path = path.canonicalize().expect("demo file path");
        writeln!(code, "    ({rel:?}, include_bytes!({:?}), {executable}),", path.display().to_string())
            .expect("writing to a String");
    }
    code.push_str("];\n");
    std::fs::write(&out, code).expect("writing demo_files.rs");
}

/// Every file under `dir` (but a catalog an earlier run of publish-demo.sh left at the top).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf, bool)>) {
    let entries = std::fs::read_dir(dir).expect("reading demo/");
    for entry in entries {
        let path = entry.expect("reading demo/").path();
        let rel = path.strip_prefix(root).expect("under demo/").to_string_lossy().replace('\\', "/");
        if rel == "catalog" {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            files.push((rel, path.clone(), is_executable(&path)));
        }
    }
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "sh")
}

//! Incremental record files through `upgram update` (C7): the record delta is used when the
//! installed file is its base; anything else falls back to the whole file; and when neither
//! works the module is left exactly as it was.

use std::path::Path;

mod common;
use common::binaries::{ServerProcess, serve_releases, upgram};
use upgram_core::Sha256Digest;
use upgram_core::records::{Record, RecordFile};

fn records(entries: &[(u64, &str)]) -> Vec<u8> {
    let records = entries.iter().map(|(id, c)| Record { id: *id, content: c.as_bytes() }).collect();
    RecordFile::from_records(records).unwrap().to_vec()
}

fn old_db() -> Vec<u8> {
    records(&[(1, "alpha"), (2, "beta"), (3, "gamma"), (4, &"padding ".repeat(200))])
}

fn new_db() -> Vec<u8> {
    records(&[(1, "ALPHA"), (3, "gamma"), (4, &"padding ".repeat(200)), (100, "added")])
}

fn setup(work: &Path) -> ServerProcess {
    let (old, new) = (old_db(), new_db());
    let releases = vec![
        ("db", "1.0", vec![("sig.rec", old.as_slice()), ("readme", b"v1".as_slice())]),
        ("db", "1.1", vec![("sig.rec", new.as_slice()), ("readme", b"v1".as_slice())]),
    ];
    serve_releases(&work.join("server"), &releases)
}

fn install(root: &Path, sig: &[u8]) {
    std::fs::create_dir_all(root.join(".upgram")).unwrap();
    std::fs::write(root.join("sig.rec"), sig).unwrap();
    std::fs::write(root.join("readme"), b"v1").unwrap();
    let state = serde_json::json!({ "modules": { "db": { "version": "1.0", "files": {
        "sig.rec": { "version": "1.0", "sha256": Sha256Digest::of(&old_db()).to_hex() },
        "readme": { "version": "1.0", "sha256": Sha256Digest::of(b"v1").to_hex() },
    } } } });
    std::fs::write(root.join(".upgram/state.json"), state.to_string()).unwrap();
}

fn update(server: &ServerProcess, root: &Path) -> (i32, String) {
    let (code, out, err) = upgram(&[
        "update",
        "--yes",
        "--server",
        &server.udp,
        "--public-key",
        &server.public_key,
        "--root",
        root.to_str().unwrap(),
    ]);
    (code, format!("{out}{err}"))
}

#[test]
fn the_delta_is_used_when_the_base_matches() {
    let work = tempfile::tempdir().unwrap();
    let server = setup(work.path());
    // Without the whole file on the server, only the delta can produce 1.1.
    let whole = work.path().join("server/catalog/store").join(Sha256Digest::of(&new_db()).to_hex());
    std::fs::remove_file(&whole).unwrap();
    let root = work.path().join("install");
    install(&root, &old_db());
    let (code, output) = update(&server, &root);
    assert_eq!(code, 0, "{output}");
    assert_eq!(std::fs::read(root.join("sig.rec")).unwrap(), new_db(), "merged to exactly the new file");
}

#[test]
fn a_damaged_base_falls_back_to_the_whole_file_or_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let server = setup(work.path());
    let damaged = records(&[(1, "tampered"), (2, "beta")]);

    let root = work.path().join("install");
    install(&root, &damaged);
    let (code, output) = update(&server, &root);
    assert_eq!(code, 0, "{output}");
    assert_eq!(std::fs::read(root.join("sig.rec")).unwrap(), new_db(), "replaced whole");

    // And with the whole file gone too: the module fails and stays exactly as it was.
    let whole = work.path().join("server/catalog/store").join(Sha256Digest::of(&new_db()).to_hex());
    std::fs::remove_file(&whole).unwrap();
    let again = work.path().join("install-2");
    install(&again, &damaged);
    let modules = |root: &Path| -> (serde_json::Value, serde_json::Value) {
        let text = std::fs::read_to_string(root.join(".upgram/state.json")).unwrap();
        let db = serde_json::from_str::<serde_json::Value>(&text).unwrap()["modules"]["db"].clone();
        (db["version"].clone(), db["files"].clone())
    };
    let before = modules(&again);
    let (code, output) = update(&server, &again);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("failed"), "{output}");
    assert_eq!(std::fs::read(again.join("sig.rec")).unwrap(), damaged, "nothing changed");
    assert_eq!(modules(&again), before, "the module's state is untouched (only cookies were cached)");
}

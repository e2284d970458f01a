//! The demo catalog source, `demo/` (S2): its record files are the ones this file generates,
//! and the `publish` lines of `demo/publish-demo.sh`, run through the library, build a catalog
//! that loads, with the dependencies, deltas, frequent files and packages the demo is there to
//! show.
//!
//! To regenerate the record files after changing the generator:
//! `UPGRAM_WRITE_DEMO=1 cargo test -p upgram-server --test demo`.

use std::fs;
use std::path::{Path, PathBuf};

use upgram_core::records::apply_delta;
use upgram_server::catalog::{self, store::blob_path};
use upgram_server::publish::{PublishRequest, publish};

mod common;

fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../demo")
}

const ANTIVIRUS_RELEASES: [&str; 5] = ["1.0", "1.1", "1.2", "1.3", "1.4"];

fn encode(records: &[(u64, String)]) -> Vec<u8> {
    let borrowed: Vec<(u64, &str)> = records.iter().map(|(id, content)| (*id, content.as_str())).collect();
    common::record_file(&borrowed)
}

/// `db/signatures.rec` of release number `k`: every release adds five signatures, revises
/// those whose id is `k` modulo 7, and withdraws signature `10 k`.
fn signatures(k: u64) -> Vec<u8> {
    let families = ["Trojan.Agent", "Worm.Mydoom", "Adware.Popup", "Ransom.Locker"];
    let severity = ["low", "medium", "high"];
    let records: Vec<(u64, String)> = (1..=60 + 5 * k)
        .filter(|id| !(1..=k).any(|j| *id == 10 * j))
        .map(|id| {
            let revision = if k > 0 && id % 7 == k { k } else { 0 };
            let pattern = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ revision;
            let family = families[(id % 4) as usize];
            let severity = severity[(id % 3) as usize];
            let content =
                format!("name=Demo.{family}.{id:03};pattern={pattern:016x};severity={severity};rev={revision}");
            (id, content)
        })
        .collect();
    encode(&records)
}

/// `db/whitelist.rec` of release number `k`: trusted programs; it changes once, in 1.2.
fn whitelist(k: u64) -> Vec<u8> {
    let mut names = vec!["/usr/bin/upgram-demo", "/opt/demo/bin/viewer", "/opt/demo/bin/editor"];
    if k >= 2 {
        names.push("/opt/demo/plugins/pdf/render");
    }
    let records: Vec<(u64, String)> =
        names.iter().zip(1u64..).map(|(name, id)| (id, format!("trusted={name}"))).collect();
    encode(&records)
}

fn demo_record_files() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for (k, version) in (0u64..).zip(ANTIVIRUS_RELEASES) {
        let db = demo_dir().join("releases/antivirus-db").join(version).join("db");
        files.push((db.join("signatures.rec"), signatures(k)));
        files.push((db.join("whitelist.rec"), whitelist(k)));
    }
    files
}

#[test]
fn demo_record_files_are_the_generated_ones() {
    let write = std::env::var_os("UPGRAM_WRITE_DEMO").is_some();
    for (path, bytes) in demo_record_files() {
        if write {
            fs::write(&path, &bytes).unwrap();
        }
        let committed = fs::read(&path).unwrap_or_default();
        assert!(committed == bytes, "{} differs from the generator; rerun with UPGRAM_WRITE_DEMO=1", path.display());
    }
}

/// The `publish` lines of `demo/publish-demo.sh`, as requests into `catalog`.
fn demo_steps(catalog: &Path) -> Vec<PublishRequest> {
    let script = fs::read_to_string(demo_dir().join("publish-demo.sh")).unwrap();
    let steps = upgram_server::publish::script_steps(&script, &demo_dir(), catalog).unwrap();
    assert_eq!(steps.len(), 13, "the script's publish lines");
    steps
}

#[test]
fn the_demo_script_builds_a_catalog_that_loads() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("catalog");
    for step in demo_steps(&dir) {
        let summary = publish(&step).unwrap_or_else(|e| panic!("{step:?}: {e}"));
        assert!(summary.notes.is_empty(), "{summary}");
    }
    let catalog = catalog::load(&dir).unwrap();
    let ids: Vec<&str> = catalog.modules.keys().map(String::as_str).collect();
    assert_eq!(ids, ["antivirus-db", "driver", "main-module", "main-program", "pdf-plugin"]);

    let module = |id: &str| &catalog.modules[id];
    let requires = |id: &str| module(id).latest().unwrap().requires.clone();
    assert_eq!(requires("main-module"), [("main-program".into(), "1.1".parse().unwrap())]);
    assert_eq!(requires("pdf-plugin"), [("main-module".into(), "5.1".parse().unwrap())]);
    let main_module = module("main-module").latest().unwrap();
    assert_eq!(main_module.deleted[0].id, "modules/main-module/legacy.lua");

    let antivirus = module("antivirus-db");
    assert_eq!(antivirus.frequent, ["db/signatures.rec"]);
    assert!(antivirus.releases[3].forced);
    let latest = antivirus.latest().unwrap();
    assert_eq!(latest.file("db/engine.conf").unwrap().version.as_str(), "1.0");
    assert_eq!(latest.file("db/whitelist.rec").unwrap().version.as_str(), "1.2");
    let signature_deltas: Vec<_> = latest.deltas.iter().filter(|d| d.file == "db/signatures.rec").collect();
    assert_eq!(signature_deltas.len(), 4, "from 1.0, 1.1, 1.2 and 1.3");
    for delta in signature_deltas {
        let k = ANTIVIRUS_RELEASES.iter().position(|v| *v == delta.from.as_str()).unwrap() as u64;
        let patch = fs::read(blob_path(&dir, &delta.blob.sha256)).unwrap();
        assert_eq!(apply_delta(&signatures(k), &patch).unwrap(), signatures(4));
    }
    assert_eq!(latest.deltas.len(), 5, "the whitelist's delta from 1.0 carried over");

    let driver = module("driver").latest().unwrap();
    let package = driver.package.as_ref().unwrap();
    assert_eq!(package.args.as_deref(), Some("--quiet"));
    assert!(driver.file("drivers/upgram-filter.dll").is_some());
}

#[test]
fn the_demo_stays_small() {
    fn size(path: &Path) -> u64 {
        if path.is_dir() {
            fs::read_dir(path).unwrap().map(|e| size(&e.unwrap().path())).sum()
        } else {
            fs::metadata(path).unwrap().len()
        }
    }
    let demo = demo_dir();
    let total: u64 = ["releases", "packages", "publish-demo.sh", "README.md"]
        .iter()
        .map(|p| demo.join(p))
        .filter(|p| p.exists())
        .map(|p| size(&p))
        .sum();
    assert!(total < 200 * 1024, "demo/ is {total} bytes");
}

//! Binary patches end to end (SPEC.md §5.12): releases published with the real publisher into a
//! catalog folder, the reference server on 127.0.0.1 (UDP and HTTP), and the client library
//! updating a real installation. A 16-byte change in a 300 KiB file moves a patch of a few KiB;
//! a locally changed file, or a patch damaged in the store, falls back to the whole file and the
//! upgrade still succeeds; a query without the patch signal gets no patch.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::{TestServer, client_runtime, public_key, start_server_in};
use upgram_client::flows::{self, Optional, PatchCounts};
use upgram_client::hooks::Hooks;
use upgram_client::staging::{Download, Progress};
use upgram_client::{Client, Installation};
use upgram_core::Sha256Digest;
use upgram_core::body::{Query, QueryModule, Response, UpgradeInfo};
use upgram_core::message::{Datagram, Message};
use upgram_core::wire::{Frame, QueryOptions};
use upgram_server::catalog;
use upgram_server::publish::{PublishRequest, publish};

const MODULE: &str = "app";
const BIG: &str = "bin/app";

/// `len` bytes that do not compress (a seeded random stream), like a program's code.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut out = vec![0; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut out);
    out
}

/// The 300 KiB program at 1.0.
fn old_program() -> Vec<u8> {
    noise(11, 300 << 10)
}

/// The program at 1.1: 16 bytes changed in the middle.
fn new_program() -> Vec<u8> {
    let mut bytes = old_program();
    bytes[150_000..150_016].copy_from_slice(b"sixteen new byte");
    bytes
}

/// Publishes `version` of the module with the program `program` and a small readme.
fn publish_version(catalog: &Path, work: &Path, version: &str, program: &[u8]) {
    let folder = work.join(format!("release-{version}"));
    std::fs::create_dir_all(folder.join("bin")).unwrap();
    std::fs::write(folder.join(BIG), program).unwrap();
    std::fs::write(folder.join("readme"), format!("readme {version}")).unwrap();
    publish(&PublishRequest::new(catalog, MODULE, version.parse().unwrap(), folder)).unwrap();
}

/// Counts the payload bytes that arrive, by download name.
#[derive(Default)]
struct Bytes(Mutex<Vec<(String, u64)>>);

impl Progress for Bytes {
    fn advanced(&self, download: &Download<'_>, bytes: u64) {
        self.0.lock().unwrap().push((download.name.to_owned(), bytes));
    }
}

impl Bytes {
    fn total(&self) -> u64 {
        self.0.lock().unwrap().iter().map(|(_, n)| n).sum()
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.0.lock().unwrap().iter().map(|(name, _)| name.clone()).collect();
        names.dedup();
        names
    }
}

/// A catalog folder with 1.0 published, the server on it, and a client.
struct Setup {
    work: tempfile::TempDir,
    catalog: std::path::PathBuf,
    server: TestServer,
    client: Client,
}

fn setup() -> Setup {
    let work = tempfile::tempdir().unwrap();
    let catalog_dir = tempfile::tempdir().unwrap();
    let catalog = catalog_dir.path().to_owned();
    publish_version(&catalog, work.path(), "1.0", &old_program());
    let server = start_server_in(catalog_dir, catalog::load(&catalog).unwrap(), |_| {});
    let client = Client::builder()
        .server(server.udp)
        .public_key(public_key())
        .deadline(Duration::from_secs(10))
        .first_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    Setup { work, catalog, server, client }
}

impl Setup {
    /// Installs 1.0 at a new root named `name`.
    fn install(&self, runtime: &tokio::runtime::Runtime, name: &str) -> std::path::PathBuf {
        let root = self.work.path().join(name);
        std::fs::create_dir_all(&root).unwrap();
        let installation = Installation::open_locked(&root).unwrap();
        runtime
            .block_on(flows::install(&installation, &self.client, &[MODULE.to_owned()], false, &Hooks::default()))
            .unwrap();
        assert_eq!(std::fs::read(root.join(BIG)).unwrap(), old_program());
        root
    }

    /// Publishes 1.1 and has the server answer from it.
    fn publish_new(&self) {
        publish_version(&self.catalog, self.work.path(), "1.1", &new_program());
        self.server.shared.replace_catalog(catalog::load(&self.catalog).unwrap());
    }

    /// The stored patch of 1.1's program, from 1.0.
    fn stored_patch(&self) -> std::path::PathBuf {
        let loaded = catalog::load(&self.catalog).unwrap();
        let release = loaded.modules[MODULE].latest().unwrap();
        let patch = release.patches.iter().find(|p| p.file == BIG).expect("the publisher made a patch");
        catalog::store::blob_path(&self.catalog, &patch.blob.sha256)
    }

    /// Updates the installation at `root`: the patch counts and the bytes that arrived.
    fn update(&self, runtime: &tokio::runtime::Runtime, root: &Path) -> (PatchCounts, Arc<Bytes>) {
        let bytes = Arc::new(Bytes::default());
        let hooks = Hooks { progress: bytes.clone(), ..Hooks::default() };
        let installation = Installation::open_locked(root).unwrap();
        let report =
            runtime.block_on(flows::update(&installation, &self.client, Optional::Take, false, &hooks)).unwrap();
        assert!(!report.failed(), "{:?}", report.outcomes);
        assert_eq!(installation.module(MODULE).unwrap().version, "1.1");
        let recorded = &installation.module(MODULE).unwrap().files[BIG];
        assert_eq!(recorded.sha256, Sha256Digest::of(&new_program()).to_hex(), "the state records the new content");
        (report.patches, bytes)
    }
}

fn check_result(root: &Path) {
    assert_eq!(std::fs::read(root.join(BIG)).unwrap(), new_program(), "exactly the new bytes");
    assert_eq!(std::fs::read(root.join("readme")).unwrap(), b"readme 1.1");
}

#[test]
fn a_sixteen_byte_change_in_a_large_file_moves_only_the_patch() {
    let setup = setup();
    let runtime = client_runtime();
    let root = setup.install(&runtime, "site");
    setup.publish_new();
    let (patches, bytes) = setup.update(&runtime, &root);
    check_result(&root);
    assert_eq!(patches, PatchCounts { used: 1, fell_back: 0 });
    let names = bytes.names();
    assert!(names.contains(&format!("{BIG} (patch)")), "{names:?}");
    assert!(!names.contains(&BIG.to_owned()), "the whole program is not downloaded: {names:?}");
    let moved = bytes.total();
    assert!(moved <= 4096, "{moved} bytes moved for a 16-byte change in {} bytes", new_program().len());
}

#[test]
fn a_locally_changed_file_is_fetched_whole() {
    let setup = setup();
    let runtime = client_runtime();
    let root = setup.install(&runtime, "site");
    setup.publish_new();
    // The state still records 1.0's hash, but the file on disk is no longer that content.
    let mut changed = old_program();
    changed[10] ^= 0xff;
    std::fs::write(root.join(BIG), &changed).unwrap();
    let (patches, bytes) = setup.update(&runtime, &root);
    check_result(&root);
    assert_eq!(patches, PatchCounts { used: 0, fell_back: 1 });
    assert!(bytes.names().contains(&BIG.to_owned()), "{:?}", bytes.names());
    assert!(bytes.total() >= new_program().len() as u64);
}

#[test]
fn a_damaged_patch_in_the_store_falls_back_to_the_whole_file() {
    let setup = setup();
    let runtime = client_runtime();
    let root = setup.install(&runtime, "site");
    setup.publish_new();
    // Damage the stored patch after publishing: the HTTP server serves the damaged bytes.
    let stored = setup.stored_patch();
    let mut damaged = std::fs::read(&stored).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x55;
    std::fs::write(&stored, &damaged).unwrap();
    let (patches, bytes) = setup.update(&runtime, &root);
    check_result(&root);
    assert_eq!(patches, PatchCounts { used: 0, fell_back: 1 });
    let names = bytes.names();
    assert!(names.contains(&format!("{BIG} (patch)")) && names.contains(&BIG.to_owned()), "{names:?}");
}

/// Sends `query` to the server over UDP (padded, so any reply may come at once) and returns the
/// answer's body.
fn ask(server: &TestServer, query: &Query<'_>) -> Vec<u8> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = query.to_vec();
    let options = QueryOptions { pad_to: 342, ..QueryOptions::default() };
    socket.send_to(&Frame::query(7, &body, &options).to_vec().unwrap(), server.udp).unwrap();
    let mut buffer = [0u8; 2048];
    let len = socket.recv(&mut buffer).unwrap();
    let datagram = Datagram::decode(&buffer[..len]).unwrap();
    match &datagram.message {
        Message::Response(reply) => reply.raw_body().to_vec(),
        other => panic!("not an inline response: {other:?}"),
    }
}

#[test]
fn only_a_query_with_the_patch_signal_gets_a_patch() {
    let setup = setup();
    setup.publish_new();
    let module = || vec![QueryModule { id: MODULE.into(), version: Some("1.0".parse().unwrap()), files: vec![] }];
    let has_patch = |body: &[u8]| {
        let response = Response::decode(body).unwrap();
        let UpgradeInfo::Files(files) = &response.module(MODULE).unwrap().upgrade else { panic!("a file list") };
        files.iter().find(|f| f.id == BIG).unwrap().patch.is_some()
    };
    let old = ask(&setup.server, &Query::new(module()));
    assert!(!has_patch(&old), "{}", String::from_utf8_lossy(&old));
    assert!(!String::from_utf8_lossy(&old).contains("<patch"));
    let new = ask(&setup.server, &Query { patch: Some("bsdiff".into()), ..Query::new(module()) });
    assert!(has_patch(&new), "{}", String::from_utf8_lossy(&new));
}

//! Fallbacks to module documents (SPEC.md §8.5), end to end over real UDP and HTTP on
//! 127.0.0.1 with the reference server: an installation whose answer does not fit a datagram
//! installs through the module documents the signed fallback names, and a document whose served
//! bytes were changed is refused by its hash, failing the check cleanly.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::mirror::{Behaviour, Documents, Mirror};
use common::{client, client_runtime, installed, start_server};
use upgram_client::Installation;
use upgram_client::client::ClientError;
use upgram_client::fetch::FetchError;
use upgram_client::flows;
use upgram_client::hooks::Hooks;
use upgram_core::Sha256Digest;
use upgram_core::body::Status;
use upgram_core::message::DocumentError;

const DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn an_answer_too_large_for_a_datagram_installs_through_module_documents() {
    let server = start_server(|_| {});
    let runtime = client_runtime();
    let client = client(&[server.udp], DEADLINE, Duration::from_millis(500));
    let root = tempfile::tempdir().expect("temporary folder");
    let installation = Installation::open_locked(root.path()).expect("installation opens");
    let report = runtime
        .block_on(flows::install(&installation, &client, &["big".to_owned()], false, &Hooks::default()))
        .expect("big installs");
    let check = report.check.expect("asked the server");
    assert_eq!(check.fallbacks, 1, "forty files do not fit a datagram");
    assert_eq!(installation.module("big").expect("installed").version, "2");
    // What the server kept is big's module document alone: one document, a <module> element.
    let (count, _) = server.shared.documents_kept();
    assert_eq!(count, 1);
    let file = std::fs::read(root.path().join("data/part-07.bin")).expect("an installed file");
    assert_eq!(file, b"data/part-07.bin at 2");
}

/// The documents a static web server would serve from `--docs-dir`: the files themselves.
fn from_docs_dir(dir: PathBuf) -> Documents {
    Arc::new(move |sha256: &Sha256Digest| std::fs::read(document_file(&dir, sha256)).ok().map(Bytes::from))
}

fn document_file(dir: &Path, sha256: &Sha256Digest) -> PathBuf {
    dir.join("doc").join(format!("{}.xml", sha256.to_hex()))
}

/// Waits (bounded) until the server's document writer put a document in place under `dir` (its
/// final name `<sha256>.xml`, not the temporary file it writes first); returns its path.
fn written_document(dir: &Path) -> PathBuf {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let placed = std::fs::read_dir(dir.join("doc")).ok().and_then(|entries| {
            entries.filter_map(Result::ok).map(|e| e.path()).find(|path| {
                path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".xml") && !n.starts_with('.'))
            })
        });
        if let Some(path) = placed {
            return path;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no document was written under {}", dir.display());
}

#[test]
fn a_module_document_changed_on_the_web_server_is_refused_by_its_hash() {
    let runtime = client_runtime();
    let docs = tempfile::tempdir().expect("temporary folder");
    let mirror = runtime
        .block_on(Mirror::start(Behaviour::Good, from_docs_dir(docs.path().to_owned()), Duration::from_secs(120)))
        .expect("mirror");
    let public_url = mirror.base_url();
    let docs_dir = docs.path().to_owned();
    let server = start_server(|config| {
        config.public_url = public_url;
        config.docs_dir = Some(docs_dir);
    });
    let client = client(&[server.udp], DEADLINE, Duration::from_millis(500));
    let asked = installed(&[("big", "1")]);
    // The pointer goes out once the document is in the store; its file follows (written off the
    // worker), so the first check may find nothing on the web server yet: it is repeated once
    // the file is there.
    let _ = runtime.block_on(client.check(&asked));
    let file = written_document(docs.path());
    let report = runtime.block_on(client.check(&asked)).expect("the documents are fetched and verified");
    assert_eq!(report.fallbacks, 1);
    let results = report.results(&asked);
    assert_eq!(results[0].status, Status::Update);
    let served = std::fs::read(&file).expect("the document file");
    assert!(served.starts_with(b"<module id=\"big\""), "a module document: {}", String::from_utf8_lossy(&served));

    // Someone changes the file the web server serves: one URL (the same answer, cached by the
    // server in this window) now gives other bytes.
    let tampered = String::from_utf8(served).expect("utf-8").replace("data/part-00.bin", "data/part-0X.bin");
    std::fs::write(&file, tampered).expect("overwrite");
    match runtime.block_on(client.check(&asked)) {
        Err(ClientError::Fetch(FetchError::AllMirrors(failures))) => match &failures[..] {
            [FetchError::Document { url, source: DocumentError::HashMismatch { expected, found } }] => {
                assert!(url.ends_with(&format!("{}.xml", expected.to_hex())), "{url}");
                assert_ne!(expected, found);
            }
            other => panic!("expected a hash mismatch, got {other:?}"),
        },
        other => panic!("a changed document was not refused by its hash: {other:?}"),
    }
}

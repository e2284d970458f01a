//! The real `upgram-server` binary (S1-S4, S7): releases published with `publish`, then
//! `serve` as a child process answering over UDP and HTTP, picking up a live publish by itself
//! and a SIGHUP, stopping cleanly on SIGTERM; and the published tree, fallback documents
//! included, served by a plain static web server (`python3 -m http.server`).

use std::borrow::Cow;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use upgram_core::body::{FileAction, Query, QueryModule, Response, Status, UpgradeInfo};
use upgram_core::cookie::ClientCookie;
use upgram_core::message::Expectation;
use upgram_core::sign::KeyRing;
use upgram_core::version::Version;
use upgram_core::wire::{Frame, QueryOptions};
use upgram_core::{Datagram, Message, Sha256Digest};

const BIN: &str = env!("CARGO_BIN_EXE_upgram-server");

fn run(args: &[&str]) -> String {
    let output = Command::new(BIN).args(args).output().expect("upgram-server runs");
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf8")
}

fn release(root: &Path, name: &str, files: &[(&str, String)]) -> PathBuf {
    let dir = root.join(name);
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

fn publish(catalog: &Path, module: &str, version: &str, folder: &Path) {
    run(&[
        "publish",
        "--catalog",
        catalog.to_str().unwrap(),
        "--module",
        module,
        "--version",
        version,
        "--from",
        folder.to_str().unwrap(),
    ]);
}

/// app 1.0 -> 1.1; bulk 1 -> 2 with 40 files (its answer needs a fallback).
fn setup(root: &Path) -> (PathBuf, PathBuf, KeyRing) {
    let catalog = root.join("catalog");
    publish(
        &catalog,
        "app",
        "1.0",
        &release(root, "app-1.0", &[("bin/app", "app 1.0".into()), ("README", "read me".into())]),
    );
    publish(
        &catalog,
        "app",
        "1.1",
        &release(root, "app-1.1", &[("bin/app", "app 1.1".into()), ("README", "read me".into())]),
    );
    for version in ["1", "2"] {
        let files: Vec<(String, String)> =
            (0..40).map(|i| (format!("data/part-{i:02}.bin"), format!("bulk part {i} v{version}"))).collect();
        let files: Vec<(&str, String)> = files.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
        publish(&catalog, "bulk", version, &release(root, &format!("bulk-{version}"), &files));
    }
    let key = root.join("server.key");
    let info = run(&["keygen", "--out", key.to_str().unwrap()]);
    let public: [u8; 32] =
        hex::decode(info.lines().next().unwrap().trim_start_matches("public key: ")).unwrap().try_into().unwrap();
    let mut keys = KeyRing::new();
    keys.add_bytes(&public).expect("a valid public key");
    (catalog, key, keys)
}

struct Server {
    child: Child,
    udp: SocketAddr,
    http: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(catalog: &Path, key: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--catalog", catalog.to_str().unwrap(), "--key", key.to_str().unwrap()])
        .args(["--udp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("the address line");
    let mut parts = line.split_whitespace();
    let udp = parts.next().unwrap().trim_start_matches("udp=").parse().unwrap();
    let http = parts.next().unwrap().trim_start_matches("http=").parse().unwrap();
    Server { child, udp, http }
}

fn query(modules: &[(&str, &str)]) -> Vec<u8> {
    Query {
        compact: false,
        modules: modules
            .iter()
            .map(|(id, v)| QueryModule {
                id: Cow::Owned((*id).into()),
                version: Some(Version::parse(v).unwrap().into_owned()),
                files: vec![],
            })
            .collect(),
    }
    .to_vec()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Sends `body` padded to 342 bytes with a client cookie and returns the reply's bytes; after a
/// cookie challenge (answers that need a fallback go only to validated sources), sends it again
/// with the server cookie.
fn ask(server: SocketAddr, body: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut options = QueryOptions { client_cookie: Some(ClientCookie([7; 8])), pad_to: 342, ..Default::default() };
    for _ in 0..2 {
        let datagram = Frame::query(42, body, &options).to_vec().unwrap();
        socket.send_to(&datagram, server).unwrap();
        let mut buffer = [0u8; 2048];
        let (len, _) = socket.recv_from(&mut buffer).expect("a reply");
        match Datagram::decode(&buffer[..len]).expect("decodes").message {
            Message::CookieChallenge(challenge) => options.server_cookie = Some(challenge.server_cookie),
            _ => return buffer[..len].to_vec(),
        }
    }
    panic!("challenged again with the server's own cookie")
}

/// A document the server writes off its workers: fetched again, a bounded number of times, until
/// the file is there.
fn http_get_document(url: &str) -> Vec<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        for _ in 0..100 {
            let response = reqwest::get(url).await.expect("HTTP request");
            if response.status().is_success() {
                return response.bytes().await.unwrap().to_vec();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{url} never appeared")
    })
}

fn http_get(url: &str) -> Vec<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let response = reqwest::get(url).await.expect("HTTP request");
        assert!(response.status().is_success(), "{url}: {}", response.status());
        response.bytes().await.unwrap().to_vec()
    })
}

/// The verified answer to `body`, following a fallback over HTTP when there is one.
fn answer(server: SocketAddr, keys: &KeyRing, body: &[u8]) -> Response<'static> {
    let reply = ask(server, body);
    let datagram = Datagram::decode(&reply).expect("decodes");
    let expect = Expectation { keys, query: Sha256Digest::of(body), nonce: None, now: now() };
    let bytes: Vec<u8> = match &datagram.message {
        Message::Response(r) => r.verify(&expect).expect("verifies").to_vec(),
        Message::Fallback(f) => {
            let pointer = f.verify(&expect).expect("verifies");
            let document = http_get_document(&pointer.mirrors[0]);
            pointer.open_document(&document, now()).expect("checks out");
            document
        }
        other => panic!("unexpected reply {other:?}"),
    };
    Response::decode(Box::leak(bytes.into_boxed_slice())).unwrap()
}

fn latest(response: &Response<'_>) -> String {
    response.modules[0].latest.as_ref().map(|v| v.to_string()).unwrap_or_default()
}

fn metric(server: &Server, name: &str) -> u64 {
    let text = String::from_utf8(http_get(&format!("http://{}/metrics", server.http))).unwrap();
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

#[test]
fn the_binary_serves_reloads_and_stops_cleanly() {
    let root = tempfile::tempdir().unwrap();
    let (catalog, key, keys) = setup(root.path());
    let secret = root.path().join("cookie.secret");
    run(&["cookie-secret", "--out", secret.to_str().unwrap()]);
    let mut server =
        serve(&catalog, &key, &["--public-url", "http://{http}/", "--cookie-secret", secret.to_str().unwrap()]);

    let app = answer(server.udp, &keys, &query(&[("app", "1.0")]));
    assert_eq!((app.modules[0].status, latest(&app)), (Status::Update, "1.1".into()));
    let UpgradeInfo::Files(files) = &app.modules[0].upgrade else { panic!("a file list") };
    assert_eq!(files.len(), 1, "only bin/app changed");
    let FileAction::Replace(payload) = &files[0].action else { panic!("replace") };
    let content = http_get(&app.resolve_url(&payload.url));
    assert_eq!((content.as_slice(), Sha256Digest::of(&content)), (&b"app 1.1"[..], payload.sha256));

    let bulk = answer(server.udp, &keys, &query(&[("bulk", "1")]));
    assert!(
        matches!(&bulk.modules[0].upgrade, UpgradeInfo::Files(f) if f.len() == 40),
        "the fallback document has it all"
    );

    // A live publish is picked up by itself (the folder is watched), without a restart.
    publish(
        &catalog,
        "app",
        "1.2",
        &release(root.path(), "app-1.2", &[("bin/app", "app 1.2".into()), ("README", "read me".into())]),
    );
    let mut picked_up = false;
    for _ in 0..200 {
        if latest(&answer(server.udp, &keys, &query(&[("app", "1.0")]))) == "1.2" {
            picked_up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(picked_up, "the new release was never served");

    // SIGHUP reloads too.
    let before = metric(&server, "upgram_catalog_reloads_total{outcome=\"ok\"}");
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let mut reloaded = false;
    for _ in 0..200 {
        if metric(&server, "upgram_catalog_reloads_total{outcome=\"ok\"}") > before {
            reloaded = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(reloaded, "SIGHUP did not reload");

    // SIGTERM: a clean exit.
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "serve exits 0 on SIGTERM, got {status}");
}

#[test]
fn a_static_web_server_serves_the_published_tree_and_the_documents() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 is not installed: the static server test cannot run");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (catalog, key, keys) = setup(root.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut web = Command::new("python3")
        .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory", catalog.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    let public = format!("http://127.0.0.1:{port}/");
    // Documents are written into the catalog folder, which the static server publishes.
    let server = serve(&catalog, &key, &["--public-url", &public, "--docs-dir", catalog.to_str().unwrap()]);
    let mut ready = false;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ready, "the static server did not start");
    let bulk = answer(server.udp, &keys, &query(&[("bulk", "1")]));
    let UpgradeInfo::Files(files) = &bulk.modules[0].upgrade else { panic!("a file list") };
    for file in files {
        let FileAction::Replace(payload) = &file.action else { panic!("replace") };
        let url = bulk.resolve_url(&payload.url);
        assert!(url.starts_with(&public), "{url} is on the static server");
        assert_eq!(Sha256Digest::of(&http_get(&url)), payload.sha256);
    }
    let _ = web.kill();
    let _ = web.wait();
    drop(server);
}

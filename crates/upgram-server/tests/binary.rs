//! The real `upgram-server` binary (S1-S4, S7): releases published with `publish`, then
//! `serve` as a child process answering over UDP and HTTP, picking up a live publish by itself
//! and a SIGHUP, stopping cleanly on SIGTERM; and the published tree, fallback documents
//! included, served by a plain static web server (`python3 -m http.server`). And the binary as
//! an operator meets it: a second server on a taken port, concurrent publishes, bad
//! `--public-url` values, logs, `/healthz`, `/metrics`, caching headers and the readiness
//! notification systemd waits for.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read};
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
    serve_with(catalog, key, extra, |_| {})
}

/// `serve` on ports the system picks (unless `extra` says otherwise), with `adjust` applied to
/// the command (environment, standard error); returns once the server printed its addresses.
fn serve_with(catalog: &Path, key: &Path, extra: &[&str], adjust: impl FnOnce(&mut Command)) -> Server {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--catalog", catalog.to_str().unwrap(), "--key", key.to_str().unwrap()])
        .args(["--udp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    adjust(&mut command);
    let mut child = command.spawn().expect("serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("the address line");
    let mut parts = line.split_whitespace();
    let udp = parts.next().unwrap().trim_start_matches("udp=").parse().unwrap();
    let http = parts.next().unwrap().trim_start_matches("http=").parse().unwrap();
    Server { child, udp, http }
}

fn query(modules: &[(&str, &str)]) -> Vec<u8> {
    Query::new(
        modules
            .iter()
            .map(|(id, v)| QueryModule {
                id: Cow::Owned((*id).into()),
                version: Some(Version::parse(v).unwrap().into_owned()),
                files: vec![],
            })
            .collect(),
    )
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

/// Waits, a bounded time, for a process that should stop by itself, and returns its status and
/// what is left on its standard error; kills it if it does not stop.
fn exits_within(mut child: Child, seconds: u64) -> (std::process::ExitStatus, String) {
    for _ in 0..seconds * 20 {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                pipe.read_to_string(&mut stderr).unwrap();
            }
            return (status, stderr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("still running after {seconds} s");
}

/// `serve` with `args` after the catalog and key, expected to refuse to start: its status and
/// standard error.
fn serve_refused(catalog: &Path, key: &Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    let child = Command::new(BIN)
        .args(["serve", "--catalog", catalog.to_str().unwrap(), "--key", key.to_str().unwrap()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve runs");
    exits_within(child, 30)
}

/// Sends a query from a fresh socket and returns whether a reply came back.
fn replied(server: SocketAddr, body: &[u8]) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let options = QueryOptions { pad_to: 342, ..Default::default() };
    socket.send_to(&Frame::query(1, body, &options).to_vec().unwrap(), server).unwrap();
    socket.recv_from(&mut [0u8; 2048]).is_ok()
}

#[test]
fn a_second_server_on_a_taken_udp_port_refuses_to_start_while_one_servers_workers_share_it() {
    let root = tempfile::tempdir().unwrap();
    let (catalog, key, _) = setup(root.path());
    let first = serve(&catalog, &key, &["--public-url", "http://{http}/", "--workers", "3"]);

    let other_key = root.path().join("other.key");
    run(&["keygen", "--out", other_key.to_str().unwrap()]);
    let udp = first.udp.to_string();
    let (status, stderr) = serve_refused(
        &catalog,
        &other_key,
        &["--udp", &udp, "--http", "127.0.0.1:0", "--public-url", "http://{http}/"],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("UDP address {udp} is already in use")), "{stderr}");
    assert!(stderr.contains("--udp"), "the message names the option: {stderr}");

    // The first server's three workers got every query, from many sources (the kernel spreads
    // them over the workers by source port).
    let body = query(&[("app", "1.0")]);
    let answered = (0..40).filter(|_| replied(first.udp, &body)).count();
    assert_eq!(answered, 40);
    assert_eq!(metric(&first, "upgram_datagrams_received_total"), 40, "every query reached the first server");
}

#[test]
fn a_taken_http_port_is_refused_with_a_clear_message() {
    let root = tempfile::tempdir().unwrap();
    let (catalog, key, _) = setup(root.path());
    let first = serve(&catalog, &key, &["--public-url", "http://{http}/"]);
    let http = first.http.to_string();
    let (status, stderr) =
        serve_refused(&catalog, &key, &["--udp", "127.0.0.1:0", "--http", &http, "--public-url", "http://{http}/"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("HTTP address {http} is already in use")), "{stderr}");
    assert!(stderr.contains("--http"), "{stderr}");
}

#[test]
fn concurrent_publishes_of_one_module_lose_no_release() {
    let root = tempfile::tempdir().unwrap();
    // Enough files that two publishes overlap in time.
    let files = |version: &str| -> Vec<(String, String)> {
        (0..150).map(|i| (format!("data/file-{i:03}"), format!("file {i} of {version}"))).collect()
    };
    for trial in 0..6 {
        let catalog = root.path().join(format!("catalog-{trial}"));
        let base = files("1.0");
        let base: Vec<(&str, String)> = base.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
        publish(&catalog, "app", "1.0", &release(root.path(), &format!("t{trial}-1.0"), &base));
        let children: Vec<(String, Child)> = ["1.1", "1.2"]
            .into_iter()
            .map(|version| {
                let content = files(version);
                let content: Vec<(&str, String)> = content.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
                let folder = release(root.path(), &format!("t{trial}-{version}"), &content);
                let child = Command::new(BIN)
                    .args(["publish", "--catalog", catalog.to_str().unwrap(), "--module", "app"])
                    .args(["--version", version, "--from", folder.to_str().unwrap()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (version.to_owned(), child)
            })
            .collect();
        let outcomes: Vec<(String, bool, String)> = children
            .into_iter()
            .map(|(version, child)| {
                let output = child.wait_with_output().unwrap();
                (version, output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
            })
            .collect();
        let loaded = upgram_server::catalog::load(&catalog).expect("the catalog loads");
        let versions: Vec<String> = loaded.modules["app"].releases.iter().map(|r| r.version.to_string()).collect();
        for (version, succeeded, stderr) in &outcomes {
            if *succeeded {
                assert!(
                    versions.contains(version),
                    "trial {trial}: {version} published (exit 0) but lost: {versions:?}"
                );
            } else {
                // 1.2 went first; 1.1 then waited and was refused as older, saying so.
                assert_eq!(version, "1.1", "trial {trial}: {stderr}");
                assert!(stderr.contains("is not newer than the latest release 1.2"), "trial {trial}: {stderr}");
            }
        }
        assert!(versions.contains(&"1.2".to_owned()), "trial {trial}: {versions:?} {outcomes:?}");
    }
}

#[test]
fn a_publish_waits_for_the_one_holding_the_catalog_and_says_so() {
    let root = tempfile::tempdir().unwrap();
    let catalog = root.path().join("catalog");
    publish(&catalog, "app", "1.0", &release(root.path(), "1.0", &[("a", "1.0".into())]));
    let held = std::fs::OpenOptions::new()
        .write(true)
        .open(catalog.join(upgram_server::publish::LOCK_FILE))
        .expect("publish made its lock file");
    held.lock().unwrap();
    let folder = release(root.path(), "1.1", &[("a", "1.1".into())]);
    let mut child = Command::new(BIN)
        .args(["publish", "--catalog", catalog.to_str().unwrap(), "--module", "app", "--version", "1.1"])
        .args(["--from", folder.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("another publish to this catalog is running; waiting for it to finish"), "{line}");
    assert!(child.try_wait().unwrap().is_none(), "it waits");
    let before = upgram_server::catalog::load(&catalog).unwrap();
    assert_eq!(before.modules["app"].releases.len(), 1, "nothing written while waiting");
    held.unlock().unwrap();
    child.stderr = Some(stderr.into_inner());
    let (status, rest) = exits_within(child, 30);
    assert!(status.success(), "{rest}");
    assert_eq!(upgram_server::catalog::load(&catalog).unwrap().modules["app"].releases.len(), 2);
}

#[test]
fn hidden_module_ids_are_refused_at_publish() {
    let root = tempfile::tempdir().unwrap();
    let catalog = root.path().join("catalog");
    let folder = release(root.path(), "r", &[("a", "a".into())]);
    for id in [".hidden", "..", "."] {
        let output = Command::new(BIN)
            .args(["publish", "--catalog", catalog.to_str().unwrap(), "--module", id, "--version", "1"])
            .args(["--from", folder.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{id}: {stderr}");
        assert!(stderr.contains("may not start with `.`"), "{id}: {stderr}");
    }
    let modules = catalog.join("modules");
    let written: Vec<_> =
        std::fs::read_dir(&modules).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(written.is_empty(), "nothing written: {written:?}");
}

#[test]
fn a_public_url_clients_cannot_use_is_refused_at_start() {
    let root = tempfile::tempdir().unwrap();
    let (catalog, key, _) = setup(root.path());
    let cases: [(&str, &str); 5] = [
        ("updates.example.com", "127.0.0.1:0"),
        ("not a url", "127.0.0.1:0"),
        ("ftp://updates.example.com/", "127.0.0.1:0"),
        ("http://{http}/", "0.0.0.0:0"),
        ("http://[::]:7954/", "127.0.0.1:0"),
    ];
    for (url, http) in cases {
        let (status, stderr) =
            serve_refused(&catalog, &key, &["--udp", "127.0.0.1:0", "--http", http, "--public-url", url]);
        assert_eq!(status.code(), Some(1), "{url}: {stderr}");
        assert!(stderr.contains(&format!("--public-url {url:?}")), "{url}: {stderr}");
        assert!(stderr.contains("public host"), "{url}: says how to set a public host: {stderr}");
    }
    // A URL with a public host, and `{http}` on a reachable address, start.
    let server = serve(&catalog, &key, &["--public-url", "https://updates.example.com/base"]);
    assert!(replied(server.udp, &query(&[("app", "1.0")])));
}

/// GET `url`: status, `Cache-Control` and body.
fn http_fetch(url: &str) -> (u16, Option<String>, String) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let response = reqwest::get(url).await.expect("HTTP request");
        let status = response.status().as_u16();
        let cache = response.headers().get("cache-control").map(|v| v.to_str().unwrap().to_owned());
        (status, cache, response.text().await.unwrap())
    })
}

/// Stops the server with SIGTERM and returns what it wrote on standard error.
fn stop_and_read_stderr(mut server: Server) -> String {
    let mut stderr = server.child.stderr.take().expect("stderr piped");
    assert!(Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap().success());
    let mut text = String::new();
    stderr.read_to_string(&mut text).unwrap();
    assert!(server.child.wait().unwrap().success());
    text
}

/// A blob of the catalog's store, by name.
fn some_blob(catalog: &Path) -> String {
    let store = catalog.join("store");
    let mut names: Vec<String> = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    names.sort();
    names.into_iter().next().expect("a blob")
}

#[test]
fn logs_have_no_colour_codes_off_a_terminal_and_a_debug_event_per_query_and_request() {
    let root = tempfile::tempdir().unwrap();
    let (catalog, key, _) = setup(root.path());
    for json in [false, true] {
        let format = if json { "json" } else { "text" };
        let server = serve_with(&catalog, &key, &["--public-url", "http://{http}/", "--log-format", format], |c| {
            c.env("RUST_LOG", "upgram_server=debug").env_remove("NO_COLOR").stderr(Stdio::piped());
        });
        assert!(replied(server.udp, &query(&[("app", "1.0")])));
        let (status, _, _) = http_fetch(&format!("http://{}/healthz", server.http));
        assert_eq!(status, 200);
        let text = stop_and_read_stderr(server);
        assert!(!text.contains('\u{1b}'), "{format}: colour codes on a pipe: {text}");
        if json {
            let events: Vec<serde_json::Value> = text
                .lines()
                .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
                .collect();
            let message = |e: &serde_json::Value| e["fields"]["message"].as_str().unwrap_or_default().to_owned();
            let query = events.iter().find(|e| message(e) == "query").expect("a query event");
            assert_eq!(query["level"], "DEBUG");
            assert!(query["fields"]["from"].as_str().unwrap().starts_with("127.0.0.1:"), "{query}");
            let request = events.iter().find(|e| message(e) == "http request").expect("an HTTP event");
            assert_eq!(
                (request["fields"]["uri"].as_str(), request["fields"]["status"].as_u64()),
                (Some("/healthz"), Some(200))
            );
        } else {
            assert!(
                text.lines().any(|l| l.contains("DEBUG") && l.contains("query") && l.contains("from=127.0.0.1:")),
                "{text}"
            );
            assert!(
                text.lines().any(|l| l.contains("DEBUG") && l.contains("http request") && l.contains("uri=/healthz")),
                "{text}"
            );
        }
    }
}

#[test]
fn healthz_turns_503_while_a_failed_reload_keeps_the_old_catalog() {
    let root = tempfile::tempdir().unwrap();
    let (catalog, key, keys) = setup(root.path());
    let server = serve(&catalog, &key, &["--public-url", "http://{http}/"]);
    let health = format!("http://{}/healthz", server.http);
    assert_eq!(http_fetch(&health).0, 200);

    let broken = catalog.join("modules").join("broken.toml");
    std::fs::write(&broken, "this is not a module file").unwrap();
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let mut failed = None;
    for _ in 0..200 {
        let (status, _, body) = http_fetch(&health);
        if status == 503 {
            failed = Some(body);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = failed.expect("/healthz never reported the failed reload");
    assert!(body.contains("broken.toml"), "says why: {body}");
    assert_eq!(latest(&answer(server.udp, &keys, &query(&[("app", "1.0")]))), "1.1", "the old catalog is served");

    std::fs::remove_file(&broken).unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let mut healthy = false;
    for _ in 0..200 {
        if http_fetch(&health).0 == 200 {
            healthy = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(healthy, "a good reload makes it healthy again");
}

#[test]
fn metrics_count_once_and_store_files_are_cached_for_good() {
    let root = tempfile::tempdir().unwrap();
    let (catalog, key, _) = setup(root.path());
    let server = serve(&catalog, &key, &["--public-url", "http://{http}/"]);
    let blob = some_blob(&catalog);
    let (status, cache, _) = http_fetch(&format!("http://{}/store/{blob}", server.http));
    assert_eq!((status, cache.as_deref()), (200, Some("public, max-age=31536000, immutable")));
    let (status, cache, _) = http_fetch(&format!("http://{}/store/{}", server.http, "0".repeat(64)));
    assert_eq!(status, 404);
    assert_eq!(cache, None, "a missing file is not cached for a year");

    let text = String::from_utf8(http_get(&format!("http://{}/metrics", server.http))).unwrap();
    for gone in ["upgram_fallbacks_total", "upgram_cookie_challenges_total"] {
        assert!(!text.contains(gone), "{gone} repeats upgram_replies_total: {text}");
    }
    let version = env!("CARGO_PKG_VERSION");
    for wanted in [
        format!("upgram_build_info{{version=\"{version}\"}} 1"),
        "upgram_catalog_modules 2".into(),
        "upgram_catalog_releases 4".into(),
        "upgram_http_downloads_total{status=\"200\"} 1".into(),
        "upgram_http_downloads_total{status=\"404\"} 1".into(),
    ] {
        assert!(text.contains(&wanted), "{wanted} missing: {text}");
    }
}

#[cfg(unix)]
#[test]
fn systemd_hears_ready_once_the_sockets_answer_then_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let root = tempfile::tempdir().unwrap();
    let (catalog, key, _) = setup(root.path());
    let path = root.path().join("notify.sock");
    let notify = UnixDatagram::bind(&path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let receive = || {
        let mut buffer = [0u8; 4096];
        let len = notify.recv(&mut buffer).expect("a notification");
        String::from_utf8(buffer[..len].to_vec()).unwrap()
    };
    let server = serve_with(&catalog, &key, &["--public-url", "http://{http}/"], |c| {
        c.env("NOTIFY_SOCKET", &path);
    });
    let ready = receive();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(ready.contains("STATUS=serving 2 modules"), "{ready}");
    assert!(replied(server.udp, &query(&[("app", "1.0")])), "ready means answering");

    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let reloading = receive();
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading}");
    assert!(reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")), "{reloading}");
    assert!(receive().lines().any(|l| l == "READY=1"), "ready again after the reload");

    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(receive().lines().any(|l| l == "STOPPING=1"));
    drop(server);
}

#[test]
fn the_systemd_unit_waits_for_readiness_reloads_with_sighup_and_passes_real_options() {
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/systemd/upgram-server.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let lines: Vec<&str> = unit.lines().collect();
    for wanted in ["Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "DynamicUser=yes", "ProtectSystem=strict"] {
        assert!(lines.contains(&wanted), "{wanted} missing");
    }
    // ExecStart, its continuation lines joined: every option it passes is one `serve` takes.
    let exec = unit.split("ExecStart=").nth(1).unwrap().split("\n\n").next().unwrap().replace("\\\n", " ");
    let exec = exec.lines().next().unwrap();
    let help = run(&["serve", "--help"]);
    let options: Vec<&str> = exec.split_whitespace().filter(|w| w.starts_with("--")).collect();
    assert!(options.len() >= 5, "{exec}");
    for option in options {
        assert!(help.contains(&format!("{option} <")), "{option} is not an option of serve");
    }
    // systemd itself parses it, with the path of the binary built here.
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("SKIPPED: systemd-analyze is not installed, the unit file was not checked by systemd");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("upgram-server.service");
    std::fs::write(&local, unit.replace("/usr/local/bin/upgram-server", BIN)).unwrap();
    let output = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&local).output().unwrap();
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && complaints.trim().is_empty(), "systemd-analyze verify: {complaints}");
}

/// The `.xml` files under `docs/doc/`, sorted.
fn documents_in(docs: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(docs.join("doc"))
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|n| n.ends_with(".xml"));
    names.sort();
    names
}

#[test]
fn documents_a_killed_server_left_are_removed_by_the_next_run_once_their_time_is_over() {
    let root = tempfile::tempdir().unwrap();
    let (catalog, key, keys) = setup(root.path());
    let docs = root.path().join("docs");
    let docs_arg = docs.to_str().unwrap().to_owned();
    let server = serve(&catalog, &key, &["--docs-dir", &docs_arg, "--public-url", "http://{http}/"]);
    // Two answers too large for a datagram: two documents written.
    for version in ["1", "0.5"] {
        answer(server.udp, &keys, &query(&[("bulk", version)]));
    }
    let mut written = Vec::new();
    for _ in 0..300 {
        written = documents_in(&docs);
        if written.len() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(written.len(), 2, "two documents written: {written:?}");
    // Killed (SIGKILL): nothing removes its documents.
    drop(server);
    assert_eq!(documents_in(&docs), written, "the killed server's documents are still there");
    // One of them is older than any answer's validity plus the grace period; a file that is
    // not a document is someone else's.
    let old = std::time::SystemTime::now() - Duration::from_secs(upgram_server::documents::LEFTOVER_MAX_AGE_SECS + 60);
    std::fs::File::options().write(true).open(docs.join("doc").join(&written[0])).unwrap().set_modified(old).unwrap();
    std::fs::write(docs.join("doc").join("notes.txt"), "not a document").unwrap();

    let server = serve(&catalog, &key, &["--docs-dir", &docs_arg, "--public-url", "http://{http}/"]);
    let mut left = Vec::new();
    for _ in 0..300 {
        left = documents_in(&docs);
        if left.len() < 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(left, written[1..], "the old one is gone, the young one kept until its time");
    assert!(docs.join("doc").join("notes.txt").exists(), "other files are left alone");
    drop(server);
}

#[test]
fn a_sigterm_or_sighup_sent_as_soon_as_the_address_is_printed_finds_its_handler() {
    // The handlers are registered before the address line: a supervisor that signals the
    // server the moment it says it listens must not hit the default action (death by signal).
    // The window this guards was microseconds wide, so the check runs many times.
    let root = tempfile::tempdir().unwrap();
    let (catalog, key, _) = setup(root.path());
    for round in 0..20 {
        let mut server = serve(&catalog, &key, &["--public-url", "http://{http}/"]);
        let pid = server.child.id().to_string();
        if round % 2 == 1 {
            assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
            assert!(replied(server.udp, &query(&[("app", "1.0")])), "round {round}: alive after SIGHUP");
        }
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = server.child.wait().unwrap();
        assert!(status.success(), "round {round}: {status}");
    }
}

//! The reference server in-process, for the client's hostile-network tests: catalogs built in
//! code with their blobs written into a temporary store (as in the server's own tests), the UDP
//! and HTTP sides on 127.0.0.1, and the pieces every test needs (keys, installations, a
//! runtime). [`proxy`] is the fault-injecting UDP proxy that sits between client and server.
#![allow(dead_code)]

pub mod binaries;
pub mod mirror;
pub mod mounts;
pub mod proxy;
pub mod rollout;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use upgram_client::Client;
use upgram_client::state::{InstalledModule, InstalledState};
use upgram_core::cookie::CookieSecret;
use upgram_core::sign::ReplySigner;
use upgram_core::version::Version;
use upgram_server::catalog::{Blob, Catalog, Module, Release, ReleaseFile};
use upgram_server::server::{Config, CookieSecrets, Shared};

/// Seed of the server's signing key.
pub const SEED: [u8; 32] = [9; 32];

/// The cookie secret every test server uses.
pub const COOKIE_SECRET: [u8; 32] = [0x42; 32];

/// Modules of the catalog that are at their only release (answered `current`).
pub const TOOLS: usize = 40;

/// The public key clients pin.
pub fn public_key() -> [u8; 32] {
    ReplySigner::from_seed(&SEED).verifying_key().to_bytes()
}

/// A version from text.
pub fn v(text: &str) -> Version<'static> {
    text.parse().expect("version")
}

/// A release with `files` and nothing else.
pub fn release(version: &str, files: Vec<ReleaseFile>) -> Release {
    Release::new(v(version), files)
}

/// A module with `releases`.
pub fn module(id: &str, releases: Vec<Release>) -> Module {
    Module::new(id, releases)
}

/// Writes `content` into the store of the catalog at `dir` and returns its blob.
pub fn store(dir: &Path, content: &[u8]) -> Blob {
    upgram_server::catalog::store_blob(dir, content).expect("blob stored")
}

/// core 1.0 -> 1.1 (two small files); big 1 -> 2 (forty files: its answer needs a fallback);
/// `tool-00` .. `tool-39` at 1.0 only (answered `current`).
pub fn catalog(dir: &Path) -> Catalog {
    let mut catalog = Catalog::default();
    let file = |id: &str, version: &str| ReleaseFile {
        id: id.into(),
        version: v(version),
        blob: store(dir, format!("{id} at {version}").as_bytes()),
        executable: false,
    };
    let core = module(
        "core",
        vec![
            release("1.0", vec![file("bin/app", "1.0"), file("share/readme.txt", "1.0")]),
            release("1.1", vec![file("bin/app", "1.1"), file("share/readme.txt", "1.0")]),
        ],
    );
    let many = |version: &str| (0..40).map(|i| file(&format!("data/part-{i:02}.bin"), version)).collect::<Vec<_>>();
    let big = module("big", vec![release("1", many("1")), release("2", many("2"))]);
    let tools = (0..TOOLS).map(|i| module(&format!("tool-{i:02}"), vec![release("1.0", vec![file("tool", "1.0")])]));
    for m in [core, big].into_iter().chain(tools) {
        catalog.modules.insert(m.id.clone(), m);
    }
    catalog
}

/// An installation of `modules` (id, version), no files.
pub fn installed(modules: &[(&str, &str)]) -> InstalledState {
    let mut state = InstalledState::default();
    for (id, version) in modules {
        let module = InstalledModule {
            version: (*version).into(),
            files: Default::default(),
            frequent: vec![],
            ..Default::default()
        };
        state.modules.insert((*id).into(), module);
    }
    state
}

/// core 1.0, big 1 (fallback), every tool at 1.0 and a module the server does not know: a query
/// that splits over two datagrams and gets every status and both kinds of reply.
pub fn large_installation() -> InstalledState {
    let tools: Vec<String> = (0..TOOLS).map(|i| format!("tool-{i:02}")).collect();
    let mut modules: Vec<(&str, &str)> = vec![("core", "1.0"), ("big", "1"), ("ghost", "3.0")];
    modules.extend(tools.iter().map(|t| (t.as_str(), "1.0")));
    installed(&modules)
}

/// The reference server on 127.0.0.1, UDP and HTTP, on a runtime of its own; stopped when
/// dropped.
pub struct TestServer {
    /// Its UDP address.
    pub udp: SocketAddr,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// Its state (metrics, documents).
    pub shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    runtime: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        // Allowed anywhere, also inside the client's runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Starts a server on [`catalog`], with `config` adjusted by the test (called with the default
/// settings: `public_url` at its own HTTP side and no practical rate limit, since every query
/// through a proxy comes from one address). Call it outside any async runtime.
pub fn start_server(config: impl FnOnce(&mut Config)) -> TestServer {
    start_server_on(catalog, config)
}

/// [`start_server`] on the catalog `make` builds, its blobs stored in the folder it is given.
pub fn start_server_on(make: impl FnOnce(&Path) -> Catalog, config: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().expect("temporary folder");
    let catalog = make(dir.path());
    start_server_in(dir, catalog, config)
}

/// [`start_server`] on `catalog`, whose payloads are in the store of the catalog folder `dir`
/// (kept as long as the server).
pub fn start_server_in(dir: tempfile::TempDir, catalog: Catalog, config: impl FnOnce(&mut Config)) -> TestServer {
    start_server_reporting(dir, catalog, config, None)
}

/// [`start_server_in`], handing the install reports it accepts to `reports` (by default they
/// are acknowledged and discarded).
pub fn start_server_reporting(
    dir: tempfile::TempDir,
    catalog: Catalog,
    config: impl FnOnce(&mut Config),
    reports: Option<Arc<dyn upgram_server::intake::ReportSink>>,
) -> TestServer {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("server runtime");
    let (stop, stopped) = watch::channel(false);
    let http_listener =
        runtime.block_on(upgram_server::http::bind("127.0.0.1:0".parse().expect("address"))).expect("bind");
    let http = http_listener.local_addr().expect("HTTP address");
    let mut settings = Config {
        public_url: format!("http://{http}/"),
        rate_per_source: 1e9,
        burst_per_source: 1e9,
        ..Config::default()
    };
    config(&mut settings);
    let secrets = CookieSecrets { current: CookieSecret(COOKIE_SECRET), previous: None };
    let mut shared = Shared::new(catalog, ReplySigner::from_seed(&SEED), secrets, settings);
    if let Some(sink) = reports {
        shared = shared.with_report_sink(sink);
    }
    let shared = Arc::new(shared);
    let sockets = {
        let _guard = runtime.enter();
        upgram_server::udp::bind("127.0.0.1:0".parse().expect("address"), 1).expect("bind UDP")
    };
    let udp = sockets[0].local_addr().expect("UDP address");
    let router = upgram_server::http::router(shared.clone(), dir.path());
    runtime.spawn(upgram_server::http::serve(http_listener, router, stopped.clone()));
    {
        let _guard = runtime.enter();
        upgram_server::udp::serve(shared.clone(), sockets, stopped);
    }
    TestServer { udp, http, shared, stop, runtime: Some(runtime), _dir: dir }
}

/// A runtime for the client side of a test (client, proxy, hostile HTTP servers).
pub fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("client runtime")
}

/// A client of `servers` with the server's key pinned, `deadline` and `first_timeout`.
pub fn client(servers: &[SocketAddr], deadline: Duration, first_timeout: Duration) -> Client {
    let mut builder = Client::builder().public_key(public_key()).deadline(deadline).first_timeout(first_timeout);
    for server in servers {
        builder = builder.server(*server);
    }
    builder.build().expect("client")
}

/// A UDP address where nothing listens (bound once by us, then released).
pub fn dead_udp_address() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("address")
}

/// A TCP address where nothing listens (bound once by us, then released).
pub fn dead_tcp_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

//! `upgram-server serve`: loads the catalog, the signing key and the cookie
//! secret, opens the install report store and starts its writer, serves UDP on every core and HTTP beside it, reloads the catalog on SIGHUP and when
//! its files change, drops expired fallback documents, and stops gracefully on SIGTERM or
//! Ctrl-C.
//!
//! It refuses to start on an address another process holds, and with a `--public-url` that
//! clients could not use. Under systemd (`Type=notify`) it reports itself ready once its
//! sockets are bound and the catalog loaded, and reports reloads and the stop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use thiserror::Error;
use tokio::sync::watch;
use upgram_core::cookie::CookieSecret;

use crate::catalog::{CatalogError, load};
use crate::intake::{DiscardReports, ReportSink};
use crate::keys::{self, KeyError};
use crate::reports::{ReportWriter, ReportsConfig, ReportsError, WriterOptions};
use crate::server::{Config, CookieSecrets, Shared};
use crate::{http, udp};

/// In `--public-url`, stands for the HTTP address actually bound (useful with port 0).
pub const HTTP_PLACEHOLDER: &str = "{http}";

/// How often the catalog folder is checked for changes.
pub const RELOAD_POLL: Duration = Duration::from_secs(1);

/// What `serve` needs.
#[derive(Clone)]
pub struct ServeOptions {
    /// The catalog folder.
    pub catalog: PathBuf,
    /// The signing key file.
    pub key: PathBuf,
    /// The cookie secret file, shared by every instance; a random secret if absent (then
    /// cookies work with this instance only).
    pub cookie_secret: Option<PathBuf>,
    /// The previous cookie secret, still accepted during a rotation.
    pub previous_cookie_secret: Option<PathBuf>,
    /// UDP address.
    pub udp: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// UDP sockets and worker threads (default: one per core).
    pub workers: usize,
    /// The rest of the settings. Its `public_url` is `--public-url` as given, checked and
    /// completed by [`run`] (see [`public_url`]).
    pub config: Config,
    /// Where install reports are stored (default: SQLite beside the catalog's files).
    pub reports: ReportsConfig,
    /// Where accepted install reports go instead of the store `reports` names (an embedder's
    /// own sink); `None`: to that store's writer, or, with reports off, nowhere: the server
    /// acknowledges them and keeps nothing ([`DiscardReports`]).
    pub report_sink: Option<Arc<dyn ReportSink>>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("catalog", &self.catalog)
            .field("key", &self.key)
            .field("cookie_secret", &self.cookie_secret)
            .field("previous_cookie_secret", &self.previous_cookie_secret)
            .field("udp", &self.udp)
            .field("http", &self.http)
            .field("workers", &self.workers)
            .field("config", &self.config)
            .field("reports", &self.reports)
            .field("report_sink", &self.report_sink.as_ref().map(|_| "ReportSink"))
            .finish()
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The catalog does not load.
    #[error("catalog: {0}")]
    Catalog(#[from] CatalogError),
    /// The key or cookie secret does not load.
    #[error("{0}")]
    Key(#[from] KeyError),
    /// `--public-url` is not a URL clients can use.
    #[error(
        "--public-url {given:?}: {problem}; give the URL at which clients reach this server's HTTP side (or a copy of its store/ and doc/), with its scheme and public host, e.g. --public-url https://updates.example.com/ or --public-url http://<public host>:<port>/"
    )]
    PublicUrl {
        /// The value given.
        given: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The install report store could not be opened.
    #[error("--reports {target}: {source}")]
    Reports {
        /// The store named.
        target: String,
        /// What went wrong.
        #[source]
        source: ReportsError,
    },
    /// Another process holds the address.
    #[error(
        "{what} address {addr} is already in use (another upgram-server?): stop that one, or choose another address with {flag}"
    )]
    AddressInUse {
        /// `UDP` or `HTTP`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The option that sets it.
        flag: &'static str,
    },
    /// A socket could not be bound, or the runtime not started.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Io { what, source }
}

/// The error for a failed bind of `addr`, saying so plainly when the address is taken.
fn bind_error(what: &'static str, flag: &'static str, addr: SocketAddr) -> impl FnOnce(std::io::Error) -> ServeError {
    move |source| match source.kind() {
        std::io::ErrorKind::AddrInUse => ServeError::AddressInUse { what, addr, flag },
        _ => ServeError::Io { what: format!("binding {what} {addr} ({flag})"), source },
    }
}

/// The base URL handed to clients: `given` (`--public-url`) with [`HTTP_PLACEHOLDER`] replaced
/// by `http`, the HTTP address bound, and ending in `/`. Refused unless it is an absolute
/// `http` or `https` URL, without query or fragment, whose host clients can connect to (not
/// `0.0.0.0` or `::`, which `{http}` gives with `--http 0.0.0.0:PORT`).
pub fn public_url(given: &str, http: SocketAddr) -> Result<String, ServeError> {
    let bad = |problem: String| ServeError::PublicUrl { given: given.to_owned(), problem };
    let text = given.replace(HTTP_PLACEHOLDER, &http.to_string());
    let url = url::Url::parse(&text).map_err(|e| bad(format!("not an absolute URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!("clients fetch over http or https, not {}", url.scheme())));
    }
    let unspecified = match url.host() {
        None => return Err(bad("no host".into())),
        Some(url::Host::Ipv4(ip)) => ip.is_unspecified(),
        Some(url::Host::Ipv6(ip)) => ip.is_unspecified(),
        Some(url::Host::Domain(_)) => false,
    };
    if unspecified {
        let via = if given.contains(HTTP_PLACEHOLDER) {
            format!("{HTTP_PLACEHOLDER} stands for --http {http}, ")
        } else {
            String::new()
        };
        return Err(bad(format!(
            "{via}an address that listens on every interface, which clients cannot connect to; name the server's public host instead"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("file names are appended to it, so it may have no query or fragment".into()));
    }
    let mut url = String::from(url);
    if !url.ends_with('/') {
        url.push('/');
    }
    Ok(url)
}

/// Tells systemd (`Type=notify`) about a change of state; nothing when not started by it.
fn notify(state: NotifyState<'_>) {
    #[cfg(unix)]
    {
        use sd_notify::NotifyState as Sd;
        let states = match state {
            NotifyState::Ready(status) => vec![Sd::Status(status), Sd::Ready],
            NotifyState::Reloading => std::iter::once(Sd::Reloading).chain(Sd::monotonic_usec_now().ok()).collect(),
            NotifyState::Stopping => vec![Sd::Stopping],
        };
        if let Err(e) = sd_notify::notify(&states) {
            tracing::warn!("cannot notify the service manager: {e}");
        }
    }
    #[cfg(not(unix))]
    let _ = state;
}

/// What the server tells systemd.
enum NotifyState<'a> {
    /// Serving, with a status line.
    Ready(&'a str),
    /// Reloading the catalog.
    Reloading,
    /// Shutting down.
    Stopping,
}

/// A summary of the catalog folder's files: names, sizes and modification times. Changes when
/// the publisher (or a person) replaces a module file.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let mut files: Vec<PathBuf> = vec![dir.join(crate::catalog::load::SETTINGS_FILE)];
    if let Ok(entries) = std::fs::read_dir(dir.join(crate::catalog::load::MODULES_DIR)) {
        files.extend(entries.filter_map(Result::ok).map(|e| e.path()));
    }
    let mut summary: Vec<_> = files
        .into_iter()
        .filter_map(|path| {
            let meta = std::fs::metadata(&path).ok()?;
            Some((path, meta.len(), meta.modified().ok()?))
        })
        .collect();
    summary.sort();
    summary
}

fn reload(shared: &Shared, dir: &Path) {
    match load(dir) {
        Ok(catalog) => {
            let modules = catalog.modules.len();
            shared.replace_catalog(catalog);
            tracing::info!(modules, "catalog reloaded");
        }
        Err(error) => {
            shared.reload_failed(&error);
            tracing::error!(
                "catalog reload failed, keeping the old one (/healthz answers 503 until a reload works): {error}"
            );
        }
    }
}

async fn watch_catalog(shared: Arc<Shared>, dir: PathBuf, mut stop: watch::Receiver<bool>, mut signals: Signals) {
    let mut last = fingerprint(&dir);
    let mut ticker = tokio::time::interval(RELOAD_POLL);
    #[cfg(unix)]
    let mut hangup = signals.hangup.take();
    #[cfg(not(unix))]
    let _ = &mut signals;
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = ticker.tick() => {
                shared.expire_documents(udp::unix_now());
                let now = fingerprint(&dir);
                if now != last {
                    last = now;
                    reload(&shared, &dir);
                }
            }
            _ = hup => {
                tracing::info!("SIGHUP: reloading the catalog");
                notify(NotifyState::Reloading);
                last = fingerprint(&dir);
                reload(&shared, &dir);
                notify(NotifyState::Ready(&status(&shared)));
            }
            _ = stop.changed() => return,
        }
    }
}

/// The signals the server handles, registered before it says it is listening: a SIGTERM or
/// SIGHUP sent as soon as the address line appears must find its handler, not the default
/// action (which ends the process).
#[derive(Default)]
struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Registers the handlers (inside the runtime).
    fn register() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                terminate: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
                hangup: signal(SignalKind::hangup()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self::default()
    }
}

/// Waits for SIGTERM or Ctrl-C.
async fn shutdown_signal(signals: &mut Signals) {
    #[cfg(unix)]
    {
        async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut signals.terminate) => {}
            _ = next(&mut signals.interrupt) => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = signals;
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn secrets(options: &ServeOptions) -> Result<CookieSecrets, ServeError> {
    let current = match &options.cookie_secret {
        Some(path) => keys::load_secret(path)?,
        None => {
            tracing::warn!("no --cookie-secret: cookies are valid at this instance only");
            let mut secret = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
            secret
        }
    };
    let previous = options.previous_cookie_secret.as_deref().map(keys::load_secret).transpose()?;
    Ok(CookieSecrets { current: CookieSecret(current), previous: previous.map(CookieSecret) })
}

/// The status line systemd shows.
fn status(shared: &Shared) -> String {
    let modules = shared.catalog().catalog.modules.len();
    match shared.reload_failure() {
        None => format!("serving {modules} modules"),
        // One line: the notification protocol separates fields by newlines.
        Some(error) => format!("serving {modules} modules; the last reload failed: {}", error.replace('\n', " ")),
    }
}

/// Runs the server until SIGTERM or Ctrl-C. Prints `udp=ADDR http=ADDR` on standard output
/// once both are listening, and then tells systemd it is ready (when started by it).
pub fn run(options: ServeOptions) -> Result<(), ServeError> {
    public_url(&options.config.public_url, options.http)?;
    let catalog = load(&options.catalog)?;
    let signer = keys::load(&options.key)?;
    let secrets = secrets(&options)?;
    let workers = options.workers.max(1);
    let writer = start_reports(&options)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(io_error("starting the runtime"))?;
    runtime.block_on(async move {
        tracing::info!(modules = catalog.modules.len(), key_id = %signer.key_id(), "catalog and key loaded");
        let sockets = udp::bind(options.udp, workers).map_err(bind_error("UDP", "--udp", options.udp))?;
        let udp_addr = sockets[0].local_addr().map_err(io_error("UDP address"))?;
        let listener = http::bind(options.http).await.map_err(bind_error("HTTP", "--http", options.http))?;
        let http_addr = listener.local_addr().map_err(io_error("HTTP address"))?;
        let mut config = options.config.clone();
        config.public_url = public_url(&config.public_url, http_addr)?;
        let sink: Arc<dyn ReportSink> = match (&options.report_sink, &writer) {
            (Some(sink), _) => sink.clone(),
            (None, Some(writer)) => writer.clone(),
            (None, None) => Arc::new(DiscardReports),
        };
        let shared = Arc::new(Shared::new(catalog, signer, secrets, config).with_report_sink(sink));
        if let Some(writer) = &writer {
            let _ = shared.reports.set(writer.clone());
        }
        let (stop, stopped) = watch::channel(false);
        let mut tasks = udp::serve(shared.clone(), sockets, stopped.clone());
        let router = http::router(shared.clone(), &options.catalog);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = http::serve(listener, router, stopped).await {
                tracing::error!("HTTP server: {e}");
            }
        }));
        let mut signals = Signals::register();
        let reload_signals = Signals {
            #[cfg(unix)]
            hangup: signals.hangup.take(),
            ..Signals::default()
        };
        tasks.push(tokio::spawn(watch_catalog(
            shared.clone(),
            options.catalog.clone(),
            stop.subscribe(),
            reload_signals,
        )));
        println!("udp={udp_addr} http={http_addr}");
        tracing::info!(%udp_addr, %http_addr, workers, public_url = %shared.config().public_url, "serving");
        notify(NotifyState::Ready(&status(&shared)));
        shutdown_signal(&mut signals).await;
        tracing::info!("shutting down");
        notify(NotifyState::Stopping);
        let _ = stop.send(true);
        for task in tasks {
            // Bounded: a task that does not stop within the grace period is abandoned.
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        if let Some(writer) = &writer {
            // Stores what is queued; the UDP workers have stopped offering.
            writer.shutdown();
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// Opens the install report store `options.reports` names and starts its writer, which halts
/// failing releases of the catalog served; `None` with `--reports off`.
fn start_reports(options: &ServeOptions) -> Result<Option<Arc<ReportWriter>>, ServeError> {
    let store = match options.reports.open(&options.catalog) {
        Ok(Some(store)) => store,
        Ok(None) => {
            tracing::info!("--reports off: install reports are not stored");
            return Ok(None);
        }
        // The default store is a convenience: a catalog folder the server cannot write to
        // (served read-only) does not stop it from serving.
        Err(error) if options.reports == ReportsConfig::Beside => {
            tracing::error!(
                "install reports are not stored: {error}; give --reports sqlite:PATH or postgres://…, or --reports off"
            );
            return Ok(None);
        }
        Err(source) => return Err(ServeError::Reports { target: options.reports.to_string(), source }),
    };
    let writer_options = WriterOptions { catalog: Some(options.catalog.clone()), ..WriterOptions::default() };
    let writer = ReportWriter::start(store, writer_options).map_err(io_error("starting the report writer"))?;
    tracing::info!(reports = %options.reports, "install reports stored");
    Ok(Some(Arc::new(writer)))
}

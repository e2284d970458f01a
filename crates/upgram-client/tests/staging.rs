//! Staging downloads against real HTTP servers on 127.0.0.1: tower-http's ServeDir (whole
//! downloads, refused when the hash or size is wrong, kept when short), and a server of the
//! test's that drops the connection mid-body and answers range requests right or wrong, so that
//! every partial file here is made by a real broken transfer. A 200 MiB payload is staged in a
//! child process whose peak RSS is measured. And what a `Progress` hears of each.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use upgram_client::fetch::{FetchError, HttpFetcher};
use upgram_client::staging::{Download, Progress, StageError, hash_file, stage, stage_reporting, staged_path};
use upgram_core::Sha256Digest;

/// Serves `dir` over HTTP on 127.0.0.1; returns the base URL.
async fn serve(dir: &Path) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback_service(tower_http::services::ServeDir::new(dir));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

fn payload() -> Vec<u8> {
    (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect()
}

fn partial_path(dir: &Path, sha: &Sha256Digest) -> PathBuf {
    dir.join(format!("{}.part", sha.to_hex()))
}

/// The payload served as `BASE/blob`, an empty staging folder and a fetcher.
struct Fixture {
    web: tempfile::TempDir,
    staging: tempfile::TempDir,
    content: Vec<u8>,
    base: String,
    fetcher: HttpFetcher,
}

async fn fixture() -> Fixture {
    let web = tempfile::tempdir().unwrap();
    let content = payload();
    std::fs::write(web.path().join("blob"), &content).unwrap();
    let base = serve(web.path()).await;
    let fetcher = HttpFetcher::new(Duration::from_secs(10)).unwrap();
    Fixture { web, staging: tempfile::tempdir().unwrap(), content, base, fetcher }
}

#[tokio::test]
async fn whole_and_refused_downloads() {
    let Fixture { web, staging, content, base, fetcher } = fixture().await;
    let url = format!("{base}blob");
    let sha = Sha256Digest::of(&content);
    let size = content.len() as u64;

    // Whole.
    let staged = stage(&fetcher, &url, size, &sha, staging.path()).await.unwrap();
    assert_eq!(hash_file(&staged).unwrap(), (sha, size));
    assert_eq!(std::fs::read(&staged).unwrap(), content);
    std::fs::remove_file(&staged).unwrap();

    // Wrong signed hash: refused, nothing staged.
    let wrong = Sha256Digest::of(b"something else");
    assert!(matches!(stage(&fetcher, &url, size, &wrong, staging.path()).await, Err(StageError::Hash { .. })));
    assert!(!staged_path(staging.path(), &wrong).exists());
    assert!(!partial_path(staging.path(), &wrong).exists(), "a download that hashes wrong is not kept");

    // More bytes than signed: cut off.
    let error = stage(&fetcher, &url, size - 10, &sha, staging.path()).await.unwrap_err();
    assert!(matches!(error, StageError::Fetch(FetchError::TooLong { .. })), "{error}");

    // Fewer bytes than signed: kept for a later resume.
    std::fs::write(web.path().join("short"), &content[..1000]).unwrap();
    let short = format!("{base}short");
    let error = stage(&fetcher, &short, size, &sha, staging.path()).await.unwrap_err();
    assert!(matches!(error, StageError::Short { len: 1000, .. }), "{error}");
    assert_eq!(std::fs::read(partial_path(staging.path(), &sha)).unwrap(), content[..1000]);
}

/// How the test's own server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The first request's body stops after [`Dropping::cut`] bytes with a broken connection;
    /// range requests get `206` with the right `Content-Range`.
    Drop,
    /// Like `Drop`, but a range request gets a `206` that starts 100 bytes early.
    WrongStart,
    /// Like `Drop`, but a range request gets a `206` of a resource 5 bytes shorter.
    WrongTotal,
    /// Like `Drop`, but a range request gets the whole body with `200`.
    IgnoreRange,
}

/// A server that breaks its first transfer after `cut` bytes, and records the `Range` header of
/// every request.
#[derive(Clone)]
struct Dropping {
    content: Arc<Vec<u8>>,
    cut: usize,
    ranges: Arc<Mutex<Vec<Option<String>>>>,
}

impl Dropping {
    fn ranges(&self) -> Vec<Option<String>> {
        self.ranges.lock().unwrap().clone()
    }
}

/// Starts a [`Dropping`] server; `BASE/drop`, `BASE/wrong-start`, `BASE/wrong-total` and
/// `BASE/ignore-range` choose its [`Mode`].
async fn serve_dropping(content: Vec<u8>, cut: usize) -> (String, Dropping) {
    let server = Dropping { content: Arc::new(content), cut, ranges: Arc::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(answer).with_state(server.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/"), server)
}

async fn answer(State(server): State<Dropping>, uri: Uri, headers: HeaderMap) -> Response {
    let mode = match uri.path() {
        "/drop" => Mode::Drop,
        "/wrong-start" => Mode::WrongStart,
        "/wrong-total" => Mode::WrongTotal,
        "/ignore-range" => Mode::IgnoreRange,
        _ => return Response::builder().status(StatusCode::NOT_FOUND).body(Body::empty()).unwrap(),
    };
    let range = headers.get(header::RANGE).map(|v| v.to_str().unwrap().to_owned());
    server.ranges.lock().unwrap().push(range.clone());
    let content = server.content.clone();
    let len = content.len() as u64;
    let Some(range) = range.filter(|_| mode != Mode::IgnoreRange) else {
        if server.ranges.lock().unwrap().len() > 1 {
            return Response::builder().header(header::CONTENT_LENGTH, len).body(Body::from(content.to_vec())).unwrap();
        }
        return broken_after(&content, server.cut);
    };
    let ranges = http_range_header::parse_range_header(&range).unwrap().validate(len).unwrap();
    let start = *ranges[0].start();
    let (from, total) = match mode {
        Mode::WrongStart => (start - 100, len),
        Mode::WrongTotal => (start, len - 5),
        _ => (start, len),
    };
    Response::builder()
        .status(StatusCode::PARTIAL_CONTENT)
        .header(header::CONTENT_RANGE, format!("bytes {from}-{}/{total}", total - 1))
        .header(header::CONTENT_LENGTH, total - from)
        .body(Body::from(content[from as usize..total as usize].to_vec()))
        .unwrap()
}

/// A `200` announcing the whole `content` that sends its first `cut` bytes (in 8 KiB chunks),
/// waits for them to leave, then fails: hyper aborts the connection mid-body.
fn broken_after(content: &[u8], cut: usize) -> Response {
    let chunks: Vec<Bytes> = content[..cut].chunks(8192).map(Bytes::copy_from_slice).collect();
    let stream = futures_util::stream::unfold(chunks.into_iter(), |mut chunks| async move {
        match chunks.next() {
            Some(chunk) => Some((Ok(chunk), chunks)),
            None => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Some((Err(std::io::Error::other("the test server drops the connection")), chunks))
            }
        }
    });
    Response::builder().header(header::CONTENT_LENGTH, content.len()).body(Body::from_stream(stream)).unwrap()
}

/// The payload behind a [`Dropping`] server that breaks after `cut` bytes, an empty staging
/// folder and a fetcher.
struct Broken {
    content: Vec<u8>,
    sha: Sha256Digest,
    size: u64,
    base: String,
    server: Dropping,
    staging: tempfile::TempDir,
    fetcher: HttpFetcher,
}

async fn broken(cut: usize) -> Broken {
    let content = payload();
    let (sha, size) = (Sha256Digest::of(&content), content.len() as u64);
    let (base, server) = serve_dropping(content.clone(), cut).await;
    let fetcher = HttpFetcher::new(Duration::from_secs(10)).unwrap();
    Broken { content, sha, size, base, server, staging: tempfile::tempdir().unwrap(), fetcher }
}

/// Stages `BASE/path` from the dropping server for the first time: the transfer breaks, and the
/// partial file holds exactly the bytes that arrived. Returns the partial file.
async fn first_attempt_breaks(fetcher: &HttpFetcher, url: &str, content: &[u8], cut: usize, dir: &Path) -> PathBuf {
    let (sha, size) = (Sha256Digest::of(content), content.len() as u64);
    let error = stage(fetcher, url, size, &sha, dir).await.unwrap_err();
    eprintln!("first attempt: {error}");
    let StageError::Fetch(fetch @ FetchError::Transport { .. }) = &error else { panic!("{error:?}") };
    assert!(std::error::Error::source(fetch).is_some(), "the transport error keeps its cause: {fetch:?}");
    let partial = partial_path(dir, &sha);
    let arrived = std::fs::read(&partial).unwrap();
    assert_eq!(arrived.len(), cut, "the partial file holds what arrived before the drop");
    assert_eq!(arrived, content[..cut]);
    assert!(!staged_path(dir, &sha).exists());
    partial
}

#[tokio::test]
async fn a_dropped_connection_is_resumed_with_a_range_from_what_arrived() {
    let cut = 150_001;
    let Broken { content, sha, size, base, server, staging, fetcher } = broken(cut).await;
    let url = format!("{base}drop");

    let partial = first_attempt_breaks(&fetcher, &url, &content, cut, staging.path()).await;
    let staged = stage(&fetcher, &url, size, &sha, staging.path()).await.unwrap();
    assert_eq!(server.ranges(), [None, Some(format!("bytes={cut}-"))], "the retry asks for the rest only");
    assert_eq!(std::fs::read(&staged).unwrap(), content);
    assert_eq!(hash_file(&staged).unwrap(), (sha, size));
    assert!(!partial.exists(), "the partial file became the staged one");
}

#[tokio::test]
async fn a_range_answered_from_the_wrong_place_is_refused_and_the_partial_file_kept() {
    let cut = 65_536;
    let Broken { content, sha, size, base, server, staging, fetcher } = broken(cut).await;

    // A 206 that starts elsewhere than asked: refused before anything is written.
    let url = format!("{base}wrong-start");
    let partial = first_attempt_breaks(&fetcher, &url, &content, cut, staging.path()).await;
    let error = stage(&fetcher, &url, size, &sha, staging.path()).await.unwrap_err();
    assert!(matches!(&error, StageError::Fetch(FetchError::Range { asked: 65_536, .. })), "{error:?}");
    assert!(error.to_string().contains(&format!("bytes {}-", cut - 100)), "{error}");
    assert_eq!(std::fs::read(&partial).unwrap(), content[..cut], "what arrived before is kept as it was");

    // A 206 from the right place, of a resource shorter than signed: refused too.
    let url = format!("{base}wrong-total");
    let error = stage(&fetcher, &url, size, &sha, staging.path()).await.unwrap_err();
    assert!(matches!(&error, StageError::Size { announced, .. } if *announced == size - 5), "{error:?}");
    assert_eq!(std::fs::read(&partial).unwrap(), content[..cut]);
    let ranges = server.ranges();
    assert_eq!(ranges[1..], [Some(format!("bytes={cut}-")), Some(format!("bytes={cut}-"))]);

    // The same partial file, now with a server that does it right: completed.
    let url = format!("{base}drop");
    let staged = stage(&fetcher, &url, size, &sha, staging.path()).await.unwrap();
    assert_eq!(hash_file(&staged).unwrap(), (sha, size));
}

#[tokio::test]
async fn a_whole_body_answering_a_range_restarts_from_zero() {
    let cut = 200_000;
    let Broken { content, sha, size, base, server, staging, fetcher } = broken(cut).await;
    let url = format!("{base}ignore-range");

    first_attempt_breaks(&fetcher, &url, &content, cut, staging.path()).await;
    let recorder = Recorder::default();
    let download = Download { module: "app", name: "data.bin", url: &url, size };
    let staged = stage_reporting(&fetcher, &download, &sha, staging.path(), &recorder).await.unwrap();
    assert_eq!(server.ranges(), [None, Some(format!("bytes={cut}-"))]);
    assert_eq!(std::fs::read(&staged).unwrap(), content, "the whole body replaced what was there");
    assert_eq!(*recorder.bytes.lock().unwrap(), size, "the whole body arrived again");
}

/// Everything a progress display is told, in order.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
    bytes: Mutex<u64>,
    chunks: Mutex<u64>,
}

impl Progress for Recorder {
    fn started(&self, download: &Download<'_>, resumed: u64) {
        let event = format!("started {} {} of {} at {resumed}", download.module, download.name, download.size);
        self.events.lock().unwrap().push(event);
    }

    fn advanced(&self, _: &Download<'_>, bytes: u64) {
        *self.bytes.lock().unwrap() += bytes;
        *self.chunks.lock().unwrap() += 1;
    }

    fn finished(&self, download: &Download<'_>, complete: bool) {
        self.events.lock().unwrap().push(format!("finished {} complete={complete}", download.name));
    }
}

#[tokio::test]
async fn progress_hears_every_byte_that_arrives() {
    let cut = 131_072;
    let Broken { sha, size, base, staging, fetcher, .. } = broken(cut).await;
    let url = format!("{base}drop");
    let download = Download { module: "app", name: "data.bin", url: &url, size };

    // Broken off: what arrived is reported, and the transfer as incomplete.
    let recorder = Recorder::default();
    assert!(stage_reporting(&fetcher, &download, &sha, staging.path(), &recorder).await.is_err());
    let expected = [format!("started app data.bin of {size} at 0"), "finished data.bin complete=false".into()];
    assert_eq!(*recorder.events.lock().unwrap(), expected);
    assert_eq!(*recorder.bytes.lock().unwrap(), cut as u64);

    // Resumed from there: only the rest arrives, and is counted, chunk by chunk.
    let recorder = Recorder::default();
    stage_reporting(&fetcher, &download, &sha, staging.path(), &recorder).await.unwrap();
    let expected = [format!("started app data.bin of {size} at {cut}"), "finished data.bin complete=true".into()];
    assert_eq!(*recorder.events.lock().unwrap(), expected);
    assert_eq!(*recorder.bytes.lock().unwrap(), size - cut as u64);
    assert!(*recorder.chunks.lock().unwrap() > 1, "reported as it arrives, not once at the end");

    // Staged already: nothing is downloaded, nothing reported.
    let again = Recorder::default();
    stage_reporting(&fetcher, &download, &sha, staging.path(), &again).await.unwrap();
    assert!(again.events.lock().unwrap().is_empty());

    // A failed request still finishes its report, as incomplete.
    let missing = format!("{base}missing");
    let failing = Download { url: &missing, ..download };
    let other = Sha256Digest::of(b"other");
    let recorder = Recorder::default();
    let error = stage_reporting(&fetcher, &failing, &other, staging.path(), &recorder).await.unwrap_err();
    assert!(matches!(error, StageError::Fetch(FetchError::Status { status: 404, .. })), "{error}");
    assert_eq!(recorder.events.lock().unwrap().last().unwrap(), "finished data.bin complete=false");
}

/// Size of the large payload.
const LARGE: u64 = 200 * 1024 * 1024;
/// Most the peak RSS may grow while staging it.
const RSS_BOUND_KIB: u64 = 32 * 1024;
/// The variables that make this test binary the child that stages the large payload.
const CHILD_URL: &str = "UPGRAM_TEST_STAGE_URL";
const CHILD_SHA: &str = "UPGRAM_TEST_STAGE_SHA256";
const CHILD_DIR: &str = "UPGRAM_TEST_STAGE_DIR";

/// The peak resident set of this process so far, in KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Writes `LARGE` bytes of a pattern that does not repeat within a block, 1 MiB at a time.
fn write_large(path: &Path) {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut block = vec![0u8; 1024 * 1024];
    for n in 0..LARGE / block.len() as u64 {
        for (i, word) in block.chunks_mut(8).enumerate() {
            word.copy_from_slice(&(n << 32 | i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
        }
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_200_mib_grows_the_peak_rss_by_at_most_32_mib() {
    let web = tempfile::tempdir().unwrap();
    let staging = tempfile::tempdir().unwrap();
    let large = web.path().join("large");
    write_large(&large);
    let (sha, len) = hash_file(&large).unwrap();
    assert_eq!(len, LARGE);
    let url = format!("{}large", serve(web.path()).await);

    let exe = std::env::current_exe().unwrap();
    let dir = staging.path().to_owned();
    let mut child = std::process::Command::new(exe);
    child
        .args(["stage_large_payload_in_a_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_URL, &url)
        .env(CHILD_SHA, sha.to_hex())
        .env(CHILD_DIR, &dir);
    // The server runs on this runtime's workers while the child stages.
    let output = tokio::task::spawn_blocking(move || child.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("child: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the child staged the payload");
    let figures = stdout.lines().find_map(|line| line.split_once("peak rss kib: ")).expect("the child's figures").1;
    let (before, after) = figures.split_once(" -> ").unwrap();
    let (before, after): (u64, u64) = (before.parse().unwrap(), after.parse().unwrap());
    println!("staging {} MiB grew the peak RSS by {} KiB ({before} -> {after} KiB)", LARGE >> 20, after - before);
    assert!(after - before <= RSS_BOUND_KIB, "peak RSS grew by {} KiB, more than {RSS_BOUND_KIB}", after - before);
    // Staged under its hash only once it hashed right (in the child).
    assert_eq!(std::fs::metadata(staged_path(&dir, &sha)).unwrap().len(), LARGE);
}

/// Not a test of its own: the child of `staging_200_mib_grows_the_peak_rss_by_at_most_32_mib`,
/// which stages the payload its variables name and prints its peak RSS before and after.
#[test]
fn stage_large_payload_in_a_child() {
    let (Some(url), Some(sha), Some(dir)) =
        (std::env::var_os(CHILD_URL), std::env::var(CHILD_SHA).ok(), std::env::var_os(CHILD_DIR))
    else {
        eprintln!("stage_large_payload_in_a_child: NOTHING TO DO, run only as the child of the 200 MiB staging test");
        return;
    };
    let url = url.into_string().unwrap();
    let sha = Sha256Digest::from_hex(&sha).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let fetcher = HttpFetcher::new(Duration::from_secs(20)).unwrap();
    let before = peak_rss_kib();
    let staged = runtime.block_on(stage(&fetcher, &url, LARGE, &sha, Path::new(&dir))).unwrap();
    let after = peak_rss_kib();
    assert_eq!(staged, staged_path(Path::new(&dir), &sha));
    println!("peak rss kib: {before} -> {after}");
}

//! Staging downloads against a real HTTP server on 127.0.0.1 (tower-http's ServeDir, which
//! honours Range): whole, resumed, refused when the hash or size is wrong, kept when short; and
//! what a `Progress` hears of each.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use upgram_client::fetch::HttpFetcher;
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
async fn whole_resumed_and_refused_downloads() {
    let Fixture { web, staging, content, base, fetcher } = fixture().await;
    let url = format!("{base}blob");
    let sha = Sha256Digest::of(&content);
    let size = content.len() as u64;

    // Whole.
    let staged = stage(&fetcher, &url, size, &sha, staging.path()).await.unwrap();
    assert_eq!(hash_file(&staged).unwrap(), (sha, size));
    std::fs::remove_file(&staged).unwrap();

    // Resumed: a correct first half is kept and only the rest is fetched.
    let partial = staging.path().join(format!("{}.part", sha.to_hex()));
    std::fs::write(&partial, &content[..content.len() / 2]).unwrap();
    let staged = stage(&fetcher, &url, size, &sha, staging.path()).await.unwrap();
    assert_eq!(std::fs::read(&staged).unwrap(), content);
    std::fs::remove_file(&staged).unwrap();

    // Proof that the range was used: a wrong first half is kept, so the result is wrong, and
    // then discarded.
    std::fs::write(&partial, vec![0xEE; content.len() / 2]).unwrap();
    let error = stage(&fetcher, &url, size, &sha, staging.path()).await.unwrap_err();
    assert!(matches!(error, StageError::Hash { .. }), "{error}");
    assert!(!partial.exists() && !staged_path(staging.path(), &sha).exists(), "nothing bad is kept");

    // Wrong signed hash: refused, nothing staged.
    let wrong = Sha256Digest::of(b"something else");
    assert!(matches!(stage(&fetcher, &url, size, &wrong, staging.path()).await, Err(StageError::Hash { .. })));
    assert!(!staged_path(staging.path(), &wrong).exists());

    // More bytes than signed: cut off.
    let error = stage(&fetcher, &url, size - 10, &sha, staging.path()).await.unwrap_err();
    assert!(matches!(error, StageError::Fetch(_)), "{error}");

    // Fewer bytes than signed: kept for a later resume.
    std::fs::write(web.path().join("short"), &content[..1000]).unwrap();
    let short = format!("{base}short");
    let error = stage(&fetcher, &short, size, &sha, staging.path()).await.unwrap_err();
    assert!(matches!(error, StageError::Short { len: 1000, .. }), "{error}");
    assert!(partial.exists());
}

/// Everything a progress display is told, in order.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
    bytes: Mutex<u64>,
}

impl Progress for Recorder {
    fn started(&self, download: &Download<'_>, resumed: u64) {
        let event = format!("started {} {} of {} at {resumed}", download.module, download.name, download.size);
        self.events.lock().unwrap().push(event);
    }

    fn advanced(&self, _: &Download<'_>, bytes: u64) {
        *self.bytes.lock().unwrap() += bytes;
    }

    fn finished(&self, download: &Download<'_>, complete: bool) {
        self.events.lock().unwrap().push(format!("finished {} complete={complete}", download.name));
    }
}

#[tokio::test]
async fn progress_hears_every_byte_that_arrives() {
    let Fixture { web: _web, staging, content, base, fetcher } = fixture().await;
    let url = format!("{base}blob");
    let (sha, size) = (Sha256Digest::of(&content), content.len() as u64);
    let download = Download { module: "app", name: "data.bin", url: &url, size };

    // Resumed from the middle: only the second half arrives, and is counted.
    let half = content.len() / 2;
    std::fs::write(staging.path().join(format!("{}.part", sha.to_hex())), &content[..half]).unwrap();
    let recorder = Recorder::default();
    stage_reporting(&fetcher, &download, &sha, staging.path(), &recorder).await.unwrap();
    let expected = [format!("started app data.bin of {size} at {half}"), "finished data.bin complete=true".into()];
    assert_eq!(*recorder.events.lock().unwrap(), expected);
    assert_eq!(*recorder.bytes.lock().unwrap(), size - half as u64);

    // Staged already: nothing is downloaded, nothing reported.
    let again = Recorder::default();
    stage_reporting(&fetcher, &download, &sha, staging.path(), &again).await.unwrap();
    assert!(again.events.lock().unwrap().is_empty());

    // A failed transfer still finishes its report, as incomplete.
    let missing = format!("{url}-missing");
    let failing = Download { url: &missing, ..download };
    let other = Sha256Digest::of(b"other");
    let recorder = Recorder::default();
    assert!(stage_reporting(&fetcher, &failing, &other, staging.path(), &recorder).await.is_err());
    assert_eq!(recorder.events.lock().unwrap().last().unwrap(), "finished data.bin complete=false");
}

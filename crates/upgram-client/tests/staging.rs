//! Staging downloads against a real HTTP server on 127.0.0.1 (tower-http's ServeDir, which
//! honours Range): whole, resumed, refused when the hash or size is wrong, kept when short.

use std::path::Path;
use std::time::Duration;

use upgram_client::fetch::HttpFetcher;
use upgram_client::staging::{StageError, hash_file, stage, staged_path};
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

#[tokio::test]
async fn whole_resumed_and_refused_downloads() {
    let web = tempfile::tempdir().unwrap();
    let staging = tempfile::tempdir().unwrap();
    let content = payload();
    std::fs::write(web.path().join("blob"), &content).unwrap();
    let base = serve(web.path()).await;
    let url = format!("{base}blob");
    let fetcher = HttpFetcher::new(Duration::from_secs(10)).unwrap();
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

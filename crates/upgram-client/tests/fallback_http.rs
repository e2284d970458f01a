//! Fallback documents from hostile mirrors (C2, P6, P8; SPEC.md §8.3): the reference server
//! answers over UDP with a signed fallback whose mirror is an HTTP server of the test's
//! (`common/mirror.rs`) that refuses, fails, trickles, sends too much, too little, the wrong
//! bytes or too many redirects. Each ends in a `ClientError::Fetch` naming what went wrong, and
//! no answer is handed out. A mirror list with a bad mirror first and a good one second still
//! gives the document.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use common::mirror::{Behaviour, Documents, Mirror};
use common::{TestServer, client, client_runtime, dead_tcp_address, installed, start_server};
use upgram_client::client::ClientError;
use upgram_client::fetch::{DOCUMENT_ATTEMPTS, FetchError, HttpFetcher, fetch_document};
use upgram_client::{CheckReport, ModuleResult};
use upgram_core::Sha256Digest;
use upgram_core::body::{Binding, Fallback, ModuleAnswer, Response, Status};
use upgram_core::message::DocumentError;
use upgram_server::server::Shared;

/// The client's deadline, which is also its HTTP fetcher's timeout.
const DEADLINE: Duration = Duration::from_secs(2);
/// How long a mirror lives at most.
const LIFETIME: Duration = Duration::from_secs(120);

/// What `fetch_document` must give for `document`: its answer, decoded, and its length.
fn answer_of(document: &[u8]) -> (Response<'static>, usize) {
    (Response::decode(document).expect("the served document decodes").into_owned(), document.len())
}

/// Asks the server about `big` 1 (an answer that needs a fallback) with its documents served by
/// a mirror that behaves as told (or, with `None`, by nothing: a closed port). Returns the
/// outcome and how many requests the mirror saw.
fn check_through(behaviour: Option<Behaviour>) -> (Result<CheckReport, ClientError>, u64) {
    let runtime = client_runtime();
    let server_slot: Arc<OnceLock<Arc<Shared>>> = Arc::new(OnceLock::new());
    let lookup = server_slot.clone();
    let documents: Documents = Arc::new(move |sha256| lookup.get().and_then(|shared| shared.document(sha256)));
    let mirror = behaviour.map(|b| runtime.block_on(Mirror::start(b, documents, LIFETIME)).expect("mirror"));
    let public_url = match &mirror {
        Some(mirror) => mirror.base_url(),
        None => format!("http://{}/", dead_tcp_address()),
    };
    let server: TestServer = start_server(|config| config.public_url = public_url);
    let _ = server_slot.set(server.shared.clone());
    let outcome = runtime.block_on(async {
        let client = client(&[server.udp], DEADLINE, Duration::from_millis(500));
        let started = std::time::Instant::now();
        // A guard, not a timing assertion: UDP within the deadline, the fetch within its timeout.
        let outcome =
            tokio::time::timeout(DEADLINE * 2 + Duration::from_secs(10), client.check(&installed(&[("big", "1")])))
                .await
                .expect("the check outlived its deadline and its fetch timeout");
        eprintln!("{behaviour:?}: {:?} after {:?}", outcome.as_ref().map(|r| r.fallbacks), started.elapsed());
        outcome
    });
    (outcome, mirror.map_or(0, |m| m.requests()))
}

/// The one mirror failure inside a `ClientError::Fetch`; panics on anything else.
fn mirror_failure(outcome: Result<CheckReport, ClientError>) -> FetchError {
    match outcome {
        Err(ClientError::Fetch(FetchError::AllMirrors(mut failures))) if failures.len() == 1 => failures.remove(0),
        Err(other) => panic!("expected one failed mirror, got {other:?}"),
        Ok(report) => panic!("a bad mirror was trusted: {:?}", report.results(&installed(&[]))),
    }
}

#[test]
fn a_good_mirror_gives_the_answer() {
    let (outcome, requests) = check_through(Some(Behaviour::Good));
    let report = outcome.expect("the document is fetched and verified");
    assert_eq!(report.fallbacks, 1);
    assert_eq!(requests, 1);
    let results: Vec<ModuleResult> = report.results(&installed(&[("big", "1")]));
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].status, Status::Update);
    assert_eq!(results[0].how, "files (40)");
}

#[test]
fn a_closed_port_is_a_transport_failure() {
    let failure = mirror_failure(check_through(None).0);
    assert!(matches!(failure, FetchError::Transport { .. }), "{failure:?}");
    assert!(failure.to_string().contains("Connection refused"), "the cause is named: {failure}");
}

#[test]
fn status_503_is_a_status_failure_after_every_try() {
    let (outcome, requests) = check_through(Some(Behaviour::Unavailable));
    let failure = mirror_failure(outcome);
    assert!(matches!(failure, FetchError::Status { status: 503, .. }), "{failure:?}");
    assert_eq!(requests, u64::from(DOCUMENT_ATTEMPTS), "a busy mirror is asked again");
    assert!(failure.to_string().contains("HTTP status 503"), "{failure}");
}

#[test]
fn a_mirror_busy_for_a_moment_still_gives_the_document() {
    let (outcome, requests) = check_through(Some(Behaviour::UnavailableFirst(u64::from(DOCUMENT_ATTEMPTS) - 1)));
    let report = outcome.expect("the document on the last try");
    assert_eq!(report.fallbacks, 1);
    assert_eq!(requests, u64::from(DOCUMENT_ATTEMPTS));
}

#[test]
fn a_missing_document_is_not_asked_for_again() {
    let runtime = client_runtime();
    runtime.block_on(async {
        let (document, binding) = document();
        let fetcher = HttpFetcher::new(Duration::from_secs(1)).expect("fetcher");
        // The mirror has another document only: 404, which asking again does not change.
        let mirror = Mirror::start(Behaviour::Good, serving(b"another"), LIFETIME).await.expect("mirror");
        let now = upgram_server::udp::unix_now();
        let missing = pointer(&document, binding, vec![mirror.url(&Sha256Digest::of(&document))]);
        let error = fetch_document(&fetcher, &missing, now).await.expect_err("no such document");
        let FetchError::AllMirrors(failures) = &error else { panic!("{error:?}") };
        assert!(matches!(failures[..], [FetchError::Status { status: 404, .. }]), "{failures:?}");
        assert_eq!(mirror.requests(), 1);
    });
}

#[test]
fn a_trickling_mirror_is_given_up_at_the_timeout() {
    let (outcome, requests) = check_through(Some(Behaviour::Trickle));
    let failure = mirror_failure(outcome);
    assert!(matches!(failure, FetchError::Transport { .. }), "{failure:?}");
    assert!(failure.to_string().contains("timed out"), "a timeout is called one: {failure}");
    assert_eq!(requests, 1);
}

#[test]
fn more_bytes_than_signed_announced_are_refused() {
    let failure = mirror_failure(check_through(Some(Behaviour::TooLong)).0);
    assert!(matches!(failure, FetchError::TooLong { .. }), "{failure:?}");
}

#[test]
fn more_bytes_than_signed_streamed_are_cut() {
    let failure = mirror_failure(check_through(Some(Behaviour::TooLongUnannounced)).0);
    assert!(matches!(failure, FetchError::TooLong { .. }), "{failure:?}");
}

#[test]
fn fewer_bytes_than_signed_are_refused() {
    let failure = mirror_failure(check_through(Some(Behaviour::Short)).0);
    assert!(matches!(failure, FetchError::Document { source: DocumentError::SizeMismatch { .. }, .. }), "{failure:?}");
}

#[test]
fn the_wrong_bytes_fail_the_hash() {
    let failure = mirror_failure(check_through(Some(Behaviour::WrongBytes)).0);
    assert!(matches!(failure, FetchError::Document { source: DocumentError::HashMismatch { .. }, .. }), "{failure:?}");
}

#[test]
fn five_redirects_are_followed_and_six_are_not() {
    // SPEC.md §8.3: at most 5. A mirror that redirects on and on costs at most six requests.
    let (outcome, requests) = check_through(Some(Behaviour::Redirects(5)));
    assert_eq!(outcome.expect("five redirects are allowed (SPEC.md §8.3)").fallbacks, 1);
    assert_eq!(requests, 6);
    let (outcome, requests) = check_through(Some(Behaviour::Redirects(6)));
    let failure = mirror_failure(outcome);
    assert!(matches!(failure, FetchError::Transport { .. }), "{failure:?}");
    assert!(failure.to_string().contains("redirect"), "{failure}");
    assert_eq!(requests, 6, "the sixth redirect is not followed");
}

/// A document of our own, valid now, and the signed fallback's body that would point at it.
fn document() -> (Vec<u8>, Binding) {
    let now = upgram_server::udp::unix_now();
    let binding = Binding { query: Sha256Digest::of(b"<query/>"), issued: now, expires: now + 300 };
    let modules = vec![ModuleAnswer::new("core", Status::Current, Some("1.0".parse().expect("version")))];
    (Response { binding, base: None, compact: false, modules }.to_vec(), binding)
}

fn serving(document: &[u8]) -> Documents {
    let sha256 = Sha256Digest::of(document);
    let bytes = Bytes::copy_from_slice(document);
    Arc::new(move |asked| (*asked == sha256).then(|| bytes.clone()))
}

fn pointer(document: &[u8], binding: Binding, mirrors: Vec<String>) -> Fallback<'static> {
    Fallback {
        binding,
        size: document.len() as u64,
        sha256: Sha256Digest::of(document),
        mirrors: mirrors.into_iter().map(Into::into).collect(),
        modules: None,
    }
}

#[test]
fn a_bad_first_mirror_then_a_good_one_gives_the_document() {
    let runtime = client_runtime();
    runtime.block_on(async {
        let (document, binding) = document();
        let sha256 = Sha256Digest::of(&document);
        let fetcher = HttpFetcher::new(Duration::from_secs(1)).expect("fetcher");
        let bad_kinds = [
            Some(Behaviour::Unavailable),
            Some(Behaviour::Trickle),
            Some(Behaviour::TooLong),
            Some(Behaviour::TooLongUnannounced),
            Some(Behaviour::Short),
            Some(Behaviour::WrongBytes),
            Some(Behaviour::Redirects(6)),
            None,
        ];
        for behaviour in bad_kinds {
            let bad = match behaviour {
                Some(b) => Some(Mirror::start(b, serving(&document), LIFETIME).await.expect("mirror")),
                None => None,
            };
            let bad_url = match &bad {
                Some(mirror) => mirror.url(&sha256),
                None => format!("http://{}/doc/{}.xml", dead_tcp_address(), sha256.to_hex()),
            };
            let good = Mirror::start(Behaviour::Good, serving(&document), LIFETIME).await.expect("mirror");
            let now = upgram_server::udp::unix_now();
            let fallback = pointer(&document, binding, vec![bad_url, good.url(&sha256)]);
            let fetched = fetch_document(&fetcher, &fallback, now)
                .await
                .unwrap_or_else(|e| panic!("{behaviour:?} first, good second: {e}"));
            assert_eq!((fetched.response, fetched.len), answer_of(&document), "{behaviour:?}");
            // Tried first, and once: a busy mirror is asked again only after the others.
            assert!(bad.as_ref().is_none_or(|m| m.requests() >= 1), "{behaviour:?}: the bad mirror was tried first");
            if behaviour == Some(Behaviour::Unavailable) {
                assert_eq!(bad.as_ref().map(Mirror::requests), Some(1), "a busy first mirror delays the good one");
            }
            assert_eq!(good.requests(), 1, "{behaviour:?}");
        }
    });
}

#[test]
fn two_bad_mirrors_fail_with_both_reasons_and_a_good_first_mirror_is_enough() {
    let runtime = client_runtime();
    runtime.block_on(async {
        let (document, binding) = document();
        let sha256 = Sha256Digest::of(&document);
        let fetcher = HttpFetcher::new(Duration::from_secs(1)).expect("fetcher");
        let unavailable = Mirror::start(Behaviour::Unavailable, serving(&document), LIFETIME).await.expect("mirror");
        let wrong = Mirror::start(Behaviour::WrongBytes, serving(&document), LIFETIME).await.expect("mirror");
        let now = upgram_server::udp::unix_now();
        let both_bad = pointer(&document, binding, vec![unavailable.url(&sha256), wrong.url(&sha256)]);
        let error = fetch_document(&fetcher, &both_bad, now).await.expect_err("no good mirror");
        let FetchError::AllMirrors(failures) = &error else { panic!("{error:?}") };
        assert!(matches!(failures[0], FetchError::Status { status: 503, .. }), "{failures:?}");
        assert!(
            matches!(failures[1], FetchError::Document { source: DocumentError::HashMismatch { .. }, .. }),
            "{failures:?}"
        );
        assert_eq!(failures.len(), 2);
        // The busy mirror asked in every round, the wrong one once: its bytes will not change.
        assert_eq!((unavailable.requests(), wrong.requests()), (u64::from(DOCUMENT_ATTEMPTS), 1));

        let good = Mirror::start(Behaviour::Good, serving(&document), LIFETIME).await.expect("mirror");
        let untouched = Mirror::start(Behaviour::WrongBytes, serving(&document), LIFETIME).await.expect("mirror");
        let good_first = pointer(&document, binding, vec![good.url(&sha256), untouched.url(&sha256)]);
        let fetched = fetch_document(&fetcher, &good_first, now).await.expect("first mirror");
        assert_eq!((fetched.response, fetched.len), answer_of(&document));
        assert_eq!(untouched.requests(), 0, "no mirror is asked once one gave the document");
    });
}

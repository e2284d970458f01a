//! Every test vector of `protocol-spec/vectors/` (SPEC.md §11): valid ones decode to their
//! stated meaning and re-encode byte for byte; invalid ones fail with their stated error.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use upgram_core::body::Response;
use upgram_core::merge::expand_compact;
use upgram_core::message::Expectation;
use upgram_core::records::{Change, RecordDelta, RecordFile};
use upgram_core::sign::{KeyRing, ReplySigner, leaf_hash};
use upgram_core::wire::MessageKind;
use upgram_core::{Datagram, Message};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    name: String,
    description: String,
    kind: String,
    hex: Option<String>,
    text: Option<String>,
    error: Option<String>,
    decoded: Option<String>,
    #[serde(default = "yes")]
    reencode: bool,
    /// Signed replies: the name of the query vector they answer; they are then verified as
    /// that query's client does, at the test clock.
    answers: Option<String>,
}

fn yes() -> bool {
    true
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../protocol-spec/vectors")
}

fn load() -> Vec<(PathBuf, Vector)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(vectors_dir())
        .expect("protocol-spec/vectors exists")
        .map(|entry| entry.expect("readable").path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable vector");
            let vector = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, vector)
        })
        .collect()
}

impl Vector {
    fn bytes(&self) -> Vec<u8> {
        match (&self.hex, &self.text) {
            (Some(hex), None) => {
                let compact: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
                hex::decode(compact).expect("valid hex")
            }
            // TOML multi-line literals keep the newline after the opening quotes out, but not
            // the one before the closing quotes.
            (None, Some(text)) => text.strip_suffix('\n').unwrap_or(text).as_bytes().to_vec(),
            _ => panic!("{}: exactly one of hex and text", self.name),
        }
    }

    fn expected_json(&self) -> serde_json::Value {
        let decoded = self.decoded.as_deref().unwrap_or_else(|| panic!("{}: valid vector without decoded", self.name));
        serde_json::from_str(decoded).unwrap_or_else(|e| panic!("{}: decoded is not JSON: {e}", self.name))
    }
}

fn test_keys() -> KeyRing {
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
    let mut ring = KeyRing::new();
    ring.add(ReplySigner::from_seed(&seed).verifying_key());
    ring
}

/// The test clock of every vector (SPEC.md §11).
const NOW: u64 = 1_764_000_000;

/// Verifies the signed reply `bytes` as the client of the query vector `answers` does.
fn verify_answer(vectors: &[(PathBuf, Vector)], answers: &str, bytes: &[u8]) -> Result<(), String> {
    let (_, query_vector) = vectors.iter().find(|(_, v)| v.name == answers).expect("the answered query vector exists");
    let query_bytes = query_vector.bytes();
    let Message::Query(query) = Datagram::decode(&query_bytes).expect("query vector decodes").message else {
        panic!("{answers} is not a query")
    };
    let keys = test_keys();
    let expect = Expectation { keys: &keys, query: query.digest(), nonce: query.nonce, now: NOW };
    let datagram = Datagram::decode(bytes).map_err(|e| e.name().to_owned())?;
    match &datagram.message {
        // A compact answer is then expanded against the query itself (SPEC.md §10.4 steps 8-9).
        Message::Response(reply) => {
            let response = reply.verify(&expect).map_err(|e| e.name().to_owned())?;
            expand_compact(response.clone(), &query.query).map(|_| ()).map_err(|e| e.name().to_owned())
        }
        Message::Fallback(reply) => reply.verify(&expect).map(|_| ()).map_err(|e| e.name().to_owned()),
        _ => panic!("a vector with `answers` is a signed reply"),
    }
}

fn check_datagram(vectors: &[(PathBuf, Vector)], vector: &Vector, bytes: &[u8]) {
    let decoded = Datagram::decode(bytes);
    if let Some(error) = &vector.error {
        let name = match (decoded, &vector.answers) {
            (Err(err), _) => err.name().to_owned(),
            (Ok(_), Some(answers)) => {
                verify_answer(vectors, answers, bytes).expect_err(&format!("{}: must fail verification", vector.name))
            }
            (Ok(_), None) => panic!("{}: must be rejected", vector.name),
        };
        assert_eq!(&name, error, "{}: wrong error", vector.name);
        return;
    }
    if let Some(answers) = &vector.answers {
        assert_eq!(verify_answer(vectors, answers, bytes), Ok(()), "{}: verifies for {answers}", vector.name);
    }
    let datagram = decoded.unwrap_or_else(|e| panic!("{}: {e}", vector.name));
    assert_eq!(
        serde_json::to_value(&datagram).expect("json"),
        vector.expected_json(),
        "{}: decoded meaning",
        vector.name
    );
    let mut again = Vec::new();
    datagram.encode(&mut again).expect("re-encodes");
    assert_eq!(again, bytes, "{}: datagram re-encoding", vector.name);
    let keys = test_keys();
    let body = match &datagram.message {
        Message::Response(reply) => {
            keys.verify(MessageKind::Response, reply.nonce.as_ref(), reply.raw_body(), &reply.signature)
                .expect("signature");
            Some((reply.raw_body(), reply.body_unverified().to_vec()))
        }
        Message::Fallback(reply) => {
            keys.verify(MessageKind::Fallback, reply.nonce.as_ref(), reply.raw_body(), &reply.signature)
                .expect("signature");
            Some((reply.raw_body(), reply.body_unverified().to_vec()))
        }
        Message::Query(query) => Some((query.raw_body, query.query.to_vec())),
        Message::Report(report) => Some((datagram.to_frame().body, report.report.to_vec())),
        Message::Error(_) | Message::CookieChallenge(_) | Message::ReportAck => None,
    };
    if let (Some((raw, canonical)), true) = (body, vector.reencode) {
        assert_eq!(
            String::from_utf8_lossy(&canonical),
            String::from_utf8_lossy(raw),
            "{}: body is not canonical",
            vector.name
        );
    }
}

fn check_document(vector: &Vector, bytes: &[u8]) {
    let response = Response::decode(bytes).unwrap_or_else(|e| panic!("{}: {e}", vector.name));
    assert_eq!(serde_json::to_value(&response).expect("json"), vector.expected_json(), "{}", vector.name);
    assert_eq!(response.to_vec(), bytes, "{}: document re-encoding", vector.name);
}

fn check_record_file(vector: &Vector, bytes: &[u8]) {
    let file = RecordFile::decode(bytes).unwrap_or_else(|e| panic!("{}: {e}", vector.name));
    let records: Vec<serde_json::Value> = file
        .records()
        .iter()
        .map(|r| serde_json::json!({ "id": r.id, "content": String::from_utf8_lossy(r.content) }))
        .collect();
    assert_eq!(serde_json::json!({ "records": records }), vector.expected_json(), "{}", vector.name);
    let mut again = Vec::new();
    file.encode(&mut again);
    assert_eq!(again, bytes, "{}: re-encoding", vector.name);
}

fn check_record_delta(vector: &Vector, bytes: &[u8]) {
    let delta = RecordDelta::decode(bytes).unwrap_or_else(|e| panic!("{}: {e}", vector.name));
    let entries: Vec<serde_json::Value> = delta
        .entries()
        .iter()
        .map(|entry| match entry.change {
            Change::Delete => serde_json::json!({ "id": entry.id, "change": "delete" }),
            Change::Put(content) => {
                serde_json::json!({ "id": entry.id, "change": "put", "content": String::from_utf8_lossy(content) })
            }
        })
        .collect();
    let json = serde_json::json!({
        "base_sha256": hex::encode(delta.base_sha256()),
        "result_sha256": hex::encode(delta.result_sha256()),
        "entries": entries,
    });
    assert_eq!(json, vector.expected_json(), "{}", vector.name);
    let mut again = Vec::new();
    delta.encode(&mut again);
    assert_eq!(again, bytes, "{}: re-encoding", vector.name);
}

#[test]
fn every_vector_holds() {
    let vectors = load();
    assert!(vectors.len() >= 16, "the spec promises at least 16 vectors, found {}", vectors.len());
    for (path, vector) in &vectors {
        assert!(!vector.description.is_empty(), "{}: no description", path.display());
        let bytes = vector.bytes();
        match vector.kind.as_str() {
            "datagram" => check_datagram(&vectors, vector, &bytes),
            "document" => check_document(vector, &bytes),
            "record-file" => check_record_file(vector, &bytes),
            "record-delta" => check_record_delta(vector, &bytes),
            other => panic!("{}: unknown kind {other}", path.display()),
        }
    }
}

#[test]
fn the_required_vectors_are_present() {
    let names: Vec<String> = load().into_iter().map(|(_, v)| v.name).collect();
    for required in [
        "minimal-query",
        "multi-module-query",
        "up-to-date-response",
        "package-response",
        "file-list-response",
        "dependencies-response",
        "fallback-response",
        "cookie-challenge",
        "response-1024-bytes",
    ] {
        assert!(names.iter().any(|n| n == required), "vector {required} is missing");
    }
    assert!(names.iter().any(|n| n.starts_with("error-")), "no error vector");
    assert!(names.iter().filter(|n| n.starts_with("invalid-")).count() >= 5, "fewer than 5 invalid vectors");
}

/// One invalid vector per class of ill-formed XML that strict decoding rejects (SPEC.md
/// §4.1.2, §4.1.3, §4.6, §6.1), each with the error the spec names for it.
#[test]
fn the_strict_decoding_vectors_are_present() {
    let vectors = load();
    for (name, error) in [
        ("invalid-unknown-element-attributes", "duplicate-attribute"),
        ("invalid-entity-in-unknown-element", "entity"),
        ("invalid-element-name", "xml-syntax"),
        ("invalid-root-attribute-no-space", "xml-syntax"),
        ("invalid-no-space-between-attributes", "xml-syntax"),
        ("invalid-attribute-name", "xml-syntax"),
        ("invalid-nul-in-value", "xml-syntax"),
        ("invalid-character-reference", "xml-syntax"),
        ("invalid-form-feed-between-elements", "unexpected-text"),
        ("invalid-xml-declaration", "xml-syntax"),
        ("invalid-pre-release-too-large", "invalid-attribute"),
        ("invalid-supported-order", "invalid-attribute"),
    ] {
        let (path, vector) =
            vectors.iter().find(|(_, v)| v.name == name).unwrap_or_else(|| panic!("vector {name} is missing"));
        assert_eq!(vector.error.as_deref(), Some(error), "{}", path.display());
        let number: u32 = path
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.split('-').next())
            .and_then(|n| n.parse().ok())
            .expect("numbered");
        assert!(number >= 40, "{}: strict decoding vectors are numbered from 40", path.display());
    }
}

/// Batch signing (SPEC.md §10.3.1): a verified batch-signed reply, its nonce-bound sibling
/// under the same signature, and one vector for each way a batch trailer fails.
#[test]
fn the_batch_vectors_are_present_and_share_one_signature() {
    let vectors = load();
    let find = |name: &str| vectors.iter().find(|(_, v)| v.name == name).unwrap_or_else(|| panic!("{name} missing"));
    for (name, error) in [
        ("invalid-batch-tampered-path", "bad-path"),
        ("invalid-batch-wrong-position", "wrong-position"),
        ("invalid-batch-path-too-long", "path-too-long"),
        ("invalid-batch-empty-path", "empty-path"),
        ("invalid-batch-swapped-answer", "bad-path"),
        ("invalid-batch-tampered-signature", "bad-path"),
    ] {
        assert_eq!(find(name).1.error.as_deref(), Some(error), "{name}");
    }
    let signature = |name: &str| {
        let bytes = find(name).1.bytes();
        let Message::Response(reply) = Datagram::decode(&bytes).expect("decodes").message else { panic!("{name}") };
        let batch = reply.signature.batch.expect("batch-signed");
        let leaf = leaf_hash(MessageKind::Response, reply.nonce.as_ref(), reply.raw_body());
        (reply.signature.signature, batch.root_from(&leaf), batch.index(), batch.depth())
    };
    let (first, second) = (signature("batch-signed-response"), signature("batch-signed-nonce-response"));
    assert_eq!((first.0, first.1), (second.0, second.1), "one signature, both paths lead to one root");
    assert_eq!((first.2, first.3, second.2), (0, 2, 1));
    assert!(find("batch-signed-response").0.file_name().is_some_and(|f| f.to_string_lossy().starts_with("30-")));
}

#[test]
fn the_1024_byte_vector_is_exactly_at_the_limit() {
    let (_, vector) = load().into_iter().find(|(_, v)| v.name == "response-1024-bytes").expect("present");
    assert_eq!(vector.bytes().len(), upgram_core::MAX_DATAGRAM_LEN);
}

#[test]
fn the_record_delta_vector_applies_to_the_record_file_vector() {
    let vectors = load();
    let file = vectors.iter().find(|(_, v)| v.name == "record-file").expect("record file").1.bytes();
    let delta = vectors.iter().find(|(_, v)| v.name == "record-delta").expect("record delta").1.bytes();
    let merged = upgram_core::records::apply_delta(&file, &delta).expect("delta applies");
    let merged = RecordFile::decode(&merged).expect("merged file decodes");
    let ids: Vec<u64> = merged.records().iter().map(|r| r.id).collect();
    assert_eq!(ids, [1, 3, 100], "Figure 9: 1 replaced, 2 deleted, 100 added");
}

/// The executable flag (SPEC.md §4.4): vector 28 carries it on one file only; an answer
/// without it (every vector before it) decodes as "not executable"; the BOOL spellings decode;
/// anything else is `invalid-attribute`.
#[test]
fn the_executable_flag_decodes_and_defaults_to_not_executable() {
    use upgram_core::body::UpgradeInfo;
    let vectors = load();
    let (_, vector) = vectors.iter().find(|(_, v)| v.name == "executable-file-response").expect("present");
    let bytes = vector.bytes();
    let Message::Response(reply) = Datagram::decode(&bytes).expect("decodes").message else { panic!("not a response") };
    let response = Response::decode(reply.raw_body()).expect("body decodes");
    let UpgradeInfo::Files(files) = &response.modules[0].upgrade else { panic!("a file list") };
    let flags: Vec<(&str, bool)> = files.iter().map(|f| (f.id.as_ref(), f.executable)).collect();
    assert_eq!(flags, [("bin/core", true), ("share/core.txt", false)]);

    let entry = |exec: &str| {
        format!(
            r#"<response for="{zero}" issued="1" expires="2"><module id="m" status="update" latest="1"><file id="bin/x" version="1" mode="replace" url="https://h/x" size="1" sha256="{zero}"{exec}/></module></response>"#,
            zero = "0".repeat(64)
        )
    };
    let executable = |text: String| -> Result<bool, String> {
        let response = Response::decode(text.as_bytes()).map_err(|e| e.name().to_owned())?;
        match &response.modules[0].upgrade {
            UpgradeInfo::Files(files) => Ok(files[0].executable),
            other => panic!("not a file list: {other:?}"),
        }
    };
    assert_eq!(executable(entry("")), Ok(false), "absent means not executable");
    for (value, expected) in [("1", true), ("true", true), ("0", false), ("false", false)] {
        assert_eq!(executable(entry(&format!(r#" exec="{value}""#))), Ok(expected), "exec=\"{value}\"");
    }
    assert_eq!(executable(entry(r#" exec="yes""#)), Err("invalid-attribute".to_owned()));
}

/// The compact-answer vectors (SPEC.md §4.3, §4.4, §10.4 steps 8-9), each with its outcome.
#[test]
fn the_compact_vectors_are_present() {
    let vectors = load();
    for (name, error) in [
        ("compact-query", None),
        ("compact-response", None),
        ("invalid-compact-not-asked", Some("not-asked")),
        ("compact-nonce-query", None),
        ("compact-nonce-response", None),
        ("invalid-compact-unrequested", Some("unrequested-compact")),
    ] {
        let (path, vector) = vectors.iter().find(|(_, v)| v.name == name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(vector.error.as_deref(), error, "{name}");
        let number: usize = path.file_name().unwrap().to_string_lossy()[..2].parse().unwrap();
        assert!((53..=59).contains(&number), "{name} is numbered {number}");
    }
}

//! Writes the test vectors of `protocol-spec/vectors/` (SPEC.md §11) from the reference codec.
//!
//! Run from the workspace root: `cargo run -p upgram-core --example make_vectors`. The vectors
//! are committed; `tests/vectors.rs` decodes and re-encodes every one of them, so a change of
//! the wire format shows as a failing test until the vectors (and the spec) are updated too.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use upgram_core::body::{
    BUCKETS, Binding, Delta, ErrorBody, ErrorCode, FailureCode, FileAction, FileEntry, FilePatch, ModuleAnswer,
    ModuleDocument, Outcome as ReportOutcome, OutcomeKind, PATCH_FORMAT_BSDIFF, Package, Payload, Query, QueryFile,
    QueryModule, Report, Requires, Response, Status, UpgradeInfo,
};
use upgram_core::cookie::{ClientCookie, CookieSecret, make_server_cookie};
use upgram_core::fallback::{ReplyShape, encode_module_fallback, prepare_reply};
use upgram_core::records::{Change, DeltaEntry, Record, RecordDelta, RecordFile};
use upgram_core::sign::{BatchItem, BatchProof, Nonce, ReplySigner, SignatureBlock};
use upgram_core::version::Version;
use upgram_core::wire::{Frame, MessageKind, QueryOptions};
use upgram_core::{Datagram, Sha256Digest};

/// The test clock of every vector.
const NOW: u64 = 1_764_000_000;

fn signer() -> ReplySigner {
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
    ReplySigner::from_seed(&seed)
}

fn v(text: &'static str) -> Version<'static> {
    Version::parse(text).expect("vector versions are valid")
}

fn digest_of(text: &str) -> Sha256Digest {
    Sha256Digest::of(text.as_bytes())
}

struct Writer<'p> {
    dir: &'p Path,
    /// The number of the last vector written (numbering may skip ahead).
    count: usize,
    /// How many were written.
    written: usize,
}

impl Writer<'_> {
    fn write(&mut self, name: &str, description: &str, kind: &str, payload: Payload_, outcome: Outcome) -> PathBuf {
        self.count += 1;
        self.written += 1;
        let mut out = String::new();
        let _ = writeln!(out, "name = {name:?}");
        let _ = writeln!(out, "description = {description:?}");
        let _ = writeln!(out, "kind = {kind:?}");
        match payload {
            Payload_::Hex(bytes) => {
                let _ = writeln!(out, "hex = \"\"\"");
                for chunk in bytes.chunks(32) {
                    let _ = writeln!(out, "{}", hex::encode(chunk));
                }
                let _ = writeln!(out, "\"\"\"");
            }
            Payload_::Text(text) => {
                let _ = writeln!(out, "text = '''\n{text}'''");
            }
        }
        match outcome {
            Outcome::Valid { decoded, reencode } => {
                if !reencode {
                    let _ = writeln!(out, "reencode = false");
                }
                let _ = writeln!(out, "decoded = '''\n{decoded}\n'''");
            }
            Outcome::Invalid(error) => {
                let _ = writeln!(out, "error = {error:?}");
            }
        }
        let path = self.dir.join(format!("{:02}-{name}.toml", self.count));
        std::fs::write(&path, out).expect("write vector");
        path
    }

    /// A signed reply that answers the query of vector `answers`: verified at the test clock
    /// with the test key, it passes, or fails with `error` (None: it decodes and verifies).
    fn answer(&mut self, name: &str, description: &str, bytes: &[u8], answers: &str, error: Option<&str>) {
        let path = match error {
            None => {
                self.datagram(name, description, bytes);
                self.dir.join(format!("{:02}-{name}.toml", self.count))
            }
            Some(error) => {
                self.write(name, description, "datagram", Payload_::Hex(bytes.to_vec()), Outcome::Invalid(error.into()))
            }
        };
        let mut text = std::fs::read_to_string(&path).expect("just written");
        let _ = writeln!(text, "answers = {answers:?}");
        std::fs::write(&path, text).expect("write vector");
    }

    fn datagram(&mut self, name: &str, description: &str, bytes: &[u8]) {
        let decoded = Datagram::decode(bytes).expect("valid vector decodes");
        let json = serde_json::to_string_pretty(&decoded).expect("serializes");
        self.write(
            name,
            description,
            "datagram",
            Payload_::Hex(bytes.to_vec()),
            Outcome::Valid { decoded: json, reencode: true },
        );
    }

    fn invalid(&mut self, name: &str, description: &str, bytes: &[u8]) {
        let error = Datagram::decode(bytes).expect_err("invalid vector fails");
        self.write(name, description, "datagram", Payload_::Hex(bytes.to_vec()), Outcome::Invalid(error.name().into()));
    }
}

enum Payload_ {
    Hex(Vec<u8>),
    Text(String),
}

enum Outcome {
    Valid { decoded: String, reencode: bool },
    Invalid(String),
}

fn query_frame_bytes(request_id: u64, body: &[u8], options: &QueryOptions) -> Vec<u8> {
    Frame::query(request_id, body, options).to_vec().expect("query fits")
}

fn binding(query_body: &str) -> Binding {
    Binding { query: digest_of(query_body), issued: NOW, expires: NOW + 300 }
}

fn payload(url: &'static str, content: &str) -> Payload<'static> {
    Payload { url: Cow::Borrowed(url), size: content.len() as u64, sha256: digest_of(content) }
}

fn reply_bytes(response: &Response<'_>, request_id: u64, shape: ReplyShape) -> (Vec<u8>, Option<Vec<u8>>) {
    let prepared = prepare_reply(response, &signer(), shape, |sha| {
        vec![format!("https://updates.example.com/doc/{sha}.xml"), format!("https://mirror.example.net/doc/{sha}.xml")]
    })
    .expect("reply prepares");
    let bytes = prepared.frame(request_id, None).to_vec().expect("reply fits");
    (bytes, prepared.document.map(|d| d.bytes))
}

fn main() {
    let dir = Path::new("protocol-spec/vectors");
    std::fs::create_dir_all(dir).expect("vectors folder");
    for entry in std::fs::read_dir(dir).expect("list vectors") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::remove_file(path).expect("remove old vector");
        }
    }
    let mut w = Writer { dir, count: 0, written: 0 };

    // 1. Minimal query.
    let minimal = Query::new(vec![QueryModule { id: "core".into(), version: Some(v("1.2")), files: vec![] }]).to_vec();
    w.datagram(
        "minimal-query",
        "One module at one version, no cookies, no padding.",
        &query_frame_bytes(0x0102030405060708, &minimal, &QueryOptions::default()),
    );

    // 2. Multi-module query with file entries and cookies.
    let multi = Query::new(vec![
        QueryModule { id: "main-program".into(), version: Some(v("3.1.0")), files: vec![] },
        QueryModule {
            id: "antivirus-db".into(),
            version: Some(v("2024.11.2")),
            files: vec![
                QueryFile { id: "db/signatures.rec".into(), version: v("2024.11.2") },
                QueryFile { id: "db/whitelist.rec".into(), version: v("2024.10.1") },
            ],
        },
        QueryModule { id: "pdf-plugin".into(), version: None, files: vec![] },
    ])
    .to_vec();
    let multi_text = String::from_utf8(multi.clone()).expect("utf8");
    let secret = CookieSecret([0x42; 32]);
    let client_cookie = ClientCookie(*b"\x11\x22\x33\x44\x55\x66\x77\x88");
    let server_cookie = make_server_cookie(&secret, &client_cookie, "127.0.0.1".parse().expect("ip"), NOW);
    let options =
        QueryOptions { client_cookie: Some(client_cookie), server_cookie: Some(server_cookie), ..Default::default() };
    w.datagram(
        "multi-module-query",
        "Three modules: one module-level entry, one with two file-level entries (frequent files), one not installed (no version); client and server cookies (the server cookie made for 127.0.0.1 at the test clock with the test cookie secret).",
        &query_frame_bytes(0x1111_2222_3333_4444, &multi, &options),
    );

    // 3. Padded query asking for a nonce-bound signature.
    let nonce = Nonce(std::array::from_fn(|i| 0xa0 + i as u8));
    let options = QueryOptions { nonce: Some(nonce), pad_to: 342, ..Default::default() };
    w.datagram(
        "padded-nonce-query",
        "The minimal query padded with zeros to 342 bytes (so any reply is within 3x) and asking for a nonce-bound signature.",
        &query_frame_bytes(0x0a0b_0c0d_0e0f_1011, &minimal, &options),
    );
    let minimal_text = String::from_utf8(minimal.clone()).expect("utf8");

    // 4. Up-to-date response.
    let current = Response {
        binding: binding(&minimal_text),
        base: None,
        compact: false,
        modules: vec![ModuleAnswer::new("core", Status::Current, Some(v("1.2")))],
    };
    w.datagram("up-to-date-response", "Answer to vector 01: module core is current at 1.2. Signed with the test key, echo-bound (for = SHA-256 of vector 01's body).", &reply_bytes(&current, 0x0102030405060708, ReplyShape::default()).0);

    // 5. Package response.
    let mut main = ModuleAnswer::new("core", Status::Update, Some(v("1.3")));
    main.forced = true;
    main.floor = Some(v("1.3"));
    main.upgrade = UpgradeInfo::Package(Package {
        payload: payload("https://updates.example.com/p/core-1.3.0-setup.exe", "core 1.3 installer"),
        args: Some("/S /norestart".into()),
    });
    let package = Response { binding: binding(&minimal_text), base: None, compact: false, modules: vec![main] };
    w.datagram(
        "package-response",
        "core 1.2 -> 1.3 by install package (a critical file changed, [0082]); forced, floor 1.3; installer arguments.",
        &reply_bytes(&package, 0x0102030405060708, ReplyShape::default()).0,
    );

    // 6. File list with all three modes.
    let mut db = ModuleAnswer::new("antivirus-db", Status::Update, Some(v("2024.11.3")));
    db.upgrade = UpgradeInfo::Files(vec![
        FileEntry {
            id: "db/signatures.rec".into(),
            version: v("2024.11.3"),
            frequent: true,
            executable: false,
            action: FileAction::Incremental {
                payload: payload("f/6b1c.rec", "full signatures"),
                delta: Delta { from: v("2024.11.2"), payload: payload("d/77aa.delta", "signatures delta") },
            },
            patch: None,
        },
        FileEntry {
            id: "bin/scan.cfg".into(),
            version: v("2024.11.3"),
            frequent: false,
            executable: false,
            action: FileAction::Replace(payload("f/93e0.cfg", "scan config")),
            patch: None,
        },
        FileEntry {
            id: "db/legacy.rec".into(),
            version: v("2024.11.3"),
            frequent: false,
            executable: false,
            action: FileAction::Delete,
            patch: None,
        },
    ]);
    let files = Response {
        binding: binding(&multi_text),
        base: Some("https://cdn.example.com/".into()),
        compact: false,
        modules: vec![db],
    };
    w.datagram("file-list-response", "A file list with one file of each mode: incremental (with its record delta and the whole file as fallback, frequent), replace, delete; relative URLs resolved against base.", &reply_bytes(&files, 0x1111_2222_3333_4444, ReplyShape::default()).0);

    // 7. Dependencies.
    let mut plugin = ModuleAnswer::new("pdf-plugin", Status::Update, Some(v("2.0")));
    plugin.upgrade = UpgradeInfo::Files(vec![FileEntry {
        id: "plugins/pdf/render.js".into(),
        version: v("2.0"),
        frequent: false,
        executable: false,
        action: FileAction::Replace(payload("f/11.js", "render")),
        patch: None,
    }]);
    plugin.requires = vec![Requires { id: "main-module".into(), min: v("5.1") }];
    let mut main_module = ModuleAnswer::new("main-module", Status::Update, Some(v("5.1")));
    main_module.dependency = true;
    main_module.full = true;
    main_module.upgrade =
        UpgradeInfo::Package(Package { payload: payload("p/mm-5.1.pkg", "main module 5.1"), args: None });
    main_module.requires = vec![Requires { id: "main-program".into(), min: v("3.1") }];
    let mut main_program = ModuleAnswer::new("main-program", Status::Current, Some(v("3.1.0")));
    main_program.frequent = vec!["etc/rules.rec".into()];
    let deps = Response {
        binding: binding(&multi_text),
        base: Some("https://cdn.example.com/".into()),
        compact: false,
        modules: vec![plugin, main_module, main_program],
    };
    w.datagram("dependencies-response", "pdf-plugin needs main-module >= 5.1, which needs main-program >= 3.1 ([0098]-[0100]): main-module is included as a dependency (full upgrade); main-program is current and carries the server's frequent-file hint.", &reply_bytes(&deps, 0x1111_2222_3333_4444, ReplyShape::default()).0);

    // 8/9. Fallback response and its document.
    let mut big = Vec::new();
    for i in 0..12 {
        let mut m = ModuleAnswer::new(format!("plugin-{i:02}"), Status::Update, Some(v("4.0.1")));
        m.upgrade = UpgradeInfo::Package(Package {
            payload: Payload {
                url: format!("p/plugin-{i:02}-4.0.1.pkg").into(),
                size: 1000 + i,
                sha256: Sha256Digest::of(&[i as u8]),
            },
            args: None,
        });
        big.push(m);
    }
    let big = Response {
        binding: binding(&multi_text),
        base: Some("https://cdn.example.com/".into()),
        compact: false,
        modules: big,
    };
    let (bytes, document) = reply_bytes(&big, 0x1111_2222_3333_4444, ReplyShape::default());
    w.datagram("fallback-response", "An answer too large for a datagram: the signed fallback carries the document's size, SHA-256 and two mirrors ([0084]). The document is vector 09.", &bytes);
    let document = String::from_utf8(document.expect("fallback has a document")).expect("utf8");
    let json =
        serde_json::to_string_pretty(&Response::decode(document.as_bytes()).expect("document decodes")).expect("json");
    w.write(
        "fallback-document",
        "The full response document that vector 08 points at (same schema as an inline body).",
        "document",
        Payload_::Text(document),
        Outcome::Valid { decoded: json, reencode: true },
    );

    // 10/11. Errors.
    let mut unsupported = ErrorBody::new(ErrorCode::UnsupportedVersion);
    unsupported.supported = vec![1];
    w.datagram(
        "error-unsupported-version",
        "Error code 2, naming the versions the server speaks.",
        &Frame::error(0x0102030405060708, &unsupported.to_vec()).to_vec().expect("fits"),
    );
    let mut limited = ErrorBody::new(ErrorCode::RateLimited);
    limited.retry_after = Some(30);
    limited.message = Some("too many queries from 192.0.2.1".into());
    w.datagram(
        "error-rate-limited",
        "Error code 3 with retry-after and a message.",
        &Frame::error(0x0102030405060708, &limited.to_vec()).to_vec().expect("fits"),
    );

    // 12. Cookie challenge.
    w.datagram(
        "cookie-challenge",
        "Retry with this server cookie (client cookie echoed).",
        &Frame::cookie_challenge(0x1111_2222_3333_4444, Some(client_cookie), server_cookie).to_vec().expect("fits"),
    );

    // 13. A response of exactly 1024 bytes.
    let exact = exactly_1024(&minimal_text);
    assert_eq!(exact.len(), 1024);
    w.datagram(
        "response-1024-bytes",
        "A response datagram of exactly 1024 bytes, the largest allowed, sent inline.",
        &exact,
    );

    // 14. Nonce-bound response.
    let (bytes, _) =
        reply_bytes(&current, 0x0a0b_0c0d_0e0f_1011, ReplyShape { nonce: Some(nonce), server_cookie: false });
    w.datagram(
        "nonce-bound-response",
        "Answer to vector 03: the nonce is echoed and covered by the signature.",
        &bytes,
    );

    // 15. Forward compatibility.
    let future = r#"<query version-hint="2"><module id="core" version="1.2" channel="beta"><file id="a.txt" version="1"/><attestation alg="x"><blob/></attestation></module><telemetry/></query>"#;
    let bytes = query_frame_bytes(7, future.as_bytes(), &QueryOptions::default());
    let decoded = Datagram::decode(&bytes).expect("forward compatible");
    w.write("forward-compatible-query", "Unknown attributes (version-hint, channel) are ignored and unknown elements (attestation, telemetry) are skipped with their subtree. The datagram re-encodes byte for byte (raw body kept); the body's canonical form drops the unknown parts.", "datagram", Payload_::Hex(bytes.clone()), Outcome::Valid { decoded: serde_json::to_string_pretty(&decoded).expect("json"), reencode: false });

    // 16/17. Records: Figure 9 of the patent.
    let base = RecordFile::from_records(vec![
        Record { id: 1, content: b"alpha" },
        Record { id: 2, content: b"beta" },
        Record { id: 3, content: b"gamma" },
    ])
    .expect("sorted");
    let mut base_bytes = Vec::new();
    base.encode(&mut base_bytes);
    w.write(
        "record-file",
        "A record file with records 1, 2, 3 (Figure 9 before the update).",
        "record-file",
        Payload_::Hex(base_bytes.clone()),
        Outcome::Valid { decoded: records_json(&base), reencode: true },
    );
    let target = RecordFile::from_records(vec![
        Record { id: 1, content: b"ALPHA" },
        Record { id: 3, content: b"gamma" },
        Record { id: 100, content: b"hundred" },
    ])
    .expect("sorted");
    let delta = upgram_core::records::diff(&base, &target);
    let mut delta_bytes = Vec::new();
    delta.encode(&mut delta_bytes);
    w.write("record-delta", "The delta of Figure 9 (SPEC.md section 7.4), byte for byte, applied to vector 16: record 1 replaced by ALPHA, record 2 deleted (empty content), record 100 added with hundred.", "record-delta", Payload_::Hex(delta_bytes), Outcome::Valid { decoded: delta_json(&delta), reencode: true });

    // Invalid inputs.
    let mut too_large = query_frame_bytes(1, &minimal, &QueryOptions { pad_to: 1024, ..Default::default() });
    too_large.push(0);
    w.invalid("invalid-too-large", "1025 bytes: rejected before any parsing.", &too_large);
    let mut bad_magic = query_frame_bytes(1, &minimal, &QueryOptions::default());
    bad_magic[0] = b'X';
    w.invalid("invalid-bad-magic", "Not an upgram datagram: dropped silently.", &bad_magic);
    let mut bad_version = query_frame_bytes(1, &minimal, &QueryOptions::default());
    bad_version[4] = 2;
    w.invalid("invalid-unsupported-version", "Protocol version 2: a server answers with vector 10.", &bad_version);
    let whole = query_frame_bytes(1, &minimal, &QueryOptions::default());
    w.invalid(
        "invalid-truncated",
        "The minimal query cut 5 bytes short of its declared body length.",
        &whole[..whole.len() - 5],
    );
    let doctype = r#"<!DOCTYPE query [<!ENTITY x "boom">]><query><module id="core" version="1.2"/></query>"#;
    w.invalid(
        "invalid-doctype",
        "A DOCTYPE (entity-expansion attack): refused.",
        &query_frame_bytes(1, doctype.as_bytes(), &QueryOptions::default()),
    );
    let entity = r#"<query><module id="&xxe;" version="1.2"/></query>"#;
    w.invalid(
        "invalid-entity",
        "An entity reference other than the five predefined ones.",
        &query_frame_bytes(1, entity.as_bytes(), &QueryOptions::default()),
    );
    let duplicate = r#"<query><module id="core" version="1.2" version="9.9"/></query>"#;
    w.invalid(
        "invalid-duplicate-attribute",
        "The same attribute twice.",
        &query_frame_bytes(1, duplicate.as_bytes(), &QueryOptions::default()),
    );
    let mut padded = query_frame_bytes(1, &minimal, &QueryOptions { pad_to: 100, ..Default::default() });
    let last = padded.len() - 1;
    padded[last] = 1;
    w.invalid("invalid-nonzero-padding", "A padding byte that is not zero.", &padded);
    let mut flagged = Frame::error(1, &unsupported.to_vec()).to_vec().expect("fits");
    flagged[7] = 0x04;
    flagged.extend_from_slice(&[0; 16]);
    w.invalid("invalid-flag-not-allowed", "An error datagram with the NONCE flag (errors carry no trailer).", &flagged);
    let traversal =
        r#"<query><module id="core" version="1.2"><file id="../../etc/passwd" version="1"/></module></query>"#;
    w.invalid(
        "invalid-file-id-traversal",
        "A file id that climbs out of the installation root.",
        &query_frame_bytes(1, traversal.as_bytes(), &QueryOptions::default()),
    );

    // 28. Executable files.
    let mut app = ModuleAnswer::new("core", Status::Update, Some(v("1.3")));
    app.upgrade = UpgradeInfo::Files(vec![
        FileEntry {
            id: "bin/core".into(),
            version: v("1.3"),
            frequent: false,
            executable: true,
            action: FileAction::Replace(payload("f/c0de", "core 1.3 program")),
            patch: None,
        },
        FileEntry {
            id: "share/core.txt".into(),
            version: v("1.3"),
            frequent: false,
            executable: false,
            action: FileAction::Replace(payload("f/7e17", "core 1.3 notes")),
            patch: None,
        },
    ]);
    let executable = Response {
        binding: binding(&minimal_text),
        base: Some("https://updates.example.com/p/".into()),
        compact: false,
        modules: vec![app],
    };
    w.datagram(
        "executable-file-response",
        "Answer to vector 01 by file list: bin/core is executable (exec=\"1\": the client sets its execute bits), share/core.txt is not (no exec: the client clears them), SPEC.md section 4.4.",
        &reply_bytes(&executable, 0x0102030405060708, ReplyShape::default()).0,
    );
    batch_vectors(&mut w, &current, nonce);
    // 40 and up: strict decoding, one body per class of ill-formed XML (SPEC.md §4.1.2, §4.1.3,
    // §4.6, §6.1); numbered from 40 whatever comes before.
    w.count = w.count.max(39);
    let strict_queries: [(&str, &str, &str); 7] = [
        (
            "invalid-unknown-element-attributes",
            "An unknown element's attributes are checked like any others: here one appears twice (SPEC.md section 4.1.3: the limits of section 4.1.2 apply inside unknown elements).",
            r#"<query><module id="core" version="1.2"/><ext a="1" a="2"/></query>"#,
        ),
        (
            "invalid-element-name",
            "An element name that is not an XML name (it starts with a digit), on an element that would otherwise be skipped as unknown (SPEC.md section 4.1.2: well-formed XML 1.0).",
            r#"<query><1/><module id="core" version="1.2"/></query>"#,
        ),
        (
            "invalid-attribute-name",
            "An attribute name that is not an XML name (it starts with a digit), on a known element (SPEC.md section 4.1.2).",
            r#"<query><module id="core" version="1.2" 6=""/></query>"#,
        ),
        (
            "invalid-form-feed-between-elements",
            "A form feed between elements: only SP, TAB, CR and LF are white space (SPEC.md section 4.1.2).",
            "<query>\u{c}<module id=\"core\" version=\"1.2\"/></query>",
        ),
        (
            "invalid-xml-declaration",
            "An XML declaration with version 2.0: only version=\"1.0\", then optionally encoding=\"UTF-8\" and standalone, are allowed (SPEC.md section 4.1.2).",
            r#"<?xml version="2.0"?><query><module id="core" version="1.2"/></query>"#,
        ),
        (
            "invalid-pre-release-too-large",
            "A numeric pre-release identifier of 2^64: like numeric segments, it must be below 2^64 (SPEC.md section 6.1).",
            r#"<query><module id="core" version="1.0-18446744073709551616"/></query>"#,
        ),
        (
            "invalid-root-attribute-no-space",
            "Two attributes of the query root with no white space between them (XML 1.0 STag; SPEC.md section 4.1.2).",
            r#"<query a="1"b="2"><module id="core" version="1.2"/></query>"#,
        ),
    ];
    for (name, description, body) in strict_queries {
        w.invalid(name, description, &query_frame_bytes(1, body.as_bytes(), &QueryOptions::default()));
    }
    let strict_errors: [(&str, &str, &str); 5] = [
        (
            "invalid-entity-in-unknown-element",
            "An undeclared entity in an attribute of an unknown element inside an error body (SPEC.md sections 4.1.2, 4.1.3).",
            r#"<error code="1"><x a="&foo;"/></error>"#,
        ),
        (
            "invalid-no-space-between-attributes",
            "Two attributes with no white space between them (XML 1.0 STag; SPEC.md section 4.1.2).",
            r#"<error code="1"x="2"/>"#,
        ),
        (
            "invalid-nul-in-value",
            "A NUL character in an attribute value: XML 1.0 forbids it, and string values can reach installer arguments (SPEC.md section 4.1.2).",
            "<error code=\"1\" message=\"a\u{0}b\"/>",
        ),
        (
            "invalid-character-reference",
            "A character reference to U+0001, a character XML 1.0 forbids (SPEC.md section 4.1.2).",
            r#"<error code="1" message="&#1;"/>"#,
        ),
        (
            "invalid-supported-order",
            "supported lists protocol versions strictly ascending, each once (SPEC.md section 4.6).",
            r#"<error code="2" supported="2 1"/>"#,
        ),
    ];
    for (name, description, body) in strict_errors {
        w.invalid(name, description, &Frame::error(0x0102030405060708, body.as_bytes()).to_vec().expect("fits"));
    }
    // The BATCH flag belongs to signed replies only (SPEC.md section 3.3): a query with it is
    // refused, not re-encoded without it.
    let mut batch_query =
        query_frame_bytes(7, br#"<query><module id="core" version="1.2"/></query>"#, &QueryOptions::default());
    batch_query[7] |= 0x08;
    w.invalid(
        "invalid-batch-flag-on-query",
        "A query datagram with the BATCH flag: only responses and fallbacks may carry a batch trailer (SPEC.md section 3.3).",
        &batch_query,
    );
    rollout_vectors(&mut w);
    compact_vectors(&mut w);
    spec_agreement_vectors(&mut w);
    report_vectors(&mut w);
    patch_vectors(&mut w);
    module_document_vectors(&mut w);
    println!("wrote {} vectors to {}", w.written, dir.display());
}

/// Vectors 53-59: compact answers (SPEC.md §4.3, §4.4, §10.4 steps 8-9).
fn compact_vectors(w: &mut Writer<'_>) {
    w.count = 52;
    let modules = vec![
        QueryModule { id: "core".into(), version: Some(v("1.2")), files: vec![] },
        QueryModule { id: "tools".into(), version: Some(v("2.0")), files: vec![] },
        QueryModule { id: "viewer".into(), version: Some(v("1.0")), files: vec![] },
    ];
    let query = Query { compact: true, ..Query::new(modules) }.to_vec();
    let query_text = String::from_utf8(query.clone()).expect("utf8");
    w.datagram(
        "compact-query",
        "Three modules at their versions; compact=\"1\": the client understands compact answers (SPEC.md section 4.3).",
        &query_frame_bytes(0x5353_5353_0000_0001, &query, &QueryOptions::default()),
    );
    let mut viewer = ModuleAnswer::new("viewer", Status::Update, Some(v("1.1")));
    viewer.upgrade = UpgradeInfo::Files(vec![FileEntry {
        id: "bin/viewer".into(),
        version: v("1.1"),
        action: FileAction::Replace(payload("store/viewer-1.1", "viewer 1.1")),
        frequent: false,
        executable: true,
        patch: None,
    }]);
    let compact = |query_text: &str, modules: Vec<ModuleAnswer<'static>>| Response {
        binding: binding(query_text),
        base: Some("https://updates.example.com/".into()),
        compact: true,
        modules,
    };
    let answer = compact(&query_text, vec![viewer.clone()]);
    let (bytes, _) = reply_bytes(&answer, 0x5353_5353_0000_0001, ReplyShape::default());
    w.answer(
        "compact-response",
        "The compact answer to vector 53: only viewer, which has an update, is listed; core and tools are current at 1.2 and 2.0, the versions the query asked (SPEC.md section 4.4).",
        &bytes,
        "compact-query",
        None,
    );
    let stranger = ModuleAnswer::new("stranger", Status::Current, Some(v("1.0")));
    let (bytes, _) = reply_bytes(
        &compact(&query_text, vec![viewer.clone(), stranger]),
        0x5353_5353_0000_0001,
        ReplyShape::default(),
    );
    w.answer(
        "invalid-compact-not-asked",
        "A compact answer to vector 53 that lists module stranger, which the query did not ask, without dependency=\"1\": validly signed and bound, refused at verification (SPEC.md section 10.4 step 9).",
        &bytes,
        "compact-query",
        Some("not-asked"),
    );
    let nonce = Nonce(std::array::from_fn(|i| 0xc0 + i as u8));
    let options = QueryOptions { nonce: Some(nonce), pad_to: 342, ..Default::default() };
    w.datagram(
        "compact-nonce-query",
        "Vector 53's body asking for a nonce-bound signature, padded to 342 bytes.",
        &query_frame_bytes(0x5353_5353_0000_0002, &query, &options),
    );
    let shape = ReplyShape { nonce: Some(nonce), server_cookie: false };
    let (bytes, _) = reply_bytes(&answer, 0x5353_5353_0000_0002, shape);
    w.answer(
        "compact-nonce-response",
        "The compact answer of vector 54, nonce-bound for vector 56: the marker is allowed there, as what it covers follows from for, checked in both binding modes (SPEC.md section 4.4).",
        &bytes,
        "compact-nonce-query",
        None,
    );
    let minimal_text = r#"<query><module id="core" version="1.2"/></query>"#;
    let (bytes, _) = reply_bytes(&compact(minimal_text, vec![]), 0x0102030405060708, ReplyShape::default());
    w.answer(
        "invalid-compact-unrequested",
        "A compact answer bound to vector 01, which did not ask for one (no compact=\"1\"): refused at verification (SPEC.md section 10.4 step 8).",
        &bytes,
        "minimal-query",
        Some("unrequested-compact"),
    );
}

/// Vectors 60-69: where an independent implementation found the spec's words and the decoder
/// apart (SPEC.md §4.3, §4.6, §6.1); numbered from 60 whatever comes before.
fn spec_agreement_vectors(w: &mut Writer<'_>) {
    w.count = w.count.max(59);
    let error = Frame::error(0x0102030405060708, br#"<error code="2" supported="1 1"/>"#).to_vec().expect("fits");
    w.invalid(
        "invalid-supported-repeated",
        "supported names each protocol version once: \"1 1\" is refused like \"2 1\" (SPEC.md section 4.6).",
        &error,
    );
    let queries: [(&str, &str, &str); 2] = [
        (
            "invalid-query-repeated-module",
            "A query that lists module core twice: the decoder refuses it and the server answers with malformed-query, not with two answers for core (SPEC.md sections 4.3, 2.6).",
            r#"<query><module id="core" version="1.2"/><module id="core" version="1.3"/></query>"#,
        ),
        (
            "invalid-query-repeated-file",
            "A query that lists file db/a.rec twice in one module (SPEC.md section 4.3); the same file id in two modules is fine.",
            r#"<query><module id="core" version="1.2"><file id="db/a.rec" version="1"/><file id="db/a.rec" version="2"/></module></query>"#,
        ),
    ];
    for (name, description, body) in queries {
        w.invalid(name, description, &query_frame_bytes(1, body.as_bytes(), &QueryOptions::default()));
    }
    let largest = query_frame_bytes(
        1,
        br#"<query><module id="core" version="1.0-18446744073709551615"/></query>"#,
        &QueryOptions::default(),
    );
    w.datagram(
        "pre-release-largest",
        "A numeric pre-release identifier of 2^64 - 1, the largest allowed (SPEC.md section 6.1); vector 45 has 2^64, one more, and is refused.",
        &largest,
    );
}

/// Vectors 64-69 and 90-95: binary patches (SPEC.md §5.12): the query's `patch` attribute, a
/// `<patch>` beside a whole file to replace, and where either is refused.
fn patch_vectors(w: &mut Writer<'_>) {
    w.count = 63;
    let query = Query {
        patch: Some(PATCH_FORMAT_BSDIFF.into()),
        ..Query::new(vec![QueryModule { id: "tool".into(), version: Some(v("1.0")), files: vec![] }])
    }
    .to_vec();
    let query_text = String::from_utf8(query.clone()).expect("utf8");
    w.datagram(
        "patch-query",
        "A client that applies bsdiff patches says so with patch=\"bsdiff\" (SPEC.md sections 4.3 and 5.12).",
        &query_frame_bytes(0x5050_5050_0000_0001, &query, &QueryOptions::default()),
    );
    let mut tool = ModuleAnswer::new("tool", Status::Update, Some(v("1.1")));
    tool.upgrade = UpgradeInfo::Files(vec![FileEntry {
        id: "bin/tool".into(),
        version: v("1.1"),
        action: FileAction::Replace(payload("store/tool-1.1", "tool 1.1 program")),
        frequent: false,
        executable: true,
        patch: Some(FilePatch {
            format: PATCH_FORMAT_BSDIFF.into(),
            from: v("1.0"),
            base_sha256: digest_of("tool 1.0 program"),
            payload: payload("store/tool-1.0-1.1", "a bsdiff patch"),
        }),
    }]);
    let answer = Response {
        binding: binding(&query_text),
        base: Some("https://updates.example.com/".into()),
        compact: false,
        modules: vec![tool.clone()],
    };
    let (bytes, _) = reply_bytes(&answer, 0x5050_5050_0000_0001, ReplyShape::default());
    w.answer(
        "patch-response",
        "The answer to vector 64: bin/tool 1.0 -> 1.1 as a whole file to replace, with a bsdiff patch from file version 1.0 (base-sha256: the SHA-256 of that version) beside it; a client whose file does not hash to base-sha256, or whose patched result does not hash to the file's sha256, fetches the whole file (SPEC.md section 5.12).",
        &bytes,
        "patch-query",
        None,
    );
    let formats = Query {
        patch: Some("zstd bsdiff".into()),
        ..Query::new(vec![QueryModule { id: "tool".into(), version: Some(v("1.0")), files: vec![] }])
    }
    .to_vec();
    w.datagram(
        "patch-query-formats",
        "Two patch formats in order of preference, one this version does not define: the server ignores names it does not know and may send bsdiff (SPEC.md section 5.12).",
        &query_frame_bytes(0x5050_5050_0000_0002, &formats, &QueryOptions::default()),
    );
    let base = "https://updates.example.com/";
    let file_with = |mode: &str, children: &str| {
        format!(
            r#"<response for="{}" issued="{NOW}" expires="{}" base="{base}"><module id="tool" status="update" latest="1.1"><file id="bin/tool" version="1.1" mode="{mode}"{}>{children}</file></module></response>"#,
            digest_of(&query_text),
            NOW + 300,
            if mode == "delete" {
                String::new()
            } else {
                format!(r#" url="store/tool-1.1" size="16" sha256="{}""#, digest_of("tool 1.1 program"))
            },
        )
    };
    let patch = format!(
        r#"<patch format="bsdiff" from="1.0" base-sha256="{}" url="store/tool-1.0-1.1" size="14" sha256="{}"/>"#,
        digest_of("tool 1.0 program"),
        digest_of("a bsdiff patch")
    );
    let no_base = patch.replace(&format!(r#" base-sha256="{}""#, digest_of("tool 1.0 program")), "");
    let bad_responses = [
        (
            "invalid-patch-with-delete",
            "A <patch> in a file entry with mode=\"delete\": a patch is only beside a whole file to replace (SPEC.md section 4.4, R11).",
            file_with("delete", &patch),
        ),
        (
            "invalid-patch-twice",
            "Two <patch> elements in one file entry: at most one (SPEC.md section 4.4, R11).",
            file_with("replace", &format!("{patch}{patch}")),
        ),
    ];
    for (name, description, body) in bad_responses {
        w.invalid(name, description, &signed_response(0x5050_5050_0000_0001, body.as_bytes()));
    }
    w.invalid(
        "invalid-patch-without-base",
        "A <patch> without base-sha256: a client could not tell whether its file is the base (SPEC.md section 4.4).",
        &signed_response(0x5050_5050_0000_0001, file_with("replace", &no_base).as_bytes()),
    );

    w.count = 89;
    let in_module = format!(
        r#"<response for="{}" issued="{NOW}" expires="{}"><module id="tool" status="current" latest="1.0">{patch}</module></response>"#,
        digest_of(&query_text),
        NOW + 300,
    )
    .replace("url=\"store/", "url=\"https://updates.example.com/store/");
    w.invalid(
        "invalid-patch-in-module",
        "A <patch> directly in a <module>: patch is a known element name, so out of place it is an error, not an extension to skip (SPEC.md section 4.1.3).",
        &signed_response(0x5050_5050_0000_0001, in_module.as_bytes()),
    );
    let bad_format = file_with("replace", &patch.replace(r#"format="bsdiff""#, r#"format="bs/diff""#));
    w.invalid(
        "invalid-patch-format-name",
        "A patch format name with `/`: a format name is an ID (SPEC.md sections 4.2 and 4.4).",
        &signed_response(0x5050_5050_0000_0001, bad_format.as_bytes()),
    );
    let nine = (1..=9).map(|i| format!("f{i}")).collect::<Vec<_>>().join(" ");
    let bad_queries = [
        (
            "invalid-query-patch-empty",
            "An empty patch attribute: it names 1 to 8 formats (SPEC.md section 4.3).".to_owned(),
            r#"<query patch=""><module id="tool" version="1.0"/></query>"#.to_owned(),
        ),
        (
            "invalid-query-patch-double-space",
            "Two spaces between format names: names are separated by single spaces (SPEC.md section 4.3).".to_owned(),
            r#"<query patch="zstd  bsdiff"><module id="tool" version="1.0"/></query>"#.to_owned(),
        ),
        (
            "invalid-query-patch-too-many",
            "Nine patch format names: at most 8 (SPEC.md sections 4.3 and 10.8).".to_owned(),
            format!(r#"<query patch="{nine}"><module id="tool" version="1.0"/></query>"#),
        ),
    ];
    for (name, description, body) in bad_queries {
        w.invalid(
            name,
            &description,
            &query_frame_bytes(0x5050_5050_0000_0003, body.as_bytes(), &QueryOptions::default()),
        );
    }
    w.count = w.count.max(95);
}

/// A response datagram with `body` as it is, signed alone with the test key: how a vector
/// carries a response body the encoder would never write.
fn signed_response(request_id: u64, body: &[u8]) -> Vec<u8> {
    let block = signer().sign(MessageKind::Response, None, body);
    Frame::reply(MessageKind::Response, request_id, body, None, block).to_vec().expect("reply fits")
}

/// Vectors 70-79: the channel and the rollout bucket of a query (SPEC.md section 4.3).
fn rollout_vectors(w: &mut Writer<'_>) {
    w.count = 69;
    let on_channel = Query {
        compact: false,
        channel: Some("beta".into()),
        bucket: Some(37),
        module_docs: false,
        modules: vec![QueryModule { id: "core".into(), version: Some(v("1.2")), files: vec![] }],
        patch: None,
    }
    .to_vec();
    w.datagram(
        "query-channel-bucket",
        "A query on channel beta from an installation in rollout bucket 37 (SPEC.md section 4.3).",
        &query_frame_bytes(0x0102030405060708, &on_channel, &QueryOptions::default()),
    );
    let edges = Query {
        compact: false,
        channel: Some("stable".into()),
        bucket: Some(BUCKETS - 1),
        module_docs: false,
        modules: vec![QueryModule { id: "core".into(), version: None, files: vec![] }],
        patch: None,
    }
    .to_vec();
    w.datagram(
        "query-last-bucket",
        "The default channel named explicitly, and the highest bucket, 99 (SPEC.md section 4.3).",
        &query_frame_bytes(0x0102030405060709, &edges, &QueryOptions::default()),
    );
    let bucket_only = Query {
        compact: false,
        channel: None,
        bucket: Some(0),
        module_docs: false,
        modules: vec![QueryModule { id: "core".into(), version: Some(v("1.2")), files: vec![] }],
        patch: None,
    }
    .to_vec();
    w.datagram(
        "query-bucket-without-channel",
        "Bucket 0 without a channel: the installation follows the default channel, stable (SPEC.md section 4.3).",
        &query_frame_bytes(0x010203040506070a, &bucket_only, &QueryOptions::default()),
    );
    let invalid = [
        (
            "invalid-bucket-too-large",
            "Bucket 100: buckets are 0 to 99 (SPEC.md section 4.3).",
            r#"<query bucket="100"><module id="core" version="1.2"/></query>"#,
        ),
        (
            "invalid-bucket-leading-zero",
            "Bucket 07: a U8 has no leading zero (SPEC.md sections 4.2 and 4.3).",
            r#"<query bucket="07"><module id="core" version="1.2"/></query>"#,
        ),
        (
            "invalid-bucket-negative",
            "Bucket -1: not a decimal number (SPEC.md sections 4.2 and 4.3).",
            r#"<query bucket="-1"><module id="core" version="1.2"/></query>"#,
        ),
        (
            "invalid-channel-empty",
            "An empty channel: a channel is an ID, 1 to 128 bytes (SPEC.md section 4.3).",
            r#"<query channel=""><module id="core" version="1.2"/></query>"#,
        ),
        (
            "invalid-channel-slash",
            "A channel with `/`: a channel is an ID (SPEC.md sections 4.2 and 4.3).",
            r#"<query channel="beta/1"><module id="core" version="1.2"/></query>"#,
        ),
    ];
    for (name, description, body) in invalid {
        w.invalid(name, description, &query_frame_bytes(0x0102030405060708, body.as_bytes(), &QueryOptions::default()));
    }
}

/// Vectors 78-89: install reports and their acknowledgement (SPEC.md §4.7, §5.11).
fn report_vectors(w: &mut Writer<'_>) {
    w.count = 77;
    let outcome = |attempt, module: &'static str, from: Option<&'static str>, to, result, code| ReportOutcome {
        attempt,
        module: module.into(),
        from: from.map(Cow::Borrowed),
        to: Cow::Borrowed(to),
        result,
        code,
    };
    let every_kind = Report {
        channel: Some("beta".into()),
        band: Some(3),
        outcomes: vec![
            outcome(0x1a2b3c4d5e6f7081, "core", Some("1.2"), "1.3", OutcomeKind::Applied, None),
            outcome(2, "tools", Some("2.0"), "2.1", OutcomeKind::Failed, Some(FailureCode::Download)),
            outcome(3, "driver", Some("4.1"), "4.2", OutcomeKind::Deferred, None),
            outcome(
                18446744073709551615,
                "db",
                Some("7"),
                "8-rc.1",
                OutcomeKind::RolledBack,
                Some(FailureCode::Installer),
            ),
        ],
    }
    .to_vec();
    let client_cookie = ClientCookie(*b"\x11\x22\x33\x44\x55\x66\x77\x88");
    let secret = CookieSecret([0x42; 32]);
    let server_cookie = make_server_cookie(&secret, &client_cookie, "127.0.0.1".parse().expect("ip"), NOW);
    let report_bytes = |request_id, body: &[u8], cookies: bool| {
        let (client, server) = if cookies { (Some(client_cookie), Some(server_cookie)) } else { (None, None) };
        Frame::report(request_id, body, client, server).to_vec().expect("report fits")
    };
    w.datagram(
        "report-every-outcome",
        "An install report on channel beta from bucket band 3 (buckets 30-39) with one outcome of each kind: applied, failed (download), deferred, rolled back (installer); sent with the client cookie and the server cookie that validates it (SPEC.md sections 4.7 and 5.11).",
        &report_bytes(0x1112131415161718, &every_kind, true),
    );
    let first_install = Report {
        channel: None,
        band: None,
        outcomes: vec![outcome(42, "core", None, "1.0", OutcomeKind::Applied, None)],
    }
    .to_vec();
    w.datagram(
        "report-first-install",
        "The smallest report: a first install of core 1.0 (no `from`), default channel, no bucket, no cookies (a server answers it with a cookie challenge; SPEC.md section 5.11).",
        &report_bytes(0x1112131415161719, &first_install, false),
    );
    w.datagram(
        "report-ack",
        "The acknowledgement of vector 78: the report's request id, no body, no trailer; 20 bytes, never more than the report (SPEC.md sections 3.2 and 5.11).",
        &Frame::report_ack(0x1112131415161718).to_vec().expect("fits"),
    );
    let mut too_many = String::from("<report>");
    for attempt in 0..17 {
        let _ = write!(too_many, r#"<outcome attempt="{attempt}" module="a" to="1" result="applied"/>"#);
    }
    too_many.push_str("</report>");
    let invalid = [
        (
            "invalid-report-too-many-outcomes",
            "Seventeen outcomes: a report holds at most 16 (SPEC.md section 4.7).",
            too_many.as_str(),
        ),
        (
            "invalid-report-unknown-result",
            "Result `crashed`: results are applied, failed, deferred and rolled-back (SPEC.md section 4.7).",
            r#"<report><outcome attempt="1" module="core" from="1.2" to="1.3" result="crashed"/></report>"#,
        ),
        (
            "invalid-report-band-too-large",
            "Band 10: bands are 0 to 9, a bucket divided by ten (SPEC.md section 4.7).",
            r#"<report band="10"><outcome attempt="1" module="core" from="1.2" to="1.3" result="applied"/></report>"#,
        ),
        (
            "invalid-report-failed-without-code",
            "A failed outcome without `code`: failed and rolled-back outcomes say why (SPEC.md section 4.7).",
            r#"<report><outcome attempt="1" module="core" from="1.2" to="1.3" result="failed"/></report>"#,
        ),
        (
            "invalid-report-code-on-applied",
            "An applied outcome with a `code`: only failed and rolled-back outcomes carry one (SPEC.md section 4.7).",
            r#"<report><outcome attempt="1" module="core" from="1.2" to="1.3" result="applied" code="other"/></report>"#,
        ),
        (
            "invalid-report-repeated-attempt",
            "One attempt id twice in a report: each attempt is reported once per report (SPEC.md section 4.7).",
            r#"<report><outcome attempt="5" module="a" to="1" result="applied"/><outcome attempt="5" module="b" to="1" result="applied"/></report>"#,
        ),
        (
            "invalid-report-empty",
            "A report without outcomes: it holds at least one (SPEC.md section 4.7).",
            r#"<report channel="beta"/>"#,
        ),
    ];
    for (name, description, body) in invalid {
        w.invalid(name, description, &report_bytes(0x1112131415161718, body.as_bytes(), false));
    }
    let mut ack_with_body = Frame::report_ack(0x1112131415161718).to_vec().expect("fits");
    ack_with_body[17] = 1;
    ack_with_body.push(b' ');
    w.invalid(
        "invalid-report-ack-with-body",
        "A report acknowledgement with a one-byte body: acknowledgements have none (SPEC.md section 3.2).",
        &ack_with_body,
    );
    let mut with_nonce = report_bytes(0x1112131415161719, &first_install, false);
    with_nonce[7] |= 0x04;
    with_nonce.extend_from_slice(&[0x5a; 16]);
    w.invalid(
        "invalid-report-nonce-flag",
        "A report with the NONCE flag: reports are not answered with signatures, only cookies are allowed (SPEC.md section 3.3).",
        &with_nonce,
    );
    assert_eq!(w.count, 89, "report vectors are numbered 78-89");
}

/// Vectors 30-37: batch-signed replies (SPEC.md §3.4, §10.3.1) and the ways they fail.
///
/// One batch of three answers ready at the same time: vector 04's answer to vector 01 (leaf 0),
/// the same answer nonce-bound for vector 03 (leaf 1), and an answer to another client's query
/// (leaf 2). Three leaves make a tree of depth 2 whose fourth leaf is empty.
fn batch_vectors(w: &mut Writer<'_>, current: &Response<'_>, nonce: Nonce) {
    w.count = 29;
    let other_query = Query::new(vec![QueryModule { id: "tools".into(), version: Some(v("2.0")), files: vec![] }]);
    let other_text = String::from_utf8(other_query.to_vec()).expect("utf8");
    let other = Response {
        binding: binding(&other_text),
        base: None,
        compact: false,
        modules: vec![ModuleAnswer::new("tools", Status::Current, Some(v("2.0")))],
    };
    let first = current.to_vec();
    let third = other.to_vec();
    let item = |nonce, body| BatchItem { kind: MessageKind::Response, nonce, body, room: usize::MAX };
    let blocks = signer().sign_batch(&[item(None, &first), item(Some(&nonce), &first), item(None, &third)]);
    let reply = |body: &[u8], nonce: Option<Nonce>, request_id: u64, block: SignatureBlock| {
        Frame::reply(MessageKind::Response, request_id, body, nonce, block).to_vec().expect("reply fits")
    };
    let batched = reply(&first, None, 0x0102030405060708, blocks[0]);
    w.answer(
        "batch-signed-response",
        "Vector 04's answer to vector 01, signed as leaf 0 of a batch of three (depth 2): BATCH flag; the 66-byte batch trailer carries depth 2, index 0 and the audit path (leaf 1, then the node over leaf 2 and the empty leaf), not the root: the client recomputes the Merkle root from the answer and the path, and the Ed25519 signature must verify over it (SPEC.md sections 3.4 and 10.3.1).",
        &batched,
        "minimal-query",
        None,
    );
    w.answer(
        "batch-signed-nonce-response",
        "Leaf 1 of the same batch: the same answer nonce-bound for vector 03; the nonce is echoed and hashed into the leaf. Same signature as vector 30: its path leads to the same root.",
        &reply(&first, Some(nonce), 0x0a0b_0c0d_0e0f_1011, blocks[1]),
        "padded-nonce-query",
        None,
    );
    // The depth byte follows the key id and signature.
    let at = 20 + first.len() + SignatureBlock::LEN;
    let mut tampered = batched.clone();
    tampered[at + 2 + 32 + 7] ^= 0x01;
    w.answer(
        "invalid-batch-tampered-path",
        "Vector 30 with one bit of the second audit-path hash flipped: the path from the answer's leaf leads to another root, over which the signature does not verify (SPEC.md section 10.4 step 3a).",
        &tampered,
        "minimal-query",
        Some("bad-path"),
    );
    let mut moved = batched.clone();
    moved[at + 1] = 4;
    w.invalid(
        "invalid-batch-wrong-position",
        "Vector 30 claiming leaf index 4 in a tree of depth 2 (4 leaves): not a position of the tree (SPEC.md section 3.6 step 8).",
        &moved,
    );
    let mut longer = batched.clone();
    longer[at] = 7;
    longer.extend_from_slice(&[0x5a; 5 * 32]);
    w.invalid(
        "invalid-batch-path-too-long",
        "Vector 30 with an audit path of 7 hashes, more than the 6 a batch of at most 64 answers needs (SPEC.md sections 3.4 and 10.8).",
        &longer,
    );
    let mut empty = batched[..at + 2].to_vec();
    empty[at] = 0;
    w.invalid(
        "invalid-batch-empty-path",
        "Vector 30 with depth 0 and no path: a batch of one is signed alone, without BATCH (SPEC.md section 3.4).",
        &empty,
    );
    w.answer(
        "invalid-batch-swapped-answer",
        "Leaf 2's answer (to another client's query) under leaf 0's batch trailer: from this answer at index 0 the path leads to another root than the signed one (SPEC.md section 10.4 step 3a).",
        &reply(&third, None, 0x0102030405060708, blocks[0]),
        "minimal-query",
        Some("bad-path"),
    );
    let mut forged = batched.clone();
    forged[at - 64 + 7] ^= 0x01;
    w.answer(
        "invalid-batch-tampered-signature",
        "Vector 30 with one bit of the Ed25519 signature flipped: the answer and its path lead to the genuine root, the signature does not verify over it. Without a carried root this cannot be told from an altered path: a batch-signed reply that fails is bad-path, never bad-signature (SPEC.md sections 10.3.1 and 10.4 step 3a).",
        &forged,
        "minimal-query",
        Some("bad-path"),
    );
    // A tree whose leaves sit at different depths: the answer with room for one path hash
    // only is the root's left child, the other three answers fill the right half at depth 3.
    let tight = |body| BatchItem { kind: MessageKind::Response, nonce: None, body, room: BatchProof::overhead(1) };
    let blocks = signer().sign_batch(&[
        tight(&first),
        item(Some(&nonce), &first),
        item(None, &third),
        item(Some(&nonce), &third),
    ]);
    w.answer(
        "batch-signed-shallow-leaf",
        "Vector 04's answer to vector 01 as leaf 0 at depth 1 of a batch whose three other answers sit at depth 3 (a tree need not be balanced; SPEC.md section 10.3.1): the 34-byte trailer carries depth 1, index 0 and one path hash, the node over the right half of the tree. The client computes node(leaf, path[0]) and checks the signature over it, exactly as for any other depth.",
        &reply(&first, None, 0x0102030405060708, blocks[0]),
        "minimal-query",
        None,
    );
    assert_eq!(w.count, 38, "batch vectors are numbered 30-38");
}

/// A response whose datagram is exactly 1024 bytes: a file list whose last URL is stretched.
fn exactly_1024(query_text: &str) -> Vec<u8> {
    for stretch in 0..1024 {
        let mut m = ModuleAnswer::new("core", Status::Update, Some(v("1.3")));
        let mut entries = Vec::new();
        for i in 0..3 {
            entries.push(FileEntry {
                id: format!("lib/part-{i}.dat").into(),
                version: v("1.3"),
                frequent: false,
                executable: false,
                action: FileAction::Replace(Payload {
                    url: format!("https://updates.example.com/f/{i}/part.dat").into(),
                    size: 4096,
                    sha256: Sha256Digest::of(&[i]),
                }),
                patch: None,
            });
        }
        entries.push(FileEntry {
            id: "lib/tail.dat".into(),
            version: v("1.3"),
            frequent: false,
            executable: false,
            action: FileAction::Replace(Payload {
                url: format!("https://updates.example.com/f/{}", "x".repeat(stretch)).into(),
                size: 1,
                sha256: Sha256Digest::of(b"tail"),
            }),
            patch: None,
        });
        m.upgrade = UpgradeInfo::Files(entries);
        let response = Response { binding: binding(query_text), base: None, compact: false, modules: vec![m] };
        let (bytes, document) = reply_bytes(&response, 0x0102030405060708, ReplyShape::default());
        if document.is_none() && bytes.len() == 1024 {
            return bytes;
        }
    }
    panic!("no stretch gives exactly 1024 bytes");
}

fn records_json(file: &RecordFile<'_>) -> String {
    let records: Vec<serde_json::Value> = file
        .records()
        .iter()
        .map(|r| serde_json::json!({ "id": r.id, "content": String::from_utf8_lossy(r.content) }))
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({ "records": records })).expect("json")
}

fn delta_json(delta: &RecordDelta<'_>) -> String {
    let entries: Vec<serde_json::Value> = delta
        .entries()
        .iter()
        .map(|DeltaEntry { id, change }| match change {
            Change::Delete => serde_json::json!({ "id": id, "change": "delete" }),
            Change::Put(content) => {
                serde_json::json!({ "id": id, "change": "put", "content": String::from_utf8_lossy(content) })
            }
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "base_sha256": hex::encode(delta.base_sha256()),
        "result_sha256": hex::encode(delta.result_sha256()),
        "entries": entries,
    }))
    .expect("json")
}

/// Vectors 100-106: fallbacks that point at module documents (SPEC.md §4.3, §4.5, §8.5).
fn module_document_vectors(w: &mut Writer<'_>) {
    w.count = 99;
    let ids = ["core", "ui-shell", "pdf-plugin", "spell-en", "spell-de", "codecs", "fonts-cjk", "help-docs"];
    let query = Query {
        module_docs: true,
        ..Query::new(
            ids.iter().map(|id| QueryModule { id: (*id).into(), version: Some(v("1.0")), files: vec![] }).collect(),
        )
    }
    .to_vec();
    w.datagram(
        "query-module-docs",
        "A query of eight modules from a client that follows fallbacks to module documents (docs=\"module\", SPEC.md sections 4.3 and 8.5).",
        &query_frame_bytes(0x6465_6d6f_6d6f_6473, &query, &QueryOptions::default()),
    );
    // Each module's answer: an update to 2.0 as a file list of six files, too large together
    // for a datagram.
    let answers: Vec<ModuleAnswer<'static>> = ids
        .iter()
        .map(|id| {
            let mut answer = ModuleAnswer::new(*id, Status::Update, Some(v("2.0")));
            let files = (0..6)
                .map(|i| {
                    let content = format!("{id} file {i} at 2.0");
                    FileEntry {
                        id: format!("lib/{id}-{i}.bin").into(),
                        version: v("2.0"),
                        frequent: false,
                        executable: false,
                        action: FileAction::Replace(Payload {
                            url: format!("store/{}", digest_of(&content)).into(),
                            size: content.len() as u64,
                            sha256: digest_of(&content),
                        }),
                        patch: None,
                    }
                })
                .collect();
            answer.upgrade = UpgradeInfo::Files(files);
            answer
        })
        .collect();
    let documents: Vec<Vec<u8>> = answers
        .iter()
        .map(|answer| {
            let mut out = Vec::new();
            answer.encode(&mut out);
            out
        })
        .collect();
    let binding = binding(std::str::from_utf8(&query).expect("utf8"));
    let base = "https://updates.example.com/";
    let named = ids
        .iter()
        .zip(&documents)
        .map(|(id, d)| ModuleDocument { module: (*id).into(), size: d.len() as u64, sha256: Sha256Digest::of(d) })
        .collect();
    let unsigned = encode_module_fallback(binding, base, false, named, ReplyShape::default())
        .expect("eight module documents fit a datagram");
    let signature = signer().sign(unsigned.kind, None, &unsigned.body);
    let prepared = unsigned.signed(signature);
    let pointer = prepared.frame(0x6465_6d6f_6d6f_6473, None).to_vec().expect("fits");
    assert!(pointer.len() <= 1024);
    w.datagram(
        "fallback-module-documents",
        &format!(
            "The signed answer to vector 100: a fallback naming eight module documents by size and SHA-256 (base64url), each at {base}doc/<sha256 in hex>.xml; {} bytes with its signature (SPEC.md section 8.5). Vector 102 is the answer they assemble to.",
            pointer.len()
        ),
        &pointer,
    );
    let Ok(upgram_core::Message::Fallback(signed)) = Datagram::decode(&pointer).map(|d| d.message) else {
        panic!("a fallback")
    };
    let assembled = signed.body_unverified().open_module_documents(&documents, NOW).expect("the documents open");
    let json = serde_json::to_string_pretty(&Response::decode(&assembled).expect("decodes")).expect("json");
    w.write(
        "fallback-module-documents-answer",
        "The answer vector 101's eight module documents assemble to: its binding, base and compact flag, then each document (one <module> element, served as it is) in order (SPEC.md section 8.5).",
        "document",
        Payload_::Text(String::from_utf8(assembled).expect("utf8")),
        Outcome::Valid { decoded: json, reencode: true },
    );
    let text = String::from_utf8(unsigned_body(&pointer)).expect("utf8");
    let first_doc = text.find("<doc ").expect("a doc");
    let variants = [
        (
            "invalid-fallback-mirror-and-doc",
            "A fallback with both a mirror and module documents: the two forms do not mix (unexpected-element, SPEC.md section 4.5).",
            text.replacen("<doc ", "<mirror url=\"https://updates.example.com/doc/x.xml\"/><doc ", 1),
        ),
        (
            "invalid-fallback-doc-padded-hash",
            "A module document whose h is padded base64url (44 characters): only the 43-character unpadded form is valid (invalid-attribute, SPEC.md section 4.5).",
            {
                let h = text[first_doc..].find(" h=\"").expect("h") + first_doc + 4;
                format!("{}{}=\"{}", &text[..h], &text[h..h + 43], &text[h + 44..])
            },
        ),
        (
            "invalid-fallback-docs-without-base",
            "Module documents without base: their URLs cannot be derived (missing-attribute, SPEC.md section 4.5).",
            text.replacen(&format!(" base=\"{base}\""), "", 1),
        ),
        (
            "invalid-fallback-docs-with-size",
            "Module documents with the single-document attribute size on the fallback (invalid-attribute, SPEC.md section 4.5).",
            text.replacen(" base=", " size=\"100\" base=", 1),
        ),
    ];
    for (name, description, body) in variants {
        let bytes = body.into_bytes();
        let signature = signer().sign(MessageKind::Fallback, None, &bytes);
        let frame = Frame {
            kind: MessageKind::Fallback,
            request_id: 0x6465_6d6f_6d6f_6473,
            body: &bytes,
            client_cookie: None,
            server_cookie: None,
            nonce: None,
            signature: Some(signature),
            padding: 0,
        };
        w.invalid(name, description, &frame.to_vec().expect("fits"));
    }
}

/// The body of a datagram (after the 20-byte header, of the length the header gives).
fn unsigned_body(datagram: &[u8]) -> Vec<u8> {
    let len = usize::from(u16::from_be_bytes([datagram[16], datagram[17]]));
    datagram[20..20 + len].to_vec()
}

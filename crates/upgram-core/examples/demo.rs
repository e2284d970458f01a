//! The upgram exchange end to end, in memory, through the real codec: what a client and a
//! server say to each other, byte counts included. Run: `cargo run -p upgram-core --example demo`.
//!
//! The client has `core` 1.2, `antivirus-db` 2024.11.2 (with one frequently updated file) and
//! `pdf-plugin` 1.0. The server's releases (embedded below) offer a package for `core`, a file
//! list with all three modes for `antivirus-db`, and `pdf-plugin` 2.0, which needs a newer
//! `main-module`. The first query is small and its server cookie missing, so the server may not
//! answer with more than 3x its size: it sends a cookie challenge, and the client asks again
//! with the cookie. The full check's answer is too large for a datagram, so it arrives as a
//! signed fallback pointing at a document, which the client fetches (here: from memory), checks
//! and plans.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use upgram_core::body::{
    Binding, Delta, FileAction, FileEntry, ModuleAnswer, Package, Payload, Query, QueryFile, QueryModule, Requires,
    Response, Status, UpgradeInfo,
};
use upgram_core::cookie::{
    ClientCookie, CookieCheck, CookieSecret, check_server_cookie, make_server_cookie, within_amplification_limit,
};
use upgram_core::fallback::{FallbackDocument, ReplyShape, prepare_reply};
use upgram_core::message::{Expectation, check_binding};
use upgram_core::plan::{Choice, Offer, plan};
use upgram_core::sign::{KeyRing, ReplySigner};
use upgram_core::version::Version;
use upgram_core::wire::{Frame, QueryOptions};
use upgram_core::{Datagram, Message, Sha256Digest};

const NOW: u64 = 1_764_000_000;

fn v(text: &'static str) -> Version<'static> {
    Version::parse(text).expect("demo versions are valid")
}

fn payload(url: String, content: &[u8]) -> Payload<'static> {
    Payload { url: url.into(), size: content.len() as u64, sha256: Sha256Digest::of(content) }
}

/// The server's answer for one module, from its (embedded) releases.
fn answer_for(module: &QueryModule<'_>) -> Vec<ModuleAnswer<'static>> {
    match module.id.as_ref() {
        "core" => {
            let mut m = ModuleAnswer::new("core", Status::Update, Some(v("1.3")));
            m.forced = true;
            m.floor = Some(v("1.3"));
            m.upgrade = UpgradeInfo::Package(Package {
                payload: payload("p/core-1.3.pkg".into(), b"core 1.3"),
                args: Some("--quiet".into()),
            });
            vec![m]
        }
        "antivirus-db" => {
            let mut m = ModuleAnswer::new("antivirus-db", Status::Update, Some(v("2024.11.3")));
            let mut files: Vec<FileEntry<'static>> = (0..9)
                .map(|i| FileEntry {
                    id: format!("db/part-{i:02}.dat").into(),
                    version: v("2024.11.3"),
                    frequent: false,
                    executable: false,
                    action: FileAction::Replace(payload(
                        format!("f/part-{i:02}-2024.11.3.dat"),
                        format!("part {i}").as_bytes(),
                    )),
                    patch: None,
                })
                .collect();
            files.push(FileEntry {
                id: "db/signatures.rec".into(),
                version: v("2024.11.3"),
                frequent: true,
                executable: false,
                action: FileAction::Incremental {
                    payload: payload("f/signatures-2024.11.3.rec".into(), b"all signatures"),
                    delta: Delta {
                        from: v("2024.11.2"),
                        payload: payload("d/signatures-2024.11.2-2024.11.3.delta".into(), b"delta"),
                    },
                },
                patch: None,
            });
            files.push(FileEntry {
                id: "db/legacy.rec".into(),
                version: v("2024.11.3"),
                frequent: false,
                executable: false,
                action: FileAction::Delete,
                patch: None,
            });
            m.upgrade = UpgradeInfo::Files(files);
            vec![m]
        }
        "pdf-plugin" => {
            let mut m = ModuleAnswer::new("pdf-plugin", Status::Update, Some(v("2.0")));
            m.upgrade = UpgradeInfo::Files(vec![FileEntry {
                id: "plugins/pdf/render.bin".into(),
                version: v("2.0"),
                frequent: false,
                executable: false,
                action: FileAction::Replace(payload("f/render-2.0.bin".into(), b"renderer 2.0")),
                patch: None,
            }]);
            m.requires = vec![Requires { id: "main-module".into(), min: v("5.1") }];
            let mut dep = ModuleAnswer::new("main-module", Status::Update, Some(v("5.1")));
            dep.dependency = true;
            dep.upgrade = UpgradeInfo::Package(Package {
                payload: payload("p/main-module-5.1.pkg".into(), b"main module"),
                args: None,
            });
            vec![m, dep]
        }
        other => vec![ModuleAnswer::new(Cow::Owned(other.to_owned()), Status::Unknown, None)],
    }
}

struct Server {
    signer: ReplySigner,
    secret: CookieSecret,
    documents: BTreeMap<Sha256Digest, FallbackDocument>,
}

impl Server {
    /// Answers one datagram from `from`: what the reference server does, without the socket.
    fn handle(&mut self, datagram: &[u8], from: IpAddr) -> Vec<u8> {
        let Ok(decoded) = Datagram::decode(datagram) else {
            return Vec::new();
        };
        let Message::Query(query) = &decoded.message else {
            return Vec::new();
        };
        let validated = match (query.client_cookie, query.server_cookie) {
            (Some(client), Some(server)) => {
                matches!(check_server_cookie(&[&self.secret], &client, &server, from, NOW), CookieCheck::Valid { .. })
            }
            _ => false,
        };
        let response = Response {
            binding: Binding { query: query.digest(), issued: NOW, expires: NOW + 300 },
            base: Some("https://updates.example.com/".into()),
            compact: false,
            modules: query.query.modules.iter().flat_map(answer_for).collect(),
        };
        let shape = ReplyShape { nonce: query.nonce, server_cookie: false };
        let prepared = prepare_reply(&response, &self.signer, shape, |sha| {
            vec![format!("https://updates.example.com/doc/{sha}.xml")]
        })
        .expect("the demo's answers fit the limits");
        if !validated && !within_amplification_limit(prepared.datagram_len(), datagram.len()) {
            let client = query.client_cookie.unwrap_or_default();
            let cookie = make_server_cookie(&self.secret, &client, from, NOW);
            println!(
                "  server: {} bytes of reply for a {}-byte query from an unvalidated source: over 3x -> cookie challenge",
                prepared.datagram_len(),
                datagram.len()
            );
            return Frame::cookie_challenge(decoded.request_id, query.client_cookie, cookie).to_vec().expect("fits");
        }
        if let Some(document) = &prepared.document {
            println!(
                "  server: answer of {} bytes does not fit 1024 -> fallback, document {}",
                document.bytes.len(),
                document.sha256
            );
            self.documents.insert(document.sha256, document.clone());
        } else {
            println!("  server: answer fits: inline response");
        }
        prepared.frame(decoded.request_id, None).to_vec().expect("fits")
    }
}

fn main() {
    let mut server = Server {
        signer: ReplySigner::from_seed(&[7; 32]),
        secret: CookieSecret([0x42; 32]),
        documents: BTreeMap::new(),
    };
    let mut keys = KeyRing::new();
    keys.add(server.signer.verifying_key());
    let client_ip: IpAddr = "127.0.0.1".parse().expect("ip");

    let installed: BTreeMap<String, Version<'static>> =
        [("core", "1.2"), ("antivirus-db", "2024.11.2"), ("pdf-plugin", "1.0"), ("main-module", "5.0")]
            .into_iter()
            .map(|(id, version)| (id.to_owned(), v(version)))
            .collect();
    let client_cookie = ClientCookie(*b"demo-cli");

    println!("1. A module-level check of `core` alone, with a client cookie but no server cookie yet.");
    let small = Query::new(vec![QueryModule { id: "core".into(), version: Some(v("1.2")), files: vec![] }]).to_vec();
    let first =
        Frame::query(0x5eed_0001, &small, &QueryOptions { client_cookie: Some(client_cookie), ..Default::default() })
            .to_vec()
            .expect("fits");
    println!("  client: query of {} bytes", first.len());
    let reply = server.handle(&first, client_ip);
    let Ok(Datagram { message: Message::CookieChallenge(challenge), .. }) = Datagram::decode(&reply) else {
        panic!("expected a cookie challenge")
    };
    println!("  client: got a {}-byte cookie challenge; caches the server cookie and asks again", reply.len());
    let options = QueryOptions {
        client_cookie: Some(client_cookie),
        server_cookie: Some(challenge.server_cookie),
        ..Default::default()
    };
    let retry = Frame::query(0x5eed_0002, &small, &options).to_vec().expect("fits");
    let reply = server.handle(&retry, client_ip);
    let datagram = Datagram::decode(&reply).expect("the server's reply decodes");
    let Message::Response(inline) = &datagram.message else { panic!("expected an inline response") };
    let expect = Expectation { keys: &keys, query: Sha256Digest::of(&small), nonce: None, now: NOW + 1 };
    let answer = inline.verify(&expect).expect("signature, query binding and freshness check out");
    println!(
        "  client: {}-byte response, signature by key {} verified: core {} -> {}",
        reply.len(),
        server.signer.key_id(),
        installed["core"],
        answer.modules[0].latest.as_ref().map_or("?".into(), |l| l.to_string())
    );

    println!("2. The full check: every module, plus a file-level entry for a frequent file [0078].");
    let query = Query::new(vec![
        QueryModule { id: "core".into(), version: Some(v("1.2")), files: vec![] },
        QueryModule {
            id: "antivirus-db".into(),
            version: Some(v("2024.11.2")),
            files: vec![QueryFile { id: "db/signatures.rec".into(), version: v("2024.11.2") }],
        },
        QueryModule { id: "pdf-plugin".into(), version: Some(v("1.0")), files: vec![] },
    ]);
    let body = query.to_vec();
    let datagram_bytes = Frame::query(0x5eed_0003, &body, &options).to_vec().expect("fits");
    println!("  client: query of {} bytes, cached cookie attached", datagram_bytes.len());
    let reply = server.handle(&datagram_bytes, client_ip);
    let datagram = Datagram::decode(&reply).expect("the server's reply decodes");
    assert_eq!(datagram.request_id, 0x5eed_0003, "the reply echoes our request id");
    let expect = Expectation { keys: &keys, query: Sha256Digest::of(&body), nonce: None, now: NOW + 1 };
    let document_bytes = match &datagram.message {
        Message::Fallback(pointer) => {
            let pointer = pointer.verify(&expect).expect("signature, query binding and freshness check out");
            println!("  client: {}-byte fallback verified; fetching {}", reply.len(), pointer.mirrors[0]);
            let document = server.documents.get(&pointer.sha256).expect("served");
            assert_eq!(document.bytes.len() as u64, pointer.size, "size as signed");
            assert_eq!(Sha256Digest::of(&document.bytes), pointer.sha256, "hash as signed");
            println!("  client: document of {} bytes matches the signed size and SHA-256", document.bytes.len());
            document.bytes.clone()
        }
        Message::Response(inline) => inline.verify(&expect).expect("verified").to_vec(),
        other => panic!("unexpected reply {other:?}"),
    };
    let response = Response::decode(&document_bytes).expect("same decoder as inline bodies");
    check_binding(&response.binding, &Sha256Digest::of(&body), NOW + 1).expect("the document answers our query");

    println!("3. What the server says, module by module.");
    for m in &response.modules {
        let how = match &m.upgrade {
            UpgradeInfo::Package(p) => {
                format!("install package {} ({} bytes)", response.resolve_url(&p.payload.url), p.payload.size)
            }
            UpgradeInfo::Files(files) => {
                let count = |mode| files.iter().filter(|f| f.action.mode() == mode).count();
                use upgram_core::body::FileMode::*;
                format!(
                    "file list: {} replace, {} delete, {} incremental",
                    count(Replace),
                    count(Delete),
                    count(Incremental)
                )
            }
            UpgradeInfo::None => "nothing to do".into(),
        };
        let latest = m.latest.as_ref().map_or("-".into(), |l| l.to_string());
        let flags = [(m.forced, " forced"), (m.dependency, " (dependency)")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, t)| *t)
            .collect::<String>();
        println!("  {:<13} -> {:<10} {}{}", m.id, latest, how, flags);
    }

    println!("4. The upgrade plan: dependencies first.");
    let offers: Vec<Offer<'_>> = response.modules.iter().filter_map(Offer::from_answer).collect();
    let upgrade = plan(&offers, &installed, &Choice::All).expect("plannable");
    for (i, step) in upgrade.steps.iter().enumerate() {
        let from = step.from.as_ref().map_or("(new)".into(), |f| f.to_string());
        println!("  {}. {:<13} {} -> {}  {:?}", i + 1, step.id, from, step.to, step.reason);
    }
}

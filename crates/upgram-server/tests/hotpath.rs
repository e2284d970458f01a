//! The worker decides between an inline response and the module-document fallback from the
//! lengths of the module answers, without building the full response first: the decision and
//! the bytes must be exactly those the full response gives, whatever the queries before it
//! (the worker reuses its scratch space from one query to the next).

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use upgram_core::body::{Binding, Query, QueryModule};
use upgram_core::cookie::{ClientCookie, CookieSecret, make_server_cookie};
use upgram_core::limits::HEADER_LEN;
use upgram_core::message::Expectation;
use upgram_core::sign::{KeyRing, ReplySigner};
use upgram_core::wire::{Flags, Frame, MessageKind, QueryOptions, trailer_len};
use upgram_core::{Datagram, MAX_DATAGRAM_LEN, Message, Sha256Digest};
use upgram_server::catalog::Catalog;
use upgram_server::responder::{AnswerCache, respond_encoded};
use upgram_server::server::{Config, CookieSecrets, ISSUE_GRANULARITY_SECS, Shared, Worker};

mod common;
use common::{file, module, release};

const SEED: [u8; 32] = [5; 32];
const AT: u64 = 1_800_000_000;
const SECRET: CookieSecret = CookieSecret([0x33; 32]);

/// Modules `m0` … `m11`, module `mi` with `i + 1` files: installing the first `k` of them
/// gives answers from a few hundred bytes to several datagrams.
fn catalog() -> Catalog {
    let mut catalog = Catalog::default();
    for i in 0..12 {
        let files = (0..=i).map(|f| file(&format!("lib/f{f:02}.bin"), "1")).collect();
        let m = module(&format!("m{i}"), vec![release("1", files)]);
        catalog.modules.insert(m.id.clone(), m);
    }
    catalog
}

fn ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// A query installing `m0` … `m(k-1)`, following module documents.
fn query(k: usize) -> Vec<u8> {
    let modules =
        (0..k).map(|i| QueryModule { id: Cow::Owned(format!("m{i}")), version: None, files: vec![] }).collect();
    let mut query = Query::new(modules);
    query.module_docs = true;
    query.to_vec()
}

#[test]
fn the_form_decided_from_the_parts_is_the_one_the_full_response_gives() {
    let shared = Arc::new(Shared::new(
        catalog(),
        ReplySigner::from_seed(&SEED),
        CookieSecrets { current: SECRET, previous: None },
        Config::default(),
    ));
    let mut worker = Worker::new(shared.clone());
    let mut keys = KeyRing::new();
    keys.add(ReplySigner::from_seed(&SEED).verifying_key());
    let issued = AT - AT % ISSUE_GRANULARITY_SECS;
    let config = Config::default();
    let client = ClientCookie([3; 8]);
    let server = make_server_cookie(&SECRET, &client, ip(), AT);
    let (mut inline, mut documents) = (0, 0);
    // Growing, then shrinking: each reply follows one of another length.
    let sizes: Vec<usize> = (1..=12).chain((1..12).rev()).collect();
    let mut reply = Vec::new();
    for (id, &k) in sizes.iter().enumerate() {
        let body = query(k);
        let decoded = Query::decode(&body).unwrap();
        let binding = Binding { query: Sha256Digest::of(&body), issued, expires: issued + config.validity_secs };
        let mut full = Vec::new();
        let catalog = shared.catalog();
        respond_encoded(
            &catalog.catalog,
            0,
            &decoded,
            binding,
            &config.public_url,
            &mut AnswerCache::default(),
            &mut full,
        );
        let fits = HEADER_LEN + full.len() + trailer_len(MessageKind::Response, Flags(0)) <= MAX_DATAGRAM_LEN;

        // Each datagram is new (a new id makes no difference to the body: the cache is by
        // body), so vary the request id and use a fresh worker half the time.
        if id % 2 == 1 {
            worker = Worker::new(shared.clone());
        }
        let options = QueryOptions { nonce: None, client_cookie: Some(client), server_cookie: Some(server), pad_to: 0 };
        let datagram = Frame::query(id as u64, &body, &options).to_vec().unwrap();
        assert!(worker.handle(&datagram, ip(), UNIX_EPOCH + Duration::from_secs(AT), &mut reply));
        assert!(reply.len() <= MAX_DATAGRAM_LEN);
        let expect = Expectation { keys: &keys, query: Sha256Digest::of(&body), nonce: None, now: AT };
        match &Datagram::decode(&reply).expect("the reply decodes").message {
            Message::Response(response) => {
                assert!(fits, "{k} modules: inline, though the full response ({} bytes) does not fit", full.len());
                response.verify(&expect).expect("the response verifies");
                assert_eq!(Frame::decode(&reply).unwrap().body, &full[..], "{k} modules: the full response");
                inline += 1;
            }
            Message::Fallback(fallback) => {
                assert!(!fits, "{k} modules: a fallback, though the full response ({} bytes) fits", full.len());
                let fallback = fallback.verify(&expect).expect("the fallback verifies");
                // The module-document form when its list fits a datagram, else one document.
                match fallback.modules.as_ref() {
                    Some(named) => {
                        assert_eq!(named.documents.len(), k);
                        documents += 1;
                    }
                    None => assert_eq!(fallback.size, full.len() as u64, "{k} modules: the full response"),
                }
            }
            other => panic!("{k} modules: expected a signed reply, got {other:?}"),
        }
    }
    assert!(inline >= 2 && documents >= 2, "both forms seen: {inline} inline, {documents} module documents");
}

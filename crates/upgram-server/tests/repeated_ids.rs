//! A query that lists one module twice (SPEC.md §4.3, test vector 61) is answered with a
//! malformed-query error, never with two answers for the module.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use upgram_core::body::ErrorCode;
use upgram_core::cookie::CookieSecret;
use upgram_core::sign::ReplySigner;
use upgram_core::{Datagram, Message};
use upgram_server::catalog::Catalog;
use upgram_server::server::{Config, CookieSecrets, Shared, Worker};

/// The bytes of a datagram vector in protocol-spec/vectors/.
fn vector(file: &str) -> Vec<u8> {
    let path = format!("{}/../../protocol-spec/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let vector: toml::Table = toml::from_str(&text).unwrap();
    let hex: String = vector["hex"].as_str().unwrap().split_whitespace().collect();
    hex::decode(hex).unwrap()
}

/// The server's reply to `datagram`.
fn reply_to(datagram: &[u8]) -> Vec<u8> {
    let secrets = CookieSecrets { current: CookieSecret([0x42; 32]), previous: None };
    let shared =
        Arc::new(Shared::new(Catalog::default(), ReplySigner::from_seed(&[9; 32]), secrets, Config::default()));
    let mut worker = Worker::new(shared);
    let mut out = Vec::new();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
    assert!(worker.handle(datagram, IpAddr::V4(Ipv4Addr::LOCALHOST), now, &mut out), "the server replies");
    out
}

#[test]
fn a_query_listing_one_module_twice_gets_malformed_query() {
    for file in ["61-invalid-query-repeated-module.toml", "62-invalid-query-repeated-file.toml"] {
        let reply = reply_to(&vector(file));
        match Datagram::decode(&reply).expect("the reply decodes").message {
            Message::Error(error) => assert_eq!(error.code, ErrorCode::MalformedQuery, "{file}"),
            other => panic!("{file}: expected a malformed-query error, got {other:?}"),
        }
    }
}

//! Every input the fuzzers (`fuzz/`) ever found a fault with, as a named test. The raw inputs
//! are also kept in `fuzz/regressions/<target>/`, which `fuzz/tests/corpus.rs` replays through
//! the fuzz targets themselves.

use upgram_core::body::ErrorBody;
use upgram_core::{Datagram, Message};

/// fuzz/regressions/datagram/error-unknown-attribute-reencodes: an error datagram with an
/// unknown attribute (`lessage`) re-encoded without it, because error bodies were re-encoded
/// from the decoded value instead of the bytes received.
#[test]
fn error_datagram_with_unknown_attribute_reencodes_byte_for_byte() {
    let mut bytes = b"UPGM\x01\x04\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08\x00\x4c\x00\x00".to_vec();
    bytes.extend_from_slice(br#"<error code="3" retry-after="30" lessage="too many queries from 192.0.2.1"/>"#);
    let datagram = Datagram::decode(&bytes).expect("forward compatible");
    assert!(matches!(datagram.message, Message::Error(_)));
    let mut again = Vec::new();
    datagram.encode(&mut again).expect("re-encodes");
    assert_eq!(again, bytes);
}

/// fuzz/regressions/roundtrip/escaped-message-over-limit: an attribute of just under 2048 raw
/// bytes holding `<` and `>` re-encoded escaped to more than 2048 bytes, which the decoder then
/// refused. Now `<` in an attribute value is refused (XML forbids it), and the limit applies to
/// the unescaped value.
#[test]
fn attribute_limit_applies_to_the_unescaped_value() {
    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/regressions/roundtrip/escaped-message-over-limit"
    ))
    .expect("the regression input is committed");
    let error = ErrorBody::decode(&raw).expect_err("a raw `<` in an attribute");
    assert_eq!(error.name(), "xml-syntax", "{error}");

    let at_limit = format!(r#"<error code="3" message="{}"/>"#, "&gt;".repeat(2048));
    let decoded = ErrorBody::decode(at_limit.as_bytes()).expect("2048 unescaped bytes are within the limit");
    let canonical = decoded.to_vec();
    assert_eq!(ErrorBody::decode(&canonical).expect("canonical form decodes"), decoded);

    let over = format!(r#"<error code="3" message="{}"/>"#, "&gt;".repeat(2049));
    assert_eq!(ErrorBody::decode(over.as_bytes()).expect_err("over").name(), "attribute-too-long");
}

/// fuzz/regressions/datagram/query-with-batch-flag: a query datagram with the BATCH flag set
/// decoded, and re-encoded without it. BATCH belongs to signed replies only (SPEC.md §3.3).
#[test]
fn a_query_with_the_batch_flag_is_refused() {
    let raw =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/regressions/datagram/query-with-batch-flag"))
            .expect("the regression input is committed");
    let error = Datagram::decode(&raw).expect_err("BATCH on a query");
    assert_eq!(error.name(), "flag-not-allowed", "{error}");
}

//! `upgram inspect`: what a datagram or a document says, for debugging (SPEC.md §3, §4).
//!
//! The input is tried as a datagram first (binary, starting with the magic `UPGM`), then as a
//! hex dump of one (as in `protocol-spec/vectors/`), then as an XML body of any kind. Signatures
//! are shown, not verified: inspection trusts nothing and changes nothing.

use serde_json::{Value, json};
use thiserror::Error;
use upgram_core::body::{ErrorBody, Fallback, Query, Response};
use upgram_core::wire::MAGIC;
use upgram_core::{BodyError, Datagram, DecodeError};

/// Why an input could not be inspected.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum InspectError {
    /// It starts like a datagram but does not decode as one.
    #[error("not a valid upgram datagram: {0}")]
    Datagram(#[from] DecodeError),
    /// It is an XML body of a known root that does not decode.
    #[error("not a valid upgram body: {0}")]
    Body(#[from] BodyError),
    /// Neither a datagram, a hex dump of one, nor an upgram XML body.
    #[error(
        "neither a datagram (starting with UPGM), a hex dump of one, nor an XML body (<query>, <response>, <fallback>, <error>)"
    )]
    Unrecognised,
}

/// Decodes `input` and returns its meaning as JSON, with a `"what"` field saying what it was.
pub fn inspect(input: &[u8]) -> Result<Value, InspectError> {
    if input.starts_with(&MAGIC) {
        return datagram(input);
    }
    if let Some(bytes) = from_hex(input)
        && bytes.starts_with(&MAGIC)
    {
        return datagram(&bytes);
    }
    body(trim(input))
}

fn datagram(bytes: &[u8]) -> Result<Value, InspectError> {
    let decoded = Datagram::decode(bytes)?;
    Ok(json!({ "what": "datagram", "length": bytes.len(), "datagram": decoded }))
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn body(bytes: &[u8]) -> Result<Value, InspectError> {
    let text = String::from_utf8_lossy(bytes);
    let root = text.trim_start().trim_start_matches(|c| c != '<').get(1..).unwrap_or("");
    let decoded = if root.starts_with("query") {
        json!({ "what": "query body", "query": to_json(&Query::decode(bytes)?) })
    } else if root.starts_with("response") {
        json!({ "what": "response body or fallback document", "response": to_json(&Response::decode(bytes)?) })
    } else if root.starts_with("fallback") {
        json!({ "what": "fallback body", "fallback": to_json(&Fallback::decode(bytes)?) })
    } else if root.starts_with("error") {
        json!({ "what": "error body", "error": to_json(&ErrorBody::decode(bytes)?) })
    } else {
        return Err(InspectError::Unrecognised);
    };
    Ok(decoded)
}

fn trim(input: &[u8]) -> &[u8] {
    let start = input.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(input.len());
    let end = input.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &input[start..end.max(start)]
}

/// Hex digits with any whitespace between them, as the vectors write datagrams.
fn from_hex(input: &[u8]) -> Option<Vec<u8>> {
    let digits: Vec<u8> = input.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.is_empty() || !digits.len().is_multiple_of(2) || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    digits.chunks(2).map(|pair| std::str::from_utf8(pair).ok().and_then(|p| u8::from_str_radix(p, 16).ok())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL_QUERY_HEX: &str = "5550474d010100000102030405060708003000003c71756572793e3c6d6f6475\n6c652069643d22636f7265222076657273696f6e3d22312e32222f3e3c2f7175\n6572793e\n";

    #[test]
    fn datagrams_hex_dumps_and_bodies_are_recognised() {
        let from_hex = inspect(MINIMAL_QUERY_HEX.as_bytes()).unwrap();
        assert_eq!(from_hex["what"], "datagram");
        assert_eq!(from_hex["datagram"]["message"]["query"]["modules"][0]["id"], "core");
        let binary = super::from_hex(MINIMAL_QUERY_HEX.as_bytes()).unwrap();
        assert_eq!(inspect(&binary).unwrap(), from_hex);
        let body = inspect(b"  <query><module id=\"a\"/></query>\n").unwrap();
        assert_eq!(body["what"], "query body");
        let error = inspect(br#"<error code="3" retry-after="5"/>"#).unwrap();
        assert_eq!(error["error"]["retry_after"], 5);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert!(matches!(inspect(b"hello"), Err(InspectError::Unrecognised)));
        assert!(matches!(inspect(b"UPGM\x02"), Err(InspectError::Datagram(_))));
        assert!(matches!(inspect(b"<query/>"), Err(InspectError::Body(_))));
    }
}

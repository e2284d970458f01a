//! The URL fallback (SPEC.md §8): the document is checked against the signed size and hash
//! before it is parsed, and must carry the same binding as its signed pointer.

use std::borrow::Cow;

use upgram_core::Sha256Digest;
use upgram_core::body::{Binding, Fallback, ModuleAnswer, Response, Status};
use upgram_core::message::DocumentError;
use upgram_core::version::Version;

const NOW: u64 = 1_764_000_000;

fn document(binding: Binding) -> Vec<u8> {
    Response {
        binding,
        base: None,
        compact: false,
        modules: vec![ModuleAnswer::new(
            Cow::Borrowed("core"),
            Status::Current,
            Some(Version::parse("1.2").expect("v")),
        )],
    }
    .to_vec()
}

fn pointer(bytes: &[u8], binding: Binding) -> Fallback<'static> {
    Fallback {
        binding,
        size: bytes.len() as u64,
        sha256: Sha256Digest::of(bytes),
        mirrors: vec![Cow::Borrowed("https://a.example/doc.xml")],
    }
}

#[test]
fn a_matching_document_opens() {
    let binding = Binding { query: Sha256Digest::of(b"q"), issued: NOW, expires: NOW + 300 };
    let bytes = document(binding);
    let response = pointer(&bytes, binding).open_document(&bytes, NOW).expect("opens");
    assert_eq!(response.modules[0].id, "core");
}

#[test]
fn wrong_size_hash_binding_or_time_is_refused() {
    let binding = Binding { query: Sha256Digest::of(b"q"), issued: NOW, expires: NOW + 300 };
    let bytes = document(binding);
    let signed = pointer(&bytes, binding);

    let mut longer = bytes.clone();
    longer.push(b' ');
    assert!(matches!(signed.open_document(&longer, NOW), Err(DocumentError::SizeMismatch { .. })));

    let mut altered = bytes.clone();
    let at = altered.len() - 20;
    altered[at] ^= 1;
    assert!(matches!(signed.open_document(&altered, NOW), Err(DocumentError::HashMismatch { .. })));

    // A document made for another query, pinned by a pointer that claims ours: the hash
    // matches (the pointer was made for it) but the bindings differ.
    let other = Binding { query: Sha256Digest::of(b"another query"), ..binding };
    let foreign = document(other);
    let mixed = Fallback { binding, ..pointer(&foreign, other) };
    assert!(matches!(mixed.open_document(&foreign, NOW), Err(DocumentError::BindingMismatch)));

    assert!(matches!(signed.open_document(&bytes, NOW + 300), Err(DocumentError::Verify(_))), "expired");

    let garbage = b"<response/>".to_vec();
    assert!(matches!(pointer(&garbage, binding).open_document(&garbage, NOW), Err(DocumentError::Body(_))));
}

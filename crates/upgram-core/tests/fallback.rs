//! The URL fallback (SPEC.md §8): the document is checked against the signed size and hash
//! before it is parsed, and must carry the same binding as its signed pointer.

use std::borrow::Cow;

use upgram_core::Sha256Digest;
use upgram_core::body::fallback::MAX_MODULE_DOCUMENTS;
use upgram_core::body::{Binding, Fallback, ModuleAnswer, ModuleDocument, ModuleDocuments, Response, Status};
use upgram_core::error::BodyError;
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
        modules: None,
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

/// One module's answer as a module document: its `<module>` element alone.
fn module_document(id: &str) -> Vec<u8> {
    let answer = ModuleAnswer::new(Cow::Owned(id.to_owned()), Status::Current, Some(Version::parse("1.2").expect("v")));
    let mut out = Vec::new();
    answer.encode(&mut out);
    out
}

fn module_pointer(binding: Binding, documents: &[(&str, &[u8])]) -> Fallback<'static> {
    Fallback {
        binding,
        size: 0,
        sha256: Sha256Digest([0; 32]),
        mirrors: Vec::new(),
        modules: Some(ModuleDocuments {
            base: Cow::Borrowed("http://127.0.0.1:8080/"),
            compact: false,
            documents: documents
                .iter()
                .map(|(id, bytes)| ModuleDocument {
                    module: Cow::Owned((*id).to_owned()),
                    size: bytes.len() as u64,
                    sha256: Sha256Digest::of(bytes),
                })
                .collect(),
        }),
    }
}

#[test]
fn module_documents_assemble_the_answer_as_if_inline() {
    let binding = Binding { query: Sha256Digest::of(b"q"), issued: NOW, expires: NOW + 300 };
    let (core, extra) = (module_document("core"), module_document("extra"));
    let signed = module_pointer(binding, &[("core", &core), ("extra", &extra)]);
    let encoded = signed.to_vec();
    let decoded = Fallback::decode(&encoded).expect("decodes");
    assert_eq!(decoded, signed);
    let body = signed.open_module_documents(&[&core, &extra], NOW).expect("opens");
    let inline = Response {
        binding,
        base: Some(Cow::Borrowed("http://127.0.0.1:8080/")),
        compact: false,
        modules: vec![
            ModuleAnswer::new(Cow::Borrowed("core"), Status::Current, Some(Version::parse("1.2").expect("v"))),
            ModuleAnswer::new(Cow::Borrowed("extra"), Status::Current, Some(Version::parse("1.2").expect("v"))),
        ],
    };
    assert_eq!(body, inline.to_vec(), "byte for byte the answer that did not fit");
    let (answer, len) = signed.open_module_answer(&[&core, &extra], NOW).expect("opens, decoded");
    assert_eq!((answer, len), (inline.clone().into_owned(), body.len()), "the same answer, decoded once");
    assert_eq!(
        signed.modules.as_ref().expect("module form").url(&Sha256Digest::of(&core)),
        format!("http://127.0.0.1:8080/doc/{}.xml", Sha256Digest::of(&core))
    );
}

#[test]
fn a_module_document_that_does_not_match_its_signed_hash_or_module_is_refused() {
    let binding = Binding { query: Sha256Digest::of(b"q"), issued: NOW, expires: NOW + 300 };
    let (core, extra) = (module_document("core"), module_document("extra"));
    let signed = module_pointer(binding, &[("core", &core), ("extra", &extra)]);

    let mut altered = core.clone();
    let at = altered.len() - 5;
    altered[at] ^= 1;
    let refused = signed.open_module_documents(&[&altered, &extra], NOW);
    assert!(matches!(refused, Err(DocumentError::HashMismatch { .. })), "{refused:?}");

    // Swapped: each document authentic, but not where the pointer names it.
    let swapped = module_pointer(binding, &[("core", &extra), ("extra", &core)]);
    let refused = swapped.open_module_documents(&[&extra, &core], NOW);
    assert!(matches!(refused, Err(DocumentError::WrongModule { index: 0, .. })), "{refused:?}");
    let refused = swapped.open_module_answer(&[&extra, &core], NOW);
    assert!(matches!(refused, Err(DocumentError::WrongModule { index: 0, .. })), "the decoded form checks the same");

    let refused = signed.open_module_documents(&[&core], NOW);
    assert!(matches!(refused, Err(DocumentError::WrongCount { expected: 2, found: 1 })), "{refused:?}");

    // Authentic documents, but the pointer's window is over: a stale pointer cannot be replayed.
    let refused = signed.open_module_documents(&[&core, &extra], NOW + 300);
    assert!(matches!(refused, Err(DocumentError::Verify(_))), "{refused:?}");
}

#[test]
fn a_pointer_naming_too_many_module_documents_is_refused() {
    let binding = Binding { query: Sha256Digest::of(b"q"), issued: NOW, expires: NOW + 300 };
    let core = module_document("core");
    let ids: Vec<String> = (0..=MAX_MODULE_DOCUMENTS).map(|i| format!("m{i}")).collect();
    let many: Vec<(&str, &[u8])> = ids.iter().map(|id| (id.as_str(), core.as_slice())).collect();
    let at_most = module_pointer(binding, &many[..MAX_MODULE_DOCUMENTS]);
    assert!(Fallback::decode(&at_most.to_vec()).is_ok());
    let too_many = module_pointer(binding, &many).to_vec();
    let refused = Fallback::decode(&too_many);
    assert!(matches!(refused, Err(BodyError::TooManyElements { .. })), "{refused:?}");
}

#[test]
fn mirrors_and_module_documents_do_not_mix() {
    let binding = Binding { query: Sha256Digest::of(b"q"), issued: NOW, expires: NOW + 300 };
    let core = module_document("core");
    let text = String::from_utf8(module_pointer(binding, &[("core", &core)]).to_vec()).expect("utf-8");
    let mixed = text.replace("</fallback>", "<mirror url=\"http://a.example/d.xml\"/></fallback>");
    assert!(matches!(Fallback::decode(mixed.as_bytes()), Err(BodyError::UnexpectedElement { .. })));
    let sized = text.replacen("<fallback ", "<fallback size=\"10\" ", 1);
    assert!(matches!(Fallback::decode(sized.as_bytes()), Err(BodyError::InvalidAttribute { .. })));
    let no_base = text.replacen(" base=\"http://127.0.0.1:8080/\"", "", 1);
    assert!(matches!(Fallback::decode(no_base.as_bytes()), Err(BodyError::MissingAttribute { .. })));
    let bad_hash = text.replacen(" h=\"", " h=\"A", 1);
    assert!(matches!(Fallback::decode(bad_hash.as_bytes()), Err(BodyError::InvalidAttribute { .. })));
}

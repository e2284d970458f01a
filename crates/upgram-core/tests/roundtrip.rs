//! Property tests (Q1): every body and frame round-trips; the encoder never writes more than
//! 1024 bytes; answers that do not fit always take the fallback; arbitrary bytes never panic
//! the decoders.

use std::borrow::Cow;

use proptest::prelude::*;
use upgram_core::body::{
    Binding, Delta, ErrorBody, ErrorCode, FailureCode, Fallback, FileAction, FileEntry, FilePatch, ModuleAnswer,
    ModuleDocument, ModuleDocuments, Outcome, OutcomeKind, Package, Payload, Query, QueryFile, QueryModule, Report,
    Requires, Response, Status, UpgradeInfo,
};
use upgram_core::cookie::{ClientCookie, ServerCookie};
use upgram_core::fallback::{ReplyShape, prepare_reply};
use upgram_core::merge::{expand_compact, is_implied_current};
use upgram_core::message::Expectation;
use upgram_core::sign::{KeyRing, Nonce, ReplySigner};
use upgram_core::version::Version;
use upgram_core::wire::{Frame, MessageKind, QueryOptions};
use upgram_core::{Datagram, MAX_DATAGRAM_LEN, Message, Sha256Digest};

fn version() -> impl Strategy<Value = Version<'static>> {
    (prop::collection::vec(0u64..2000, 1..4), prop::option::of("[a-z]{1,5}(\\.[1-9][0-9]?)?")).prop_map(
        |(nums, pre)| {
            let mut text = nums.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
            if let Some(pre) = pre {
                text.push('-');
                text.push_str(&pre);
            }
            Version::parse(&text).expect("generated versions are valid").into_owned()
        },
    )
}

fn module_id() -> impl Strategy<Value = Cow<'static, str>> {
    "[A-Za-z0-9._-]{1,24}".prop_map(Cow::Owned)
}

fn file_id() -> impl Strategy<Value = Cow<'static, str>> {
    // Segments of letters, digits and a few awkward characters that need escaping.
    prop::collection::vec("[a-z0-9 &<>\"'_.-]{0,6}[a-z0-9]", 1..4).prop_map(|segments| Cow::Owned(segments.join("/")))
}

fn digest() -> impl Strategy<Value = Sha256Digest> {
    any::<[u8; 32]>().prop_map(Sha256Digest)
}

fn payload(relative: bool) -> impl Strategy<Value = Payload<'static>> {
    let url = if relative { "[a-z0-9][a-z0-9/]{0,20}" } else { "https://[a-z]{1,10}\\.example/[a-z0-9/&?=]{0,30}" };
    (url.prop_map(|u| Cow::Owned(u.to_string())), any::<u64>(), digest()).prop_map(|(url, size, sha256)| Payload {
        url,
        size,
        sha256,
    })
}

fn query() -> impl Strategy<Value = Query<'static>> {
    let file = (file_id(), version()).prop_map(|(id, version)| QueryFile { id, version });
    // Each file id once per module and each module id once per query (SPEC.md §4.3): the
    // decoder refuses repeats.
    let module = (module_id(), prop::option::of(version()), prop::collection::vec(file, 0..4)).prop_map(
        |(id, version, mut files)| {
            let mut seen = std::collections::HashSet::new();
            files.retain(|f| seen.insert(f.id.clone()));
            QueryModule { id, version, files }
        },
    );
    let channel = prop::option::of(module_id());
    let bucket = prop::option::of(0..upgram_core::body::BUCKETS);
    // The patch formats the client applies: 1 to 8 names, separated by single spaces.
    let patch = prop::option::of(prop::collection::vec(module_id(), 1..=8).prop_map(|f| Cow::Owned(f.join(" "))));
    (channel, bucket, prop::collection::vec(module, 1..8), any::<bool>(), patch, any::<bool>()).prop_map(
        |(channel, bucket, mut modules, compact, patch, module_docs)| {
            let mut seen = std::collections::HashSet::new();
            modules.retain(|m| seen.insert(m.id.clone()));
            Query { compact, channel, bucket, patch, module_docs, modules }
        },
    )
}

fn file_entry() -> impl Strategy<Value = FileEntry<'static>> {
    let action = prop_oneof![
        payload(true).prop_map(FileAction::Replace),
        Just(FileAction::Delete),
        (payload(true), version(), payload(true))
            .prop_map(|(payload, from, d)| { FileAction::Incremental { payload, delta: Delta { from, payload: d } } }),
    ];
    // A patch only beside a whole file to replace (SPEC.md §5.12).
    let patch =
        prop::option::of(
            (module_id(), version(), digest(), payload(true))
                .prop_map(|(format, from, base_sha256, payload)| FilePatch { format, from, base_sha256, payload }),
        );
    (file_id(), version(), action, any::<bool>(), any::<bool>(), patch).prop_map(
        |(id, version, action, frequent, executable, patch)| {
            let patch = patch.filter(|_| matches!(action, FileAction::Replace(_)));
            FileEntry { id, version, action, frequent, executable, patch }
        },
    )
}

fn module_answer() -> impl Strategy<Value = ModuleAnswer<'static>> {
    let upgrade = prop_oneof![
        (payload(true), prop::option::of("[ -~]{0,20}"))
            .prop_map(|(payload, args)| { UpgradeInfo::Package(Package { payload, args: args.map(Cow::Owned) }) }),
        prop::collection::vec(file_entry(), 1..5).prop_map(UpgradeInfo::Files),
    ];
    let requires = prop::collection::vec((module_id(), version()).prop_map(|(id, min)| Requires { id, min }), 0..3);
    let frequent = prop::collection::vec(file_id(), 0..3);
    (
        module_id(),
        prop_oneof![Just(Status::Update), Just(Status::Current), Just(Status::Unknown), Just(Status::Error)],
        version(),
        upgrade,
        (any::<bool>(), any::<bool>(), prop::option::of(version()), any::<bool>(), any::<bool>(), any::<u16>()),
        requires,
        frequent,
    )
        .prop_map(|(id, status, latest, upgrade, flags, requires, frequent)| {
            let (full, forced, floor, rollback, dependency, code) = flags;
            let mut answer = ModuleAnswer::new(id, status, None);
            answer.full = full;
            answer.forced = forced;
            answer.floor = floor;
            answer.rollback = rollback;
            answer.dependency = dependency;
            answer.requires = requires;
            answer.frequent = frequent;
            match status {
                Status::Update => {
                    answer.latest = Some(latest);
                    answer.upgrade = upgrade;
                }
                Status::Current => {
                    answer.latest = Some(latest);
                    if let UpgradeInfo::Files(files) = upgrade {
                        answer.upgrade = UpgradeInfo::Files(files);
                    }
                }
                Status::Unknown => {}
                Status::Error => answer.code = Some(code),
            }
            answer
        })
}

fn response(max_modules: usize) -> impl Strategy<Value = Response<'static>> {
    (digest(), 0u64..2_000_000_000, 0u64..600, prop::collection::vec(module_answer(), 0..max_modules), any::<bool>())
        .prop_map(|(query, issued, window, modules, compact)| Response {
            binding: Binding { query, issued, expires: issued + window },
            base: Some(Cow::Borrowed("https://cdn.example/")),
            compact,
            modules,
        })
}

fn signer() -> ReplySigner {
    ReplySigner::from_seed(&[7; 32])
}

fn report() -> impl Strategy<Value = Report<'static>> {
    let outcome = (
        any::<u64>(),
        module_id(),
        prop::option::of(version()),
        version(),
        prop::sample::select(OutcomeKind::ALL.to_vec()),
        prop::sample::select(FailureCode::ALL.to_vec()),
    )
        .prop_map(|(attempt, module, from, to, result, code)| Outcome {
            attempt,
            module,
            from: from.map(|v| Cow::Owned(v.to_string())),
            to: Cow::Owned(to.to_string()),
            result,
            code: result.has_code().then_some(code),
        });
    let channel = prop::option::of(module_id());
    let band = prop::option::of(0..upgram_core::body::BANDS);
    (channel, band, prop::collection::vec(outcome, 1..=upgram_core::limits::MAX_OUTCOMES_PER_REPORT)).prop_map(
        |(channel, band, mut outcomes)| {
            // Each attempt once per report (SPEC.md §4.7).
            let mut seen = std::collections::HashSet::new();
            outcomes.retain(|o| seen.insert(o.attempt));
            Report { channel, band, outcomes }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn report_bodies_round_trip(r in report()) {
        let bytes = r.to_vec();
        let decoded = Report::decode(&bytes).expect("decodes");
        prop_assert_eq!(&decoded.to_vec(), &bytes);
        prop_assert_eq!(&decoded, &r);
    }

    #[test]
    fn report_datagrams_round_trip_and_their_ack_is_never_larger(
        r in report(), id in any::<u64>(), client in prop::option::of(any::<[u8; 8]>()), server in any::<[u8; 16]>(),
    ) {
        let body = r.to_vec();
        let client = client.map(ClientCookie);
        let server = client.map(|_| ServerCookie(server));
        let Ok(bytes) = Frame::report(id, &body, client, server).to_vec() else {
            // Sixteen long outcomes can exceed a datagram: the encoder refuses, it never truncates.
            prop_assert!(20 + body.len() > MAX_DATAGRAM_LEN - 24);
            return Ok(());
        };
        let datagram = Datagram::decode(&bytes).expect("decodes");
        prop_assert_eq!(datagram.request_id, id);
        let Message::Report(message) = &datagram.message else { panic!("a report") };
        prop_assert_eq!(&message.report, &r);
        prop_assert_eq!(message.client_cookie, client);
        prop_assert_eq!(message.server_cookie, server);
        let mut again = Vec::new();
        datagram.encode(&mut again).expect("re-encodes");
        prop_assert_eq!(&again, &bytes);
        let ack = Frame::report_ack(id).to_vec().expect("fits");
        prop_assert!(ack.len() < bytes.len());
        prop_assert_eq!(Datagram::decode(&ack).expect("decodes").message, Message::ReportAck);
    }

    #[test]
    fn report_bands_outside_the_range_are_refused(band in upgram_core::body::BANDS..=u8::MAX) {
        let body = format!(r#"<report band="{band}"><outcome attempt="1" module="a" to="1" result="applied"/></report>"#);
        let error = Report::decode(body.as_bytes()).expect_err("band out of range");
        prop_assert_eq!(error.name(), "invalid-attribute");
    }

    #[test]
    fn query_bodies_round_trip(q in query()) {
        let bytes = q.to_vec();
        prop_assert_eq!(Query::decode(&bytes).expect("decodes"), q);
    }

    #[test]
    fn query_buckets_outside_the_range_are_refused(bucket in upgram_core::body::BUCKETS..=u8::MAX) {
        let body = format!(r#"<query channel="beta" bucket="{bucket}"><module id="core"/></query>"#);
        let error = Query::decode(body.as_bytes()).expect_err("bucket out of range");
        prop_assert_eq!(error.name(), "invalid-attribute");
    }

    #[test]
    fn response_bodies_round_trip(r in response(6)) {
        let bytes = r.to_vec();
        let decoded = Response::decode(&bytes).expect("decodes");
        prop_assert_eq!(&decoded, &r);
        prop_assert_eq!(decoded.to_vec(), bytes, "canonical encoding is stable");
    }

    #[test]
    fn fallback_bodies_round_trip(
        sha in digest(), size in 0u64..4_000_000, issued in 0u64..1_000_000,
        mirrors in prop::collection::vec("https://[a-z]{1,8}\\.example/doc/[a-f0-9]{4,64}\\.xml", 1..8),
    ) {
        let fallback = Fallback {
            binding: Binding { query: sha, issued, expires: issued + 300 },
            size, sha256: sha,
            mirrors: mirrors.into_iter().map(Cow::Owned).collect(),
            modules: None,
        };
        let bytes = fallback.to_vec();
        prop_assert_eq!(Fallback::decode(&bytes).expect("decodes"), fallback);
    }

    #[test]
    fn module_document_fallbacks_round_trip(
        query in digest(), issued in 0u64..1_000_000, compact in any::<bool>(),
        base in "https?://[a-z]{1,8}\\.example(:[1-9][0-9]{0,4})?/([a-z]{1,8}/)?",
        documents in prop::collection::vec((module_id(), 0u64..4_000_000, digest()), 1..=upgram_core::body::fallback::MAX_MODULE_DOCUMENTS),
    ) {
        let fallback = Fallback {
            binding: Binding { query, issued, expires: issued + 300 },
            size: 0,
            sha256: upgram_core::Sha256Digest([0; 32]),
            mirrors: Vec::new(),
            modules: Some(ModuleDocuments {
                base: base.into(),
                compact,
                documents: documents.into_iter().map(|(module, size, sha256)| ModuleDocument { module, size, sha256 }).collect(),
            }),
        };
        let bytes = fallback.to_vec();
        let decoded = Fallback::decode(&bytes).expect("decodes");
        prop_assert_eq!(&decoded.to_vec(), &bytes);
        prop_assert_eq!(decoded, fallback);
    }

    #[test]
    fn error_bodies_round_trip(code in any::<u16>(), retry in prop::option::of(any::<u32>()), message in prop::option::of("[ -~\t\n]{0,40}")) {
        let mut error = ErrorBody::new(ErrorCode::from_code(code));
        error.retry_after = retry;
        error.message = message.map(Cow::Owned);
        if error.code == ErrorCode::UnsupportedVersion {
            error.supported = vec![1];
        }
        let bytes = error.to_vec();
        prop_assert_eq!(ErrorBody::decode(&bytes).expect("decodes"), error);
    }

    #[test]
    fn query_frames_round_trip_and_never_exceed_the_limit(
        q in query(), id in any::<u64>(), cookie in prop::option::of(any::<[u8; 8]>()),
        server in prop::option::of(any::<[u8; 16]>()), nonce in prop::option::of(any::<[u8; 16]>()), pad_to in 0usize..1500,
    ) {
        let body = q.to_vec();
        let options = QueryOptions {
            client_cookie: cookie.map(ClientCookie),
            server_cookie: cookie.and(server).map(ServerCookie),
            nonce: nonce.map(Nonce),
            pad_to,
        };
        let frame = Frame::query(id, &body, &options);
        match frame.to_vec() {
            Ok(bytes) => {
                prop_assert!(bytes.len() <= MAX_DATAGRAM_LEN);
                prop_assert!(bytes.len() >= pad_to.min(MAX_DATAGRAM_LEN));
                prop_assert_eq!(Frame::decode(&bytes).expect("decodes"), frame);
                let datagram = Datagram::decode(&bytes).expect("body decodes");
                let Message::Query(message) = &datagram.message else { panic!("a query") };
                prop_assert_eq!(&message.query, &q);
                let mut again = Vec::new();
                datagram.encode(&mut again).expect("re-encodes");
                prop_assert_eq!(again, bytes);
            }
            Err(upgram_core::EncodeError::TooLarge { len, max }) => {
                prop_assert!(len > max && max == MAX_DATAGRAM_LEN);
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    #[test]
    fn replies_fit_or_fall_back(r in response(40), id in any::<u64>(), nonce in prop::option::of(any::<[u8; 16]>()), cookie in any::<bool>()) {
        let shape = ReplyShape { nonce: nonce.map(Nonce), server_cookie: cookie };
        let inline_len = 20 + r.to_vec().len() + 72 + if nonce.is_some() { 16 } else { 0 } + if cookie { 16 } else { 0 };
        let prepared = prepare_reply(&r, &signer(), shape, |sha| vec![format!("https://updates.example/doc/{sha}.xml")]).expect("prepares");
        let bytes = prepared.frame(id, cookie.then_some(ServerCookie([9; 16]))).to_vec().expect("fits");
        prop_assert!(bytes.len() <= MAX_DATAGRAM_LEN);
        prop_assert_eq!(bytes.len(), prepared.datagram_len());
        let datagram = Datagram::decode(&bytes).expect("decodes");
        prop_assert_eq!(datagram.request_id, id);
        let mut keys = KeyRing::new();
        keys.add(signer().verifying_key());
        let expect = Expectation { keys: &keys, query: r.binding.query, nonce: nonce.map(Nonce), now: r.binding.issued };
        let now_valid = r.binding.expires > r.binding.issued;
        match &datagram.message {
            Message::Response(reply) => {
                prop_assert!(inline_len <= MAX_DATAGRAM_LEN, "inline only when it fits");
                prop_assert_eq!(reply.body_unverified(), &r);
                if now_valid { prop_assert_eq!(reply.verify(&expect).expect("verifies"), &r); }
            }
            Message::Fallback(reply) => {
                prop_assert!(inline_len > MAX_DATAGRAM_LEN, "fallback only when the answer does not fit");
                let document = prepared.document.as_ref().expect("fallback has a document");
                let pointer = reply.body_unverified();
                prop_assert_eq!(pointer.size as usize, document.bytes.len());
                prop_assert_eq!(pointer.sha256, Sha256Digest::of(&document.bytes));
                prop_assert_eq!(&Response::decode(&document.bytes).expect("document decodes"), &r);
                if now_valid { reply.verify(&expect).expect("verifies"); }
            }
            other => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    #[test]
    fn error_and_cookie_datagrams_round_trip(
        id in any::<u64>(), code in any::<u16>(), message in prop::option::of("[ -~]{0,60}"),
        client in prop::option::of(any::<[u8; 8]>()), server in any::<[u8; 16]>(),
    ) {
        let mut error = ErrorBody::new(ErrorCode::from_code(code));
        error.message = message.map(Cow::Owned);
        if error.code == ErrorCode::UnsupportedVersion {
            error.supported = vec![1];
        }
        let body = error.to_vec();
        let bytes = Frame::error(id, &body).to_vec().expect("small errors fit");
        let datagram = Datagram::decode(&bytes).expect("decodes");
        prop_assert_eq!(datagram.request_id, id);
        prop_assert_eq!(&datagram.message, &Message::Error(error));

        let challenge = Frame::cookie_challenge(id, client.map(ClientCookie), ServerCookie(server));
        let bytes = challenge.to_vec().expect("fits");
        prop_assert!(bytes.len() <= 44);
        let Message::CookieChallenge(decoded) = Datagram::decode(&bytes).expect("decodes").message else {
            panic!("a cookie challenge")
        };
        prop_assert_eq!(decoded.client_cookie, client.map(ClientCookie));
        prop_assert_eq!(decoded.server_cookie, ServerCookie(server));
    }

    #[test]
    fn split_queries_fit_and_keep_every_module(q in query(), max in 200usize..900) {
        let modules = q.modules.clone();
        match q.split_modules(modules, max) {
            Ok(parts) => {
                for part in &parts {
                    prop_assert!(part.to_vec().len() <= max);
                    prop_assert!(!part.modules.is_empty());
                    prop_assert_eq!(&part.channel, &q.channel);
                    prop_assert_eq!(part.bucket, q.bucket);
                    prop_assert_eq!(&part.patch, &q.patch);
                }
                let joined: Vec<_> = parts.into_iter().flat_map(|p| p.modules).collect();
                prop_assert_eq!(joined, q.modules);
            }
            Err(_) => {
                let alone = |m: &QueryModule<'static>| {
                    Query { modules: vec![m.clone()], ..q.clone() }
                        .to_vec()
                        .len()
                };
                let too_big = q.modules.iter().any(|m| alone(m) > max);
                prop_assert!(too_big, "split fails only when one module alone does not fit");
            }
        }
    }

    #[test]
    fn compact_answers_expand_to_the_full_answer(
        q in query(),
        answers in prop::collection::vec((module_answer(), any::<bool>()), 8),
        dependency in module_answer(),
    ) {
        let mut q = q;
        q.compact = true;
        let mut seen = std::collections::HashSet::new();
        q.modules.retain(|m| seen.insert(m.id.clone()));
        let mut full: Vec<ModuleAnswer<'static>> = q
            .modules
            .iter()
            .zip(&answers)
            .map(|(asked, (answer, current))| match (&asked.version, current) {
                (Some(version), true) => ModuleAnswer::new(asked.id.clone(), Status::Current, Some(version.clone())),
                _ => ModuleAnswer { id: asked.id.clone(), dependency: false, ..answer.clone() },
            })
            .collect();
        full.push(ModuleAnswer { dependency: true, ..dependency });
        let listed: Vec<ModuleAnswer<'static>> = full
            .iter()
            .enumerate()
            .filter(|(i, m)| q.modules.get(*i).is_none_or(|asked| !is_implied_current(m, asked)))
            .map(|(_, m)| m.clone())
            .collect();
        let binding = Binding { query: Sha256Digest::of(&q.to_vec()), issued: 1, expires: 2 };
        let base = Some(Cow::Borrowed("https://cdn.example/"));
        let compact = Response { binding, base, compact: true, modules: listed };
        let bytes = compact.to_vec();
        let decoded = Response::decode(&bytes).expect("a compact answer decodes");
        prop_assert_eq!(&decoded, &compact);
        let expanded = expand_compact(decoded, &q).expect("every listed module was asked");
        prop_assert!(!expanded.compact);
        prop_assert_eq!(expanded.modules, full);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1100)) {
        let _ = Datagram::decode(&bytes);
        let _ = Query::decode(&bytes);
        let _ = Response::decode(&bytes);
        let _ = Fallback::decode(&bytes);
        let _ = ErrorBody::decode(&bytes);
        let _ = Report::decode(&bytes);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_never_panic(kind in 1u8..=7, flags in 0u16..8, body in "[<>/=\" a-z&;#0-9!?\\[\\]-]{0,300}") {
        let mut bytes = b"UPGM\x01".to_vec();
        bytes.push(kind);
        bytes.extend_from_slice(&flags.to_be_bytes());
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend_from_slice(body.as_bytes());
        let trailer = upgram_core::wire::trailer_len(MessageKind::from_byte(kind).expect("kind"), upgram_core::wire::Flags(flags));
        bytes.extend(std::iter::repeat_n(0u8, trailer));
        let _ = Datagram::decode(&bytes);
    }
}

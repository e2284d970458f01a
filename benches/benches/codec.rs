//! Codec benchmarks: encode and decode of a typical query and of the
//! 1024-byte response vector, decode of thousands of distinct query bodies shaped like the load
//! benchmark's distinct mix, signing and verification; batch signing (SPEC.md §10.3.1): the
//! cost per answer of signing batches of 1, 8, 32 and 64 distinct answers against one Ed25519
//! signature, and the cost of verifying a batch-signed reply against one signed alone.
//!
//! Run: `cargo bench -p upgram-benches --bench codec`. Besides criterion's figures it prints,
//! at the end, the decode time of the 1024-byte response as a ratio against a bare quick-xml
//! scan of the same bytes (goal: at most 2), the decode time per query of the distinct query
//! bodies against the same scan of theirs, and the encode times (goal: under 1 µs), measured
//! interleaved in the same run so that a noisy machine moves both sides alike, then the batch
//! signing figures (`--summary-only` skips criterion and prints just these summaries;
//! `--decode-summary` prints only the codec summary, without batch signing).

use std::collections::HashSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use quick_xml::events::Event;
use quick_xml::reader::Reader;
use upgram_benches::vector_bytes;
use upgram_core::Sha256Digest;
use upgram_core::body::{Query, Response};
use upgram_core::message::{Datagram, Message};
use upgram_core::sign::{BatchItem, KeyRing, ReplySigner, SignatureBlock};
use upgram_core::wire::{Frame, MessageKind, QueryOptions};

struct Inputs {
    query_datagram: Vec<u8>,
    query: Query<'static>,
    response_datagram: Vec<u8>,
    response_body: Vec<u8>,
    response: Response<'static>,
}

fn inputs() -> Inputs {
    let query_datagram = vector_bytes("02-");
    let response_datagram = vector_bytes("13-");
    assert_eq!(response_datagram.len(), 1024, "vector 13 is the 1024-byte response");
    let query = match Datagram::decode(&query_datagram).expect("vector 02 decodes").message {
        Message::Query(q) => q.query.into_owned(),
        _ => panic!("vector 02 is a query"),
    };
    let response_body = match Datagram::decode(&response_datagram).expect("vector 13 decodes").message {
        Message::Response(reply) => reply.raw_body().to_vec(),
        _ => panic!("vector 13 is a response"),
    };
    let response = owned_response(&response_body);
    Inputs { query_datagram, query, response_datagram, response_body, response }
}

/// A response that owns its strings, decoded from a leaked copy of `body` (benchmarks only).
fn owned_response(body: &[u8]) -> Response<'static> {
    let leaked: &'static [u8] = Box::leak(body.to_vec().into_boxed_slice());
    Response::decode(leaked).expect("decodes")
}

/// The baseline: every event and every attribute of the body, as quick-xml reads them, with
/// values unescaped, and nothing else.
fn bare_scan(body: &[u8]) -> usize {
    quick_xml_events(body, true)
}

/// Every event of the body as quick-xml reads it, and with `attributes` every attribute with
/// its value unescaped.
fn quick_xml_events(body: &[u8], attributes: bool) -> usize {
    let text = std::str::from_utf8(body).expect("utf8");
    let mut reader = Reader::from_str(text);
    let mut seen = 0;
    loop {
        match reader.read_event().expect("well formed") {
            Event::Start(e) | Event::Empty(e) if attributes => {
                for attribute in e.attributes() {
                    let attribute = attribute.expect("attribute");
                    let value = attribute.normalized_value(quick_xml::XmlVersion::Implicit1_0).expect("value");
                    seen += value.len();
                }
            }
            Event::Eof => return seen,
            _ => seen += 1,
        }
    }
}

/// How many distinct query bodies the query decode benchmarks go through.
const DISTINCT_QUERIES: usize = 4000;

/// splitmix64: a small, seeded, reproducible source of choices.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// One query body like those of the load benchmark's distinct mix, as an installation writes
/// it: `compact="1"` and `docs="module"`, in some queries a channel and a bucket, 3–8 of the
/// modules `module-00`…`module-49` and `big` at published versions, in 10% of the queries a
/// file-level entry in the first module.
fn distinct_query(rng: &mut Rng) -> Vec<u8> {
    const SMALL_VERSIONS: [&str; 3] = ["1.0", "1.1", "1.2"];
    let count = 3 + rng.below(6);
    let with_file = rng.below(10) == 0;
    let mut body = String::from(r#"<query compact="1""#);
    match rng.below(4) {
        0 => body.push_str(r#" channel="beta""#),
        1 => body.push_str(r#" channel="stable""#),
        _ => {}
    }
    if rng.below(2) == 0 {
        body.push_str(&format!(r#" bucket="{}""#, rng.below(100)));
    }
    body.push_str(r#" docs="module">"#);
    let mut picked: Vec<usize> = Vec::with_capacity(count);
    while picked.len() < count {
        let m = rng.below(51);
        if !picked.contains(&m) {
            picked.push(m);
        }
    }
    for (i, &m) in picked.iter().enumerate() {
        if m == 50 {
            body.push_str(&format!(r#"<module id="big" version="{}"/>"#, 1 + rng.below(2)));
            continue;
        }
        let version = SMALL_VERSIONS[rng.below(3)];
        body.push_str(&format!(r#"<module id="module-{m:02}" version="{version}""#));
        if with_file && i == 0 {
            let (file, version) = (rng.below(4), SMALL_VERSIONS[rng.below(3)]);
            body.push_str(&format!(r#"><file id="lib/part-{file:03}.dat" version="{version}"/></module>"#));
        } else {
            body.push_str("/>");
        }
    }
    body.push_str("</query>");
    body.into_bytes()
}

/// `n` distinct query bodies of the load benchmark's distinct mix, each one checked to decode.
fn distinct_queries(n: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x5eed);
    let mut seen = HashSet::new();
    let mut bodies = Vec::with_capacity(n);
    while bodies.len() < n {
        let body = distinct_query(&mut rng);
        if seen.insert(body.clone()) {
            Query::decode(&body).expect("a distinct query decodes");
            bodies.push(body);
        }
    }
    bodies
}

/// The lowest floor: quick-xml's events of the body, attributes not even read.
fn bare_events(body: &[u8]) -> usize {
    quick_xml_events(body, false)
}

/// Decodes every body, as the server decodes the queries it receives.
fn decode_queries(bodies: &[Vec<u8>]) -> usize {
    bodies.iter().map(|body| Query::decode(black_box(body)).expect("decodes").modules.len()).sum()
}

/// The baseline for [`decode_queries`]: a bare quick-xml scan of every body.
fn scan_queries(bodies: &[Vec<u8>]) -> usize {
    bodies.iter().map(|body| bare_scan(black_box(body))).sum()
}

fn decode_datagram(bytes: &[u8]) -> usize {
    match Datagram::decode(bytes).expect("decodes").message {
        Message::Response(reply) => reply.body_unverified().modules.len(),
        Message::Query(query) => query.query.modules.len(),
        _ => 0,
    }
}

fn encode_query(query: &Query<'_>, out: &mut Vec<u8>, datagram: &mut Vec<u8>) -> usize {
    out.clear();
    query.encode(out);
    datagram.clear();
    Frame::query(7, out, &QueryOptions::default()).encode(datagram).expect("fits")
}

fn encode_response(response: &Response<'_>, out: &mut Vec<u8>) -> usize {
    out.clear();
    response.encode(out);
    out.len()
}

fn codec(c: &mut Criterion) {
    let inputs = inputs();
    let signer = ReplySigner::from_seed(&[7; 32]);
    let mut keys = KeyRing::new();
    keys.add(signer.verifying_key());
    let signature = signer.sign(MessageKind::Response, None, &inputs.response_body);
    let (mut out, mut datagram) = (Vec::with_capacity(1024), Vec::with_capacity(1024));

    let mut group = c.benchmark_group("decode");
    group.bench_function("query datagram (vector 02)", |b| {
        b.iter(|| decode_datagram(black_box(&inputs.query_datagram)))
    });
    group.bench_function("1024-byte response datagram (vector 13)", |b| {
        b.iter(|| decode_datagram(black_box(&inputs.response_datagram)))
    });
    group.bench_function("baseline: bare quick-xml scan of the same body", |b| {
        b.iter(|| bare_scan(black_box(&inputs.response_body)))
    });
    let queries = distinct_queries(DISTINCT_QUERIES);
    group.throughput(Throughput::Elements(queries.len() as u64));
    group.bench_function("distinct query bodies (load mix)", |b| b.iter(|| decode_queries(&queries)));
    group.bench_function("baseline: bare quick-xml scan of the distinct query bodies", |b| {
        b.iter(|| scan_queries(&queries))
    });
    group.finish();

    let mut group = c.benchmark_group("encode");
    group.bench_function("query datagram (vector 02)", |b| {
        b.iter(|| encode_query(black_box(&inputs.query), &mut out, &mut datagram))
    });
    group.bench_function("1024-byte response body (vector 13)", |b| {
        b.iter(|| encode_response(black_box(&inputs.response), &mut out))
    });
    group.finish();

    let mut group = c.benchmark_group("signature");
    group.bench_function("sign 1024-byte response", |b| {
        b.iter(|| signer.sign(MessageKind::Response, None, black_box(&inputs.response_body)))
    });
    group.bench_function("verify 1024-byte response", |b| {
        b.iter(|| keys.verify(MessageKind::Response, None, black_box(&inputs.response_body), &signature))
    });
    group.finish();
}

/// The batch sizes measured.
const BATCH_SIZES: [usize; 4] = [1, 8, 32, 64];

/// `n` distinct answers like vector 04's (a single-module answer), each for another query.
fn distinct_answers(n: usize) -> Vec<Vec<u8>> {
    let datagram = vector_bytes("04-");
    let body = match Datagram::decode(&datagram).expect("vector 04 decodes").message {
        Message::Response(reply) => reply.raw_body().to_vec(),
        _ => panic!("vector 04 is a response"),
    };
    let template = Response::decode(&body).expect("decodes");
    (0..n)
        .map(|i| {
            let mut answer = template.clone();
            answer.binding.query = Sha256Digest::of(&i.to_be_bytes());
            answer.to_vec()
        })
        .collect()
}

fn batch_items(bodies: &[Vec<u8>]) -> Vec<BatchItem<'_>> {
    bodies.iter().map(|body| BatchItem { kind: MessageKind::Response, nonce: None, body, room: 1024 }).collect()
}

/// Signs the `n` answers as the server does when they are ready at the same time.
fn sign_batch(signer: &ReplySigner, items: &[BatchItem<'_>]) -> usize {
    signer.sign_batch(items).len()
}

fn batching(c: &mut Criterion) {
    let signer = ReplySigner::from_seed(&[7; 32]);
    let mut keys = KeyRing::new();
    keys.add(signer.verifying_key());
    let mut group = c.benchmark_group("batch");
    for n in BATCH_SIZES {
        let bodies = distinct_answers(n);
        let items = batch_items(&bodies);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("sign a batch of {n} answers"), |b| {
            b.iter(|| sign_batch(&signer, black_box(&items)))
        });
    }
    let bodies = distinct_answers(64);
    let blocks = signer.sign_batch(&batch_items(&bodies));
    let single = signer.sign(MessageKind::Response, None, &bodies[0]);
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify a reply signed alone", |b| {
        b.iter(|| keys.verify(MessageKind::Response, None, black_box(&bodies[0]), &single))
    });
    group.bench_function("verify a batch-signed reply (64 answers, depth 6)", |b| {
        b.iter(|| keys.verify(MessageKind::Response, None, black_box(&bodies[0]), &blocks[0]))
    });
    group.finish();
}

/// Median time per call of `f`, over `rounds` batches of `batch` calls.
fn per_call(rounds: usize, batch: u32, mut f: impl FnMut() -> usize) -> Vec<Duration> {
    (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                black_box(f());
            }
            start.elapsed() / batch
        })
        .collect()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The codec goals, measured interleaved in one run.
fn summary() {
    let inputs = inputs();
    let (mut out, mut datagram) = (Vec::with_capacity(1024), Vec::with_capacity(1024));
    let (mut decode, mut scan, mut enc_query, mut enc_response) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..31 {
        decode.extend(per_call(1, 20_000, || decode_datagram(&inputs.response_datagram)));
        scan.extend(per_call(1, 20_000, || bare_scan(&inputs.response_body)));
        enc_query.extend(per_call(1, 20_000, || encode_query(&inputs.query, &mut out, &mut datagram)));
        enc_response.extend(per_call(1, 20_000, || encode_response(&inputs.response, &mut out)));
    }
    let (decode, scan) = (median(decode), median(scan));
    let ratio = decode.as_secs_f64() / scan.as_secs_f64();
    println!();
    println!("== upgram codec summary (medians of 31 interleaved batches of 20000) ==");
    println!("decode 1024-byte response datagram: {decode:?}");
    println!("bare quick-xml scan of its body:     {scan:?}");
    println!("ratio decode / scan: {ratio:.2} (goal <= 2.00) {}", if ratio <= 2.0 { "MET" } else { "NOT MET" });
    let (enc_query, enc_response) = (median(enc_query), median(enc_response));
    println!("encode query datagram (vector 02):   {enc_query:?} (goal < 1 µs) {}", verdict(enc_query));
    println!("encode 1024-byte response body:      {enc_response:?} (goal < 1 µs) {}", verdict(enc_response));
    query_summary();
}

/// Query decoding of the distinct mix, measured interleaved against the bare quick-xml scan of
/// the same bodies: each round decodes every body, then scans every body.
fn query_summary() {
    let queries = distinct_queries(DISTINCT_QUERIES);
    let bytes: usize = queries.iter().map(Vec::len).sum();
    let (mut decode, mut scan, mut events) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..31 {
        decode.extend(per_call(1, 5, || decode_queries(&queries)));
        scan.extend(per_call(1, 5, || scan_queries(&queries)));
        events.extend(per_call(1, 5, || queries.iter().map(|body| bare_events(black_box(body))).sum()));
    }
    let per_query = |d: Duration| d.as_secs_f64() * 1e9 / queries.len() as f64;
    let (decode, scan, events) = (per_query(median(decode)), per_query(median(scan)), per_query(median(events)));
    println!();
    println!(
        "== query decode, {} distinct bodies of the load mix (mean {} bytes; medians of 31 interleaved rounds) ==",
        queries.len(),
        bytes / queries.len()
    );
    println!("Query::decode:                    {decode:.0} ns per query");
    println!("bare quick-xml scan of the bodies: {scan:.0} ns per query");
    println!("quick-xml events alone, no attributes: {events:.0} ns per query");
    println!("ratio decode / scan: {:.2}; decode / events alone: {:.2}", decode / scan, decode / events);
}

/// Batch signing, measured interleaved: the cost per answer of each batch size against one
/// Ed25519 signature, and verification of a batch-signed reply against one signed alone.
fn batch_summary() {
    let signer = ReplySigner::from_seed(&[7; 32]);
    let mut keys = KeyRing::new();
    keys.add(signer.verifying_key());
    let sets: Vec<Vec<Vec<u8>>> = BATCH_SIZES.iter().map(|&n| distinct_answers(n)).collect();
    let items: Vec<Vec<BatchItem<'_>>> = sets.iter().map(|bodies| batch_items(bodies)).collect();
    let deepest = &sets[BATCH_SIZES.len() - 1];
    let blocks = signer.sign_batch(&items[BATCH_SIZES.len() - 1]);
    let single: SignatureBlock = signer.sign(MessageKind::Response, None, &deepest[0]);
    let mut alone = Vec::new();
    let mut per_size: Vec<Vec<Duration>> = vec![Vec::new(); BATCH_SIZES.len()];
    let (mut verify_single, mut verify_batch) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        alone.extend(per_call(1, 400, || signer.sign(MessageKind::Response, None, &deepest[0]).signature.len()));
        for (k, set) in items.iter().enumerate() {
            let calls = (6400 / set.len()) as u32;
            let per_batch = per_call(1, calls, || sign_batch(&signer, set));
            per_size[k].extend(per_batch.into_iter().map(|d| d / set.len() as u32));
        }
        verify_single.extend(per_call(1, 400, || {
            usize::from(keys.verify(MessageKind::Response, None, &deepest[0], &single).is_ok())
        }));
        verify_batch.extend(per_call(1, 400, || {
            usize::from(keys.verify(MessageKind::Response, None, &deepest[0], &blocks[0]).is_ok())
        }));
    }
    let alone = median(alone);
    println!();
    println!("== batch signing (medians of 15 interleaved rounds; answers like vector 04, all distinct) ==");
    println!("one Ed25519 signature (answer signed alone): {alone:?}");
    for (k, n) in BATCH_SIZES.iter().enumerate() {
        let cost = median(std::mem::take(&mut per_size[k]));
        println!(
            "batch of {n:>2}: {cost:?} per answer = {:.3} of one signature",
            cost.as_secs_f64() / alone.as_secs_f64()
        );
    }
    let (single, batch) = (median(verify_single), median(verify_batch));
    println!(
        "verify: signed alone {single:?}, batch-signed at depth 6 {batch:?} (ratio {:.3})",
        batch.as_secs_f64() / single.as_secs_f64()
    );
}

fn verdict(d: Duration) -> &'static str {
    if d < Duration::from_micros(1) { "MET" } else { "NOT MET" }
}

fn main() {
    if std::env::args().any(|a| a == "--decode-summary") {
        summary();
        return;
    }
    if !std::env::args().any(|a| a == "--summary-only") {
        let mut criterion = Criterion::default().configure_from_args();
        codec(&mut criterion);
        batching(&mut criterion);
        criterion.final_summary();
    }
    summary();
    batch_summary();
}

//! §7 Record files and record deltas: layouts, merge rules, hashes and hostile input.

use proptest::prelude::*;
use sha2::{Digest, Sha256};
use upgram_core::records::{
    Change, DeltaEntry, MAX_RECORD_COUNT, MAX_RECORD_LEN, Record, RecordDelta, RecordError, RecordFile, apply_delta,
    diff, merge,
};

fn file<'a>(records: &[(u64, &'a [u8])]) -> RecordFile<'a> {
    let records = records.iter().map(|&(id, content)| Record { id, content }).collect();
    RecordFile::from_records(records).unwrap()
}

fn encode_file(file: &RecordFile<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    file.encode(&mut out);
    out
}

fn encode_delta(delta: &RecordDelta<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    delta.encode(&mut out);
    out
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Figure 9 of the patent: record 1 replaced, record 2 deleted, record 100 added.
#[test]
fn figure_9_example() {
    let old = file(&[(1, b"one"), (2, b"two"), (3, b"three")]);
    let new = file(&[(1, b"ONE"), (3, b"three"), (100, b"hundred")]);
    let delta = diff(&old, &new);
    assert_eq!(
        delta.entries(),
        &[
            DeltaEntry { id: 1, change: Change::Put(b"ONE") },
            DeltaEntry { id: 2, change: Change::Delete },
            DeltaEntry { id: 100, change: Change::Put(b"hundred") },
        ]
    );
    let old_bytes = encode_file(&old);
    let new_bytes = encode_file(&new);
    assert_eq!(delta.base_sha256(), &sha256(&old_bytes));
    assert_eq!(delta.result_sha256(), &sha256(&new_bytes));

    let delta_bytes = encode_delta(&delta);
    let mut expected = Vec::new();
    expected.extend_from_slice(b"UGRD\x01");
    expected.extend_from_slice(&sha256(&old_bytes));
    expected.extend_from_slice(&sha256(&new_bytes));
    expected.extend_from_slice(&3u32.to_be_bytes());
    expected.extend_from_slice(&1u64.to_be_bytes());
    expected.extend_from_slice(&3u32.to_be_bytes());
    expected.extend_from_slice(b"ONE");
    expected.extend_from_slice(&2u64.to_be_bytes());
    expected.extend_from_slice(&0u32.to_be_bytes());
    expected.extend_from_slice(&100u64.to_be_bytes());
    expected.extend_from_slice(&7u32.to_be_bytes());
    expected.extend_from_slice(b"hundred");
    assert_eq!(delta_bytes, expected);
    assert_eq!(delta.encoded_len(), expected.len());

    let merged = merge(&old, &delta).unwrap();
    assert_eq!(merged, new);
    assert_eq!(apply_delta(&old_bytes, &delta_bytes).unwrap(), new_bytes);
}

#[test]
fn file_layout() {
    let f = file(&[(7, b"hi"), (0x0102_0304_0506_0708, b"x")]);
    let bytes = encode_file(&f);
    let expected: &[u8] = b"UGRF\x01\x00\x00\x00\x02\
        \x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x00\x02hi\
        \x01\x02\x03\x04\x05\x06\x07\x08\x00\x00\x00\x01x";
    assert_eq!(bytes, expected);
    assert_eq!(f.encoded_len(), bytes.len());
    assert_eq!(f.sha256(), sha256(&bytes));
    assert_eq!(RecordFile::decode(&bytes).unwrap(), f);
    assert_eq!(f.get(7), Some(&b"hi"[..]));
    assert_eq!(f.get(8), None);
    assert_eq!(f.len(), 2);

    let empty = file(&[]);
    assert_eq!(encode_file(&empty), b"UGRF\x01\x00\x00\x00\x00");
    assert!(empty.is_empty());
}

fn header(count: u32) -> Vec<u8> {
    let mut bytes = b"UGRF\x01".to_vec();
    bytes.extend_from_slice(&count.to_be_bytes());
    bytes
}

fn push_record(bytes: &mut Vec<u8>, id: u64, content: &[u8]) {
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&u32::try_from(content.len()).unwrap().to_be_bytes());
    bytes.extend_from_slice(content);
}

#[test]
fn invalid_files() {
    let mut unsorted = header(2);
    push_record(&mut unsorted, 5, b"a");
    push_record(&mut unsorted, 4, b"b");
    let mut duplicate = header(2);
    push_record(&mut duplicate, 5, b"a");
    push_record(&mut duplicate, 5, b"b");
    let mut empty_record = header(1);
    push_record(&mut empty_record, 9, b"");
    let mut trailing = header(1);
    push_record(&mut trailing, 1, b"a");
    trailing.push(0);
    let mut short_content = header(1);
    short_content.extend_from_slice(&3u64.to_be_bytes());
    short_content.extend_from_slice(&10u32.to_be_bytes());
    short_content.extend_from_slice(b"abc");
    let mut too_long_record = header(1);
    too_long_record.extend_from_slice(&3u64.to_be_bytes());
    too_long_record.extend_from_slice(&(MAX_RECORD_LEN as u32 + 1).to_be_bytes());
    let mut too_many = b"UGRF\x01".to_vec();
    too_many.extend_from_slice(&(MAX_RECORD_COUNT as u32 + 1).to_be_bytes());
    let huge_count = header(u32::MAX - 1);

    let cases: Vec<(&str, Vec<u8>, RecordError)> = vec![
        ("empty input", Vec::new(), RecordError::Truncated { what: "file", offset: 0, expected: "magic" }),
        (
            "bad magic",
            b"UGRD\x01\x00\x00\x00\x00".to_vec(),
            RecordError::BadMagic { what: "file", found: *b"UGRD", expected: "UGRF" },
        ),
        (
            "unknown format version",
            b"UGRF\x02\x00\x00\x00\x00".to_vec(),
            RecordError::UnsupportedFormat { what: "file", version: 2 },
        ),
        (
            "truncated count",
            b"UGRF\x01\x00\x00".to_vec(),
            RecordError::Truncated { what: "file", offset: 5, expected: "record count" },
        ),
        (
            "count larger than the records present",
            header(1),
            RecordError::Truncated { what: "file", offset: 9, expected: "record id" },
        ),
        ("unsorted", unsorted, RecordError::OutOfOrder { id: 4, previous: 5, offset: 22 }),
        ("duplicate", duplicate, RecordError::DuplicateId { id: 5, offset: 22 }),
        ("empty record", empty_record, RecordError::EmptyRecord { id: 9, offset: 9 }),
        ("trailing bytes", trailing, RecordError::TrailingBytes { what: "file", offset: 22, count: 1 }),
        (
            "content past the end",
            short_content,
            RecordError::TruncatedContent { what: "file", id: 3, offset: 21, len: 10, available: 3 },
        ),
        (
            "record too large",
            too_long_record,
            RecordError::RecordTooLarge { id: 3, offset: 9, len: MAX_RECORD_LEN + 1 },
        ),
        ("too many records", too_many, RecordError::TooManyRecords { what: "file", count: MAX_RECORD_COUNT + 1 }),
        (
            "maximum count with no records",
            header(MAX_RECORD_COUNT as u32),
            RecordError::Truncated { what: "file", offset: 9, expected: "record id" },
        ),
        (
            "huge count with no records",
            huge_count,
            RecordError::TooManyRecords { what: "file", count: (u32::MAX - 1) as usize },
        ),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(RecordFile::decode(&bytes), Err(expected), "{name}");
    }
}

#[test]
fn from_records_checks_order_and_content() {
    let cases: Vec<(Vec<Record<'static>>, RecordError)> = vec![
        (
            vec![Record { id: 2, content: b"a" }, Record { id: 1, content: b"b" }],
            RecordError::OutOfOrder { id: 1, previous: 2, offset: 22 },
        ),
        (
            vec![Record { id: 2, content: b"a" }, Record { id: 2, content: b"b" }],
            RecordError::DuplicateId { id: 2, offset: 22 },
        ),
        (vec![Record { id: 2, content: b"" }], RecordError::EmptyRecord { id: 2, offset: 9 }),
    ];
    for (records, expected) in cases {
        assert_eq!(RecordFile::from_records(records), Err(expected));
    }
}

#[test]
fn delta_constructor_checks_entries() {
    let put_empty = RecordDelta::new([0; 32], [0; 32], vec![DeltaEntry { id: 1, change: Change::Put(b"") }]);
    assert_eq!(put_empty, Err(RecordError::EmptyRecord { id: 1, offset: 73 }));
    let unsorted = RecordDelta::new(
        [0; 32],
        [0; 32],
        vec![DeltaEntry { id: 3, change: Change::Delete }, DeltaEntry { id: 1, change: Change::Delete }],
    );
    assert_eq!(unsorted, Err(RecordError::OutOfOrder { id: 1, previous: 3, offset: 85 }));
}

#[test]
fn invalid_deltas() {
    let base = file(&[(1, b"a")]);
    let base_bytes = encode_file(&base);
    let hash = sha256(&base_bytes);
    let mut prefix = b"UGRD\x01".to_vec();
    prefix.extend_from_slice(&hash);
    prefix.extend_from_slice(&hash);

    let mut unsorted = prefix.clone();
    unsorted.extend_from_slice(&2u32.to_be_bytes());
    push_record(&mut unsorted, 2, b"");
    push_record(&mut unsorted, 2, b"x");
    assert_eq!(RecordDelta::decode(&unsorted), Err(RecordError::DuplicateId { id: 2, offset: 85 }));

    let mut bad_magic = prefix.clone();
    bad_magic[..4].copy_from_slice(b"UGRF");
    bad_magic.extend_from_slice(&0u32.to_be_bytes());
    assert_eq!(
        RecordDelta::decode(&bad_magic),
        Err(RecordError::BadMagic { what: "delta", found: *b"UGRF", expected: "UGRD" })
    );

    let mut delete_missing = prefix.clone();
    delete_missing.extend_from_slice(&1u32.to_be_bytes());
    push_record(&mut delete_missing, 7, b"");
    assert_eq!(apply_delta(&base_bytes, &delete_missing), Err(RecordError::DeleteMissing { id: 7 }));
}

#[test]
fn base_and_result_mismatch_are_distinct() {
    let a = file(&[(1, b"a"), (2, b"b")]);
    let b = file(&[(1, b"A"), (3, b"c")]);
    let a_bytes = encode_file(&a);
    let delta = diff(&a, &b);

    let other_base = encode_file(&file(&[(1, b"z")]));
    let delta_bytes = encode_delta(&delta);
    assert!(matches!(
        apply_delta(&other_base, &delta_bytes),
        Err(RecordError::BaseMismatch { expected, actual })
            if expected == sha256(&a_bytes) && actual == sha256(&other_base)
    ));

    let lying = RecordDelta::new(*delta.base_sha256(), [0xab; 32], delta.entries().to_vec()).unwrap();
    let lying_bytes = encode_delta(&lying);
    let error = apply_delta(&a_bytes, &lying_bytes).unwrap_err();
    assert!(matches!(
        error,
        RecordError::ResultMismatch { expected, actual }
            if expected == [0xab; 32] && actual == sha256(&encode_file(&b))
    ));
    assert!(error.to_string().starts_with("record delta result mismatch: delta promises sha256 abababab"));
}

#[test]
fn merge_rules() {
    let base = file(&[(1, b"a"), (5, b"e")]);
    let delta = RecordDelta::new(
        [0; 32],
        [0; 32],
        vec![
            DeltaEntry { id: 0, change: Change::Put(b"zero") },
            DeltaEntry { id: 1, change: Change::Delete },
            DeltaEntry { id: 5, change: Change::Put(b"E") },
            DeltaEntry { id: 9, change: Change::Put(b"i") },
        ],
    )
    .unwrap();
    let merged = merge(&base, &delta).unwrap();
    assert_eq!(merged, file(&[(0, b"zero"), (5, b"E"), (9, b"i")]));

    let delete_missing =
        RecordDelta::new([0; 32], [0; 32], vec![DeltaEntry { id: 2, change: Change::Delete }]).unwrap();
    assert_eq!(merge(&base, &delete_missing), Err(RecordError::DeleteMissing { id: 2 }));
}

/// Record files of up to 12 records with small ids (so that two files share some).
fn record_file() -> impl Strategy<Value = Vec<(u64, Vec<u8>)>> {
    prop::collection::btree_map(0u64..24, prop::collection::vec(any::<u8>(), 1..6), 0..12)
        .prop_map(|records| records.into_iter().collect())
}

fn as_file(records: &[(u64, Vec<u8>)]) -> RecordFile<'_> {
    RecordFile::from_records(records.iter().map(|(id, content)| Record { id: *id, content }).collect()).unwrap()
}

proptest! {
    #[test]
    fn file_round_trips(records in record_file()) {
        let f = as_file(&records);
        let bytes = encode_file(&f);
        prop_assert_eq!(RecordFile::decode(&bytes).unwrap(), f);
    }

    #[test]
    fn delta_round_trips(a in record_file(), b in record_file()) {
        let delta = diff(&as_file(&a), &as_file(&b));
        let bytes = encode_delta(&delta);
        prop_assert_eq!(bytes.len(), delta.encoded_len());
        prop_assert_eq!(RecordDelta::decode(&bytes).unwrap(), delta);
    }

    #[test]
    fn merge_of_diff_gives_the_new_file(a in record_file(), b in record_file()) {
        let (a, b) = (as_file(&a), as_file(&b));
        let delta = diff(&a, &b);
        prop_assert_eq!(&merge(&a, &delta).unwrap(), &b);
        let applied = apply_delta(&encode_file(&a), &encode_delta(&delta)).unwrap();
        prop_assert_eq!(applied, encode_file(&b));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = RecordFile::decode(&bytes);
        let _ = RecordDelta::decode(&bytes);
        let _ = apply_delta(&bytes, &bytes);
    }

    #[test]
    fn plausible_headers_never_panic(
        file_tail in prop::collection::vec(any::<u8>(), 0..120),
        delta_tail in prop::collection::vec(any::<u8>(), 0..120),
        base in record_file(),
    ) {
        let base = encode_file(&as_file(&base));
        let mut file_bytes = b"UGRF\x01".to_vec();
        file_bytes.extend_from_slice(&file_tail);
        let mut delta_bytes = b"UGRD\x01".to_vec();
        delta_bytes.extend_from_slice(&sha256(&base));
        delta_bytes.extend_from_slice(&[0; 32]);
        delta_bytes.extend_from_slice(&delta_tail);
        let _ = RecordFile::decode(&file_bytes);
        let _ = apply_delta(&base, &delta_bytes);
        let _ = apply_delta(&file_bytes, &delta_bytes);
    }

    #[test]
    fn every_truncation_is_an_error(a in record_file(), b in record_file()) {
        let (a, b) = (as_file(&a), as_file(&b));
        let file_bytes = encode_file(&b);
        for len in 0..file_bytes.len() {
            prop_assert!(RecordFile::decode(&file_bytes[..len]).is_err(), "file cut at {}", len);
        }
        let delta_bytes = encode_delta(&diff(&a, &b));
        let base_bytes = encode_file(&a);
        for len in 0..delta_bytes.len() {
            prop_assert!(RecordDelta::decode(&delta_bytes[..len]).is_err(), "delta cut at {}", len);
            prop_assert!(apply_delta(&base_bytes, &delta_bytes[..len]).is_err());
        }
    }

    #[test]
    fn wrong_base_is_detected(a in record_file(), b in record_file(), c in record_file()) {
        let (a, b, c) = (as_file(&a), as_file(&b), as_file(&c));
        prop_assume!(a != c);
        let delta_bytes = encode_delta(&diff(&a, &b));
        let result = apply_delta(&encode_file(&c), &delta_bytes);
        prop_assert!(
            matches!(result, Err(RecordError::BaseMismatch { .. })),
            "got {:?}",
            result
        );
    }
}

//! §6 Versions: syntax, total order, hashing and the text round trip.

use std::cmp::Ordering;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use proptest::prelude::*;
use upgram_core::version::{Version, VersionError};

fn v(text: &str) -> Version<'_> {
    match Version::parse(text) {
        Ok(version) => version,
        Err(error) => panic!("`{text}` should parse: {error}"),
    }
}

fn hash_of(version: &Version<'_>) -> u64 {
    let mut hasher = DefaultHasher::new();
    version.hash(&mut hasher);
    hasher.finish()
}

#[test]
fn valid_versions() {
    let valid = [
        "0",
        "1",
        "1.2",
        "1.2.3",
        "10.20.30",
        "1.2.3.4.5.6.7.8",
        "18446744073709551615",
        "0.0.0",
        "1.0-alpha",
        "1.0-alpha.1",
        "1.0-0.3.7",
        "1.0-x.7.z.92",
        "1.0-x-y-z.--",
        "1-0",
        "1-a0",
        "1-0a",
        "1-18446744073709551615",
        "1.2.3.4.5.6.7.8-rc.1",
    ];
    for text in valid {
        let version = v(text);
        assert_eq!(version.as_str(), text);
        assert_eq!(version.to_string(), text);
    }
    let longest = format!("1-{}", "a".repeat(62));
    assert_eq!(longest.len(), 64);
    assert!(Version::parse(&longest).is_ok());
}

#[test]
fn invalid_versions() {
    fn text(s: &str) -> String {
        s.to_owned()
    }
    let too_long = format!("1-{}", "a".repeat(63));
    let cases: Vec<(&str, VersionError)> = vec![
        ("", VersionError::Empty),
        (&too_long, VersionError::TooLong { len: 65 }),
        ("v1", VersionError::ExpectedNumber { text: text("v1"), position: 0 }),
        (".1", VersionError::ExpectedNumber { text: text(".1"), position: 0 }),
        ("1.", VersionError::ExpectedNumber { text: text("1."), position: 2 }),
        ("1..2", VersionError::ExpectedNumber { text: text("1..2"), position: 2 }),
        (" 1", VersionError::ExpectedNumber { text: text(" 1"), position: 0 }),
        ("-1", VersionError::ExpectedNumber { text: text("-1"), position: 0 }),
        ("01", VersionError::LeadingZero { text: text("01"), position: 0 }),
        ("1.02", VersionError::LeadingZero { text: text("1.02"), position: 2 }),
        ("1.00", VersionError::LeadingZero { text: text("1.00"), position: 2 }),
        ("1-01", VersionError::LeadingZero { text: text("1-01"), position: 2 }),
        ("1-a.00", VersionError::LeadingZero { text: text("1-a.00"), position: 4 }),
        ("18446744073709551616", VersionError::NumberTooLarge { text: text("18446744073709551616"), position: 0 }),
        ("1.99999999999999999999", VersionError::NumberTooLarge { text: text("1.99999999999999999999"), position: 2 }),
        ("1-18446744073709551616", VersionError::NumberTooLarge { text: text("1-18446744073709551616"), position: 2 }),
        (
            "1-a.18446744073709551616",
            VersionError::NumberTooLarge { text: text("1-a.18446744073709551616"), position: 4 },
        ),
        ("1.2.3.4.5.6.7.8.9", VersionError::TooManySegments { text: text("1.2.3.4.5.6.7.8.9"), position: 16 }),
        ("1-", VersionError::ExpectedIdentifier { text: text("1-"), position: 2 }),
        ("1-a.", VersionError::ExpectedIdentifier { text: text("1-a."), position: 4 }),
        ("1-a..b", VersionError::ExpectedIdentifier { text: text("1-a..b"), position: 4 }),
        ("1-é", VersionError::ExpectedIdentifier { text: text("1-é"), position: 2 }),
        ("1-_", VersionError::ExpectedIdentifier { text: text("1-_"), position: 2 }),
        ("1.2+build", VersionError::BuildMetadata { text: text("1.2+build"), position: 3 }),
        ("1.2-rc.1+b5", VersionError::BuildMetadata { text: text("1.2-rc.1+b5"), position: 8 }),
        ("1.2 ", VersionError::UnexpectedCharacter { text: text("1.2 "), position: 3, found: ' ' }),
        ("1.2\n", VersionError::UnexpectedCharacter { text: text("1.2\n"), position: 3, found: '\n' }),
        ("1.2a", VersionError::UnexpectedCharacter { text: text("1.2a"), position: 3, found: 'a' }),
        ("1-a b", VersionError::UnexpectedCharacter { text: text("1-a b"), position: 3, found: ' ' }),
        ("1-a_b", VersionError::UnexpectedCharacter { text: text("1-a_b"), position: 3, found: '_' }),
        ("1٣", VersionError::UnexpectedCharacter { text: text("1٣"), position: 1, found: '٣' }),
    ];
    for (input, expected) in cases {
        assert_eq!(Version::parse(input), Err(expected), "input {input:?}");
    }
}

#[test]
fn error_messages_say_what_and_where() {
    let error = Version::parse("1.02").unwrap_err();
    assert_eq!(error.to_string(), "version `1.02`: number with a leading zero at byte 2");
}

#[test]
fn documented_order_holds_pairwise() {
    // Each entry is greater than the one before, except where marked equal.
    let ordered = [
        ("0.9", false),
        ("1.0-alpha", false),
        ("1.0-alpha.1", false),
        ("1.0-alpha.beta", false),
        ("1.0-beta", false),
        ("1.0-beta.2", false),
        ("1.0-beta.11", false),
        ("1.0-rc.1", false),
        ("1.0", false),
        ("1.0.0", true),
        ("1", true),
        ("1.0.1", false),
        ("1.1", false),
        ("1.10", false),
        ("2", false),
        ("2.0.0.0.0.0.0.1", false),
        ("18446744073709551615", false),
    ];
    let versions: Vec<Version<'_>> = ordered.iter().map(|(text, _)| v(text)).collect();
    let mut rank = Vec::new();
    let mut current = 0;
    for (i, (_, equal_to_previous)) in ordered.iter().enumerate() {
        if i > 0 && !equal_to_previous {
            current += 1;
        }
        rank.push(current);
    }
    for (i, a) in versions.iter().enumerate() {
        for (j, b) in versions.iter().enumerate() {
            assert_eq!(a.cmp(b), rank[i].cmp(&rank[j]), "{a} vs {b}");
            assert_eq!(a == b, rank[i] == rank[j], "{a} == {b}");
            if a == b {
                assert_eq!(hash_of(a), hash_of(b), "hash {a} vs {b}");
            }
        }
    }
}

#[test]
fn semver_precedence_examples() {
    let pairs = [
        ("1-1", "1-a", Ordering::Less),
        ("1-9", "1-10", Ordering::Less),
        ("1-a", "1-a.0", Ordering::Less),
        ("1-B", "1-a", Ordering::Less),
        ("1-a-b", "1-a", Ordering::Greater),
        ("1-9999999999999999999", "1-10000000000000000000", Ordering::Less),
        ("1.2-x", "1.2.0-x", Ordering::Equal),
        ("1.2-x", "1.2.1-a", Ordering::Less),
    ];
    for (a, b, expected) in pairs {
        assert_eq!(v(a).cmp(&v(b)), expected, "{a} vs {b}");
        assert_eq!(v(b).cmp(&v(a)), expected.reverse(), "{b} vs {a}");
    }
}

#[test]
fn parse_borrows_and_into_owned_detaches() {
    let owned_text = String::from("3.1-rc.2");
    let borrowed = Version::parse(&owned_text).unwrap();
    assert!(std::ptr::eq(borrowed.as_str(), owned_text.as_str()));
    let owned: Version<'static> = borrowed.into_owned();
    drop(owned_text);
    assert_eq!(owned.as_str(), "3.1-rc.2");
    assert_eq!(owned.pre_release(), Some("rc.2"));
    assert!(owned.is_pre_release());
}

#[test]
fn from_str_from_cow_and_serde() {
    let parsed: Version<'static> = "2.0-beta".parse().unwrap();
    let from_cow = Version::from_cow(std::borrow::Cow::Owned(String::from("2.0-beta"))).unwrap();
    assert_eq!(parsed, from_cow);
    assert!("2.0 beta".parse::<Version<'static>>().is_err());
    assert!(Version::from_cow("x".into()).is_err());

    use serde::de::IntoDeserializer;
    use serde::de::value::{BorrowedStrDeserializer, Error as DeError};
    let de: BorrowedStrDeserializer<'_, DeError> = BorrowedStrDeserializer::new("1.2.3");
    let version: Version<'_> = serde::Deserialize::deserialize(de).unwrap();
    assert_eq!(version.as_str(), "1.2.3");
    let de = IntoDeserializer::<DeError>::into_deserializer("1.02");
    let result: Result<Version<'_>, DeError> = serde::Deserialize::deserialize(de);
    assert!(result.is_err());
}

#[test]
fn serializes_as_the_string() {
    assert_serializes_as_str(&v("4.5-rc.1"), "4.5-rc.1");
    assert_serializes_as_str(&v("1.2.0"), "1.2.0");
}

/// Serializes with a serializer that accepts only strings and returns the one it gets.
fn assert_serializes_as_str(version: &Version<'_>, expected: &str) {
    use serde::Serialize;
    let got = version.serialize(StrOnly).unwrap();
    assert_eq!(got, expected);
}

struct StrOnly;

#[derive(Debug)]
struct NotAString;

impl std::fmt::Display for NotAString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a string")
    }
}

impl std::error::Error for NotAString {}

impl serde::ser::Error for NotAString {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        NotAString
    }
}

impl serde::Serializer for StrOnly {
    type Ok = String;
    type Error = NotAString;
    type SerializeSeq = serde::ser::Impossible<String, NotAString>;
    type SerializeTuple = serde::ser::Impossible<String, NotAString>;
    type SerializeTupleStruct = serde::ser::Impossible<String, NotAString>;
    type SerializeTupleVariant = serde::ser::Impossible<String, NotAString>;
    type SerializeMap = serde::ser::Impossible<String, NotAString>;
    type SerializeStruct = serde::ser::Impossible<String, NotAString>;
    type SerializeStructVariant = serde::ser::Impossible<String, NotAString>;

    fn serialize_str(self, v: &str) -> Result<String, NotAString> {
        Ok(v.to_owned())
    }
    fn serialize_bool(self, _: bool) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_i8(self, _: i8) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_i16(self, _: i16) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_i32(self, _: i32) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_i64(self, _: i64) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_u8(self, _: u8) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_u16(self, _: u16) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_u32(self, _: u32) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_u64(self, _: u64) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_f32(self, _: f32) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_f64(self, _: f64) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_char(self, _: char) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_none(self) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_some<T: ?Sized + serde::Serialize>(self, _: &T) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_unit(self) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_newtype_struct<T: ?Sized + serde::Serialize>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_newtype_variant<T: ?Sized + serde::Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<String, NotAString> {
        Err(NotAString)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotAString> {
        Err(NotAString)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotAString> {
        Err(NotAString)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, NotAString> {
        Err(NotAString)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotAString> {
        Err(NotAString)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotAString> {
        Err(NotAString)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, NotAString> {
        Err(NotAString)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotAString> {
        Err(NotAString)
    }
}

/// Valid version texts: 1..=8 numeric segments, an optional pre-release.
fn version_text() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        3 => 0u64..4,
        1 => any::<u64>(),
    ];
    let numbers = prop::collection::vec(number, 1..=8);
    let identifier =
        prop_oneof![(0u64..12).prop_map(|n| n.to_string()), "[0-9A-Za-z-]{0,3}[A-Za-z-][0-9A-Za-z-]{0,3}",];
    let pre = prop::option::of(prop::collection::vec(identifier, 1..4));
    (numbers, pre)
        .prop_map(|(numbers, pre)| {
            let mut text = numbers.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
            if let Some(pre) = pre {
                text.push('-');
                text.push_str(&pre.join("."));
            }
            text
        })
        .prop_filter("at most 64 bytes", |text| text.len() <= 64)
}

proptest! {
    #[test]
    fn display_round_trips(text in version_text()) {
        let version = Version::parse(&text).unwrap();
        let shown = version.to_string();
        let reparsed = Version::parse(&shown).unwrap();
        prop_assert_eq!(&reparsed, &version);
        prop_assert_eq!(reparsed.as_str(), text.as_str());
    }

    #[test]
    fn order_is_total(a in version_text(), b in version_text(), c in version_text()) {
        let (a, b, c) = (v(&a), v(&b), v(&c));
        // Antisymmetric, consistent with Eq and Hash.
        prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
        prop_assert_eq!(a == b, a.cmp(&b) == Ordering::Equal);
        if a == b {
            prop_assert_eq!(hash_of(&a), hash_of(&b));
        }
        prop_assert_eq!(a.partial_cmp(&b), Some(a.cmp(&b)));
        // Transitive.
        if a <= b && b <= c {
            prop_assert!(a <= c);
        }
        if a < b && b < c {
            prop_assert!(a < c);
        }
    }

    #[test]
    fn trailing_zero_segments_do_not_matter(text in version_text(), zeros in 0usize..4) {
        let (numbers, pre) = match text.split_once('-') {
            Some((n, p)) => (n.to_owned(), Some(p.to_owned())),
            None => (text.clone(), None),
        };
        let segments = numbers.split('.').count();
        let zeros = zeros.min(8 - segments);
        let mut padded = numbers.clone();
        for _ in 0..zeros {
            padded.push_str(".0");
        }
        if let Some(pre) = pre {
            padded.push('-');
            padded.push_str(&pre);
        }
        prop_assume!(padded.len() <= 64);
        let (a, b) = (v(&text), v(&padded));
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(hash_of(&a), hash_of(&b));
    }

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        let _ = Version::parse(&text);
    }

    #[test]
    fn version_like_strings_never_panic(text in "[0-9.+a-z\\- ]{0,70}") {
        if let Ok(version) = Version::parse(&text) {
            prop_assert_eq!(version.as_str(), text.as_str());
        }
    }
}

//! Strict decoding (SPEC.md §4.1.2, §4.1.3): XML that is not well-formed is rejected on every
//! element, known or unknown, with the error the spec names; and a differential test against
//! an independent, strict XML parser (roxmltree): whatever it finds not well-formed, upgram
//! rejects too. upgram rejects more (DTDs, processing instructions, text, its limits, the
//! schema), so the property only goes one way.

use proptest::prelude::*;
use upgram_core::body::{ErrorBody, Fallback, Query, Response};
use upgram_core::error::BodyError;

const HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Decodes `body` with the decoder its root calls for (a query when it names none).
fn decode(body: &[u8]) -> Result<(), BodyError> {
    let text = String::from_utf8_lossy(body);
    let root = |name: &str| text.contains(&format!("<{name}"));
    if root("response") && !root("query") {
        Response::decode(body).map(drop)
    } else if root("fallback") && !root("query") {
        Fallback::decode(body).map(drop)
    } else if root("error") && !root("query") {
        ErrorBody::decode(body).map(drop)
    } else {
        Query::decode(body).map(drop)
    }
}

/// Whether any of the four decoders accepts `body`.
fn accepted_by_any(body: &[u8]) -> bool {
    Query::decode(body).is_ok()
        || Response::decode(body).is_ok()
        || Fallback::decode(body).is_ok()
        || ErrorBody::decode(body).is_ok()
}

#[test]
fn every_class_of_strictness_is_rejected_with_its_name() {
    let seventeen: String = (0..17).map(|i| format!(" a{i}=\"1\"")).collect();
    let long = "x".repeat(2049);
    let cases: Vec<(&str, String, &str)> = vec![
        // Attributes of unknown elements and of the root are checked like any others.
        ("duplicate on the query root", r#"<query a="1" a="2"><module id="a"/></query>"#.into(), "duplicate-attribute"),
        ("undeclared entity in an unknown element", r#"<error code="1"><x a="&foo;"/></error>"#.into(), "entity"),
        ("element name starting with a digit", r#"<query><1/><module id="a"/></query>"#.into(), "xml-syntax"),
        ("`<` in an unknown element's value", r#"<query><x a="<"/><module id="a"/></query>"#.into(), "xml-syntax"),
        ("unquoted value on an unknown element", r#"<query><x a=1/><module id="a"/></query>"#.into(), "xml-syntax"),
        (
            "17 attributes on an unknown element",
            format!(r#"<query><x{seventeen}/><module id="a"/></query>"#),
            "too-many-attributes",
        ),
        (
            "over-long value on the query root",
            format!(r#"<query a="{long}"><module id="a"/></query>"#),
            "attribute-too-long",
        ),
        ("bad attribute name on the root", r#"<query -x=""><module id="a"/></query>"#.into(), "xml-syntax"),
        (
            "duplicate in a nested unknown element",
            r#"<query><x><y b="" b=""/></x><module id="a"/></query>"#.into(),
            "duplicate-attribute",
        ),
        // White space between attributes.
        ("no space between attributes", r#"<error code="1"x="2"/>"#.into(), "xml-syntax"),
        ("no space on an unknown element", r#"<query><x a="1"b="2"/><module id="a"/></query>"#.into(), "xml-syntax"),
        // Attribute names are XML names.
        ("name starting with a digit", r#"<query><module id="a" 6=""/></query>"#.into(), "xml-syntax"),
        ("name starting with a hyphen", r#"<query><module id="a" -x=""/></query>"#.into(), "xml-syntax"),
        ("name ending in U+00A0", "<query><module id=\"a\" x\u{a0}=\"\"/></query>".into(), "xml-syntax"),
        ("name containing U+0001", "<query><module id=\"a\" x\u{1}y=\"\"/></query>".into(), "xml-syntax"),
        // Characters XML forbids.
        ("NUL in a value", "<error code=\"1\" message=\"a\u{0}b\"/>".into(), "xml-syntax"),
        ("escape character in a value", "<error code=\"1\" message=\"a\u{1b}b\"/>".into(), "xml-syntax"),
        ("U+FFFE in a value", "<error code=\"1\" message=\"a\u{fffe}b\"/>".into(), "xml-syntax"),
        ("reference to U+0001", r#"<error code="1" message="&#1;"/>"#.into(), "xml-syntax"),
        ("reference to NUL", r#"<error code="1" message="&#0;"/>"#.into(), "xml-syntax"),
        ("reference to U+FFFE", r#"<error code="1" message="&#xFFFE;"/>"#.into(), "xml-syntax"),
        ("reference to U+FFFF", r#"<error code="1" message="&#xffff;"/>"#.into(), "xml-syntax"),
        ("reference to a surrogate", r#"<error code="1" message="&#xD800;"/>"#.into(), "xml-syntax"),
        ("form feed between elements", "<query>\u{c}<module id=\"a\"/></query>".into(), "unexpected-text"),
        ("vertical tab between elements", "<query><module id=\"a\"/>\u{b}</query>".into(), "unexpected-text"),
        ("form feed after the name", "<query><module\u{c}id=\"a\"/></query>".into(), "xml-syntax"),
        ("NUL in a comment", "<query><!-- a\u{0} --><module id=\"a\"/></query>".into(), "xml-syntax"),
        ("comment ending in --->", "<query><!-- a ---><module id=\"a\"/></query>".into(), "xml-syntax"),
        // The XML declaration.
        ("empty declaration", r#"<?xml?><query><module id="a"/></query>"#.into(), "xml-syntax"),
        ("version 2.0", r#"<?xml version="2.0"?><query><module id="a"/></query>"#.into(), "xml-syntax"),
        (
            "unknown pseudo-attribute",
            r#"<?xml version="1.0" foo="bar"?><query><module id="a"/></query>"#.into(),
            "xml-syntax",
        ),
        (
            "encoding first",
            r#"<?xml encoding="UTF-8" version="1.0"?><query><module id="a"/></query>"#.into(),
            "xml-syntax",
        ),
        (
            "encoding not UTF-8",
            r#"<?xml version="1.0" encoding="latin1"?><query><module id="a"/></query>"#.into(),
            "xml-syntax",
        ),
        (
            "bad standalone",
            r#"<?xml version="1.0" standalone="maybe"?><query><module id="a"/></query>"#.into(),
            "xml-syntax",
        ),
        (
            "declaration without space",
            r#"<?xml version="1.0"standalone="yes"?><query><module id="a"/></query>"#.into(),
            "xml-syntax",
        ),
        // Pre-release numeric identifiers are bounded like the numeric segments.
        (
            "pre-release of 2^64",
            r#"<query><module id="a" version="1.0-18446744073709551616"/></query>"#.into(),
            "invalid-attribute",
        ),
        // `supported` is strictly ascending.
        ("supported descending", r#"<error code="2" supported="2 1"/>"#.into(), "invalid-attribute"),
        ("supported repeated", r#"<error code="2" supported="1 1"/>"#.into(), "invalid-attribute"),
    ];
    for (what, body, expected) in cases {
        let error = decode(body.as_bytes()).expect_err(what);
        assert_eq!(error.name(), expected, "{what}: got {error}");
    }
}

#[test]
fn strict_rules_still_accept_what_xml_allows() {
    let fine: Vec<String> = vec![
        r#"<?xml version="1.0"?><query><module id="a"/></query>"#.into(),
        r#"<?xml version='1.0' encoding='utf-8' standalone='no' ?><query><module id="a"/></query>"#.into(),
        "<query\n\tx = 'a&#9;b' ><module id=\"a\"\r\n/>\t</query>".into(),
        "<query xmlns:ext=\"urn:x\"><ext:thing é=\"&#xE9;&#1114111;\" _a.b-c\u{b7}=\"\u{7f}\u{85}\" ><deeper/></ext:thing><module id=\"a\"/></query>"
            .into(),
        r#"<query><!-- a - b --><module id="a" version="1.0-18446744073709551615"/></query>"#.into(),
        r#"<error code="2" supported="1 2 255"/>"#.into(),
        "<error code=\"1\" message=\"&lt;&amp;&gt;&quot;&apos;\u{fffd}\u{10ffff}\"/>".into(),
    ];
    for body in fine {
        decode(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
        roxmltree::Document::parse(&body).unwrap_or_else(|e| panic!("reference parser on {body}: {e}"));
    }
}

/// What a generated attribute list gets wrong.
#[derive(Debug, Clone)]
enum Defect {
    NoSpaceBefore(usize),
    Duplicate(usize),
    BadNameStart(usize, char),
    BadNameChar(usize, char),
    ForbiddenChar(usize, char),
    BadReference(usize, &'static str),
    UnknownEntity(usize),
    LessThan(usize),
    Unquoted(usize),
    MismatchedQuotes(usize),
    MissingEquals(usize),
    TooMany,
    TooLong(usize),
}

impl Defect {
    /// The error expected; `None` where it depends on what follows (a mismatched quote makes
    /// the rest of the tag part of the value).
    fn expected(&self) -> Option<&'static str> {
        Some(match self {
            Self::Duplicate(_) => "duplicate-attribute",
            Self::UnknownEntity(_) => "entity",
            Self::TooMany => "too-many-attributes",
            Self::TooLong(_) => "attribute-too-long",
            Self::MismatchedQuotes(_) => return None,
            _ => "xml-syntax",
        })
    }
}

/// Where the attribute list goes in an otherwise valid query.
#[derive(Debug, Clone, Copy)]
enum Host {
    Root,
    KnownElement,
    UnknownElement,
    NestedUnknown,
}

fn host() -> impl Strategy<Value = Host> {
    prop_oneof![Just(Host::Root), Just(Host::KnownElement), Just(Host::UnknownElement), Just(Host::NestedUnknown)]
}

/// Valid attribute names none of which a query's elements know.
fn attribute_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z_][a-zA-Z0-9_.-]{0,8}".prop_filter("not a known name", |n| !matches!(n.as_str(), "id" | "version")),
        Just("é".to_string()),
        Just("x\u{b7}\u{300}".to_string()),
        Just("data-x".to_string()),
        Just("ns:x".to_string()),
    ]
}

/// Valid attribute values, written as they would be in the document.
fn attribute_value() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9 ./>-]{0,12}", Just("&amp;&lt;&#9;&#x10FFFF;".to_string()), Just("é\u{fffd}".to_string())]
}

fn attributes() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((attribute_name(), attribute_value()), 1..6).prop_map(|mut list| {
        let mut seen = std::collections::HashSet::new();
        list.retain(|(name, _)| seen.insert(name.clone()));
        list
    })
}

fn defect(len: usize) -> impl Strategy<Value = Defect> {
    let i = 0..len;
    prop_oneof![
        i.clone().prop_map(Defect::NoSpaceBefore),
        i.clone().prop_map(Defect::Duplicate),
        (i.clone(), prop::sample::select(vec!['0', '-', '.', '\u{b7}', '\u{300}', '\u{a0}', '"']))
            .prop_map(|(i, c)| Defect::BadNameStart(i, c)),
        (i.clone(), prop::sample::select(vec!['\u{1}', '\u{a0}', '\u{7f}', '!', '\u{d7}', '\u{2000}', '<']))
            .prop_map(|(i, c)| Defect::BadNameChar(i, c)),
        (
            i.clone(),
            prop::sample::select(vec!['\u{0}', '\u{1}', '\u{8}', '\u{b}', '\u{c}', '\u{1f}', '\u{fffe}', '\u{ffff}'])
        )
            .prop_map(|(i, c)| Defect::ForbiddenChar(i, c)),
        (
            i.clone(),
            prop::sample::select(vec![
                "&#0;",
                "&#1;",
                "&#x1F;",
                "&#xFFFE;",
                "&#65535;",
                "&#xD800;",
                "&#x110000;",
                "&#;",
                "&#x;",
                "&#12a;",
                "&",
                "&amp",
                "& ;"
            ])
        )
            .prop_map(|(i, r)| Defect::BadReference(i, r)),
        i.clone().prop_map(Defect::UnknownEntity),
        i.clone().prop_map(Defect::LessThan),
        i.clone().prop_map(Defect::Unquoted),
        i.clone().prop_map(Defect::MismatchedQuotes),
        i.clone().prop_map(Defect::MissingEquals),
        Just(Defect::TooMany),
        i.prop_map(Defect::TooLong),
    ]
}

/// Writes the attribute list, with `defect` when given.
fn write_attributes(list: &[(String, String)], defect: Option<&Defect>) -> String {
    let mut list: Vec<(String, String)> = list.to_vec();
    let mut out = String::new();
    match defect {
        Some(Defect::Duplicate(i)) => list.push(list[*i].clone()),
        Some(Defect::TooMany) => list.extend((0..17).map(|n| (format!("zz{n}"), String::new()))),
        _ => {}
    }
    for (n, (name, value)) in list.iter().enumerate() {
        let mut name = name.clone();
        let mut value = value.clone();
        let (mut open, mut close, mut eq, mut space) = ("\"", "\"", "=", " ");
        match defect {
            Some(Defect::NoSpaceBefore(i)) if *i == n && n > 0 => space = "",
            Some(Defect::NoSpaceBefore(i)) if *i == n => {
                // The first attribute: glue it to the previous one by adding one before it.
                out.push_str(" lead=\"1\"");
                space = "";
            }
            Some(Defect::BadNameStart(i, c)) if *i == n => name.insert(0, *c),
            Some(Defect::BadNameChar(i, c)) if *i == n => name.push(*c),
            Some(Defect::ForbiddenChar(i, c)) if *i == n => value.push(*c),
            Some(Defect::BadReference(i, r)) if *i == n => value.push_str(r),
            Some(Defect::UnknownEntity(i)) if *i == n => value.push_str("&foo;"),
            Some(Defect::LessThan(i)) if *i == n => value.push('<'),
            Some(Defect::Unquoted(i)) if *i == n => {
                (open, close) = ("", "");
                value = "v".into();
            }
            Some(Defect::MismatchedQuotes(i)) if *i == n => close = "'",
            Some(Defect::MissingEquals(i)) if *i == n => eq = " ",
            Some(Defect::TooLong(i)) if *i == n => value = "y".repeat(2049),
            _ => {}
        }
        out.push_str(&format!("{space}{name}{eq}{open}{value}{close}"));
    }
    out
}

fn query_with(host: Host, attributes: &str) -> String {
    match host {
        Host::Root => format!(r#"<query{attributes}><module id="m"/></query>"#),
        Host::KnownElement => format!(r#"<query><module id="m" version="1"{attributes}/></query>"#),
        Host::UnknownElement => format!(r#"<query><module id="m"/><ext{attributes}/></query>"#),
        Host::NestedUnknown => {
            format!(r#"<query><module id="m"><ext><deeper{attributes}></deeper></ext></module></query>"#)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Every ill-formed attribute list is rejected with its error, wherever it is, while the
    /// same list without the defect is accepted.
    #[test]
    fn ill_formed_attribute_lists_are_rejected(
        (list, defect) in attributes().prop_flat_map(|list| { let len = list.len(); (Just(list), defect(len)) }),
        host in host(),
    ) {
        let good = query_with(host, &write_attributes(&list, None));
        prop_assert!(Query::decode(good.as_bytes()).is_ok(), "control rejected: {}", good);
        let bad = query_with(host, &write_attributes(&list, Some(&defect)));
        match Query::decode(bad.as_bytes()) {
            Ok(_) => prop_assert!(false, "accepted {:?}: {}", defect, bad.escape_debug()),
            Err(error) => {
                let expected = defect.expected().unwrap_or(error.name());
                prop_assert_eq!(error.name(), expected, "{:?}: {} ({})", defect, bad.escape_debug(), error);
            }
        }
        // The limits are upgram's own, and a mismatched quote may leave well-formed XML with
        // text in it; every other defect is one XML 1.0 itself forbids (the reference parser
        // lets references to a surrogate or past U+10FFFF through, upgram does not).
        let xml_forbids = !matches!(
            defect,
            Defect::TooMany | Defect::TooLong(_) | Defect::MismatchedQuotes(_) | Defect::BadReference(_, "&#xD800;" | "&#x110000;")
        );
        if xml_forbids {
            prop_assert!(roxmltree::Document::parse(&bad).is_err(), "the reference parser accepts {}", bad.escape_debug());
        }
    }
}

// The differential test.

/// Whether roxmltree's error is about namespaces (an XML Namespaces rule it enforces on top of
/// XML 1.0; upgram does not process namespaces) rather than XML 1.0 well-formedness.
fn namespace_error(error: &roxmltree::Error) -> bool {
    use roxmltree::Error as E;
    matches!(
        error,
        E::InvalidXmlPrefixUri(..)
            | E::UnexpectedXmlUri(..)
            | E::UnexpectedXmlnsUri(..)
            | E::InvalidElementNamePrefix(..)
            | E::DuplicatedNamespace(..)
            | E::UnknownNamespace(..)
    )
}

/// Checks the one-directional property on `body`.
fn differential(body: &[u8]) -> Result<(), TestCaseError> {
    let Ok(text) = std::str::from_utf8(body) else {
        // Not UTF-8: upgram must reject it (not-utf8); the reference parser takes only text.
        prop_assert!(!accepted_by_any(body));
        return Ok(());
    };
    if let Err(error) = roxmltree::Document::parse(text)
        && !namespace_error(&error)
    {
        prop_assert!(!accepted_by_any(body), "reference says `{}`, upgram accepts {}", error, text.escape_debug());
    }
    Ok(())
}

/// Valid bodies of every kind, for mutation.
fn valid_bodies() -> Vec<String> {
    vec![
        r#"<query><module id="core" version="1.2"><file id="data/a.db" version="1.1"/></module><module id="new"/></query>"#.into(),
        format!(
            r#"<response for="{HASH}" issued="1764000000" expires="1764000300" base="https://u.example/p/"><module id="core" status="update" latest="1.3" forced="1"><file id="bin/core" version="1.3" mode="replace" url="f/1" size="3" sha256="{HASH}" exec="1"/><file id="data/a.db" version="1.3" mode="incremental" url="f/2" size="9" sha256="{HASH}"><delta from="1.1" url="d/1" size="4" sha256="{HASH}"/></file><requires id="base" min="2"/><frequent id="data/a.db"/></module><module id="tool" status="update" latest="2"><package url="p/t" size="5" sha256="{HASH}" args="-q &amp; x"/></module></response>"#
        ),
        format!(
            r#"<fallback for="{HASH}" issued="1764000000" expires="1764000300" size="5000" sha256="{HASH}"><mirror url="https://a.example/d"/></fallback>"#
        ),
        r#"<error code="2" supported="1 2" message="try &quot;v1&quot;"/>"#.into(),
        r#"<?xml version="1.0" encoding="UTF-8"?><query><!-- c --><module id="m"><ext a="1" b='2'><x/></ext></module></query>"#.into(),
    ]
}

/// Fragments that are often where parsers disagree.
const SNIPPETS: &[&str] = &[
    " a=\"1\"",
    "a=\"1\"",
    "<x a=\"1\"/>",
    "<x>",
    "</x>",
    "\"",
    "'",
    "<",
    ">",
    "&",
    "&foo;",
    "&#1;",
    "&#xFFFE;",
    "&#x41;",
    "&amp;",
    "\u{0}",
    "\u{c}",
    "\u{1}",
    "\u{a0}",
    "\u{fffe}",
    "\u{b7}",
    "-->",
    "<!--",
    "<!-- c -->",
    "--",
    "<?xml version=\"1.0\"?>",
    "<?pi x?>",
    " ",
    "\t",
    "\r\n",
    "=",
    "/",
    "/>",
    "]]>",
    "<![CDATA[x]]>",
    "1",
    ":",
    "-",
    ".",
    "x",
    "é",
    "<!DOCTYPE q>",
    "?>",
    "<?xml",
    " version=\"1.1\"",
    " encoding=\"x\"",
];

#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, usize),
    Delete(usize, usize),
    Replace(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0..SNIPPETS.len()).prop_map(|(at, s)| Mutation::Insert(at, s)),
        (any::<usize>(), 1..4usize).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<usize>(), 0..SNIPPETS.len()).prop_map(|(at, s)| Mutation::Replace(at, s)),
    ]
}

fn mutate(body: &str, mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = body.as_bytes().to_vec();
    for mutation in mutations {
        let len = bytes.len().max(1);
        match *mutation {
            Mutation::Insert(at, s) => {
                let at = at % (len + 1);
                let at = at.min(bytes.len());
                bytes.splice(at..at, SNIPPETS[s].bytes());
            }
            Mutation::Delete(at, n) => {
                let at = (at % len).min(bytes.len());
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Mutation::Replace(at, s) => {
                let at = (at % len).min(bytes.len());
                let end = (at + 1).min(bytes.len());
                bytes.splice(at..end, SNIPPETS[s].bytes());
            }
        }
    }
    bytes
}

/// Attributes (with their separators) drawn from an alphabet that mixes valid and invalid
/// pieces, written as one string.
fn generated_attributes() -> impl Strategy<Value = String> {
    let attribute = (
        prop::sample::select(vec!["id", "version", "a", "b", "é", "0x", "x-y", ":", "a:", "a\u{1}", "p:q"]),
        prop::sample::select(vec!["=", "=", "=", " = ", "", "=="]),
        prop::sample::select(vec![
            "\"m\"",
            "'1'",
            "\"a&amp;b\"",
            "\"&#0;\"",
            "\"&#x41;\"",
            "\"\u{0}\"",
            "\"<\"",
            "v",
            "\"&x;\"",
            "\"'\"",
            "\"1.0\"",
            "\">\"",
            "\"\u{fffe}\"",
            "\"\u{85}\"",
        ]),
        prop::sample::select(vec![" ", " ", " ", "", "\t", "\u{c}", "\n"]),
    );
    prop::collection::vec(attribute, 0..4).prop_map(|list| {
        let mut seen = std::collections::HashSet::new();
        // Mostly distinct names, so that duplicates are not the only defect generated.
        list.into_iter()
            .filter(|(n, ..)| seen.insert(*n) || n.len() == 1)
            .map(|(n, eq, v, sep)| format!("{sep}{n}{eq}{v}"))
            .collect()
    })
}

/// A tree of elements named from `names`, with attributes, comments and text between them.
fn generated_tree(names: Vec<&'static str>) -> impl Strategy<Value = String> {
    let name = prop::sample::select(names);
    let leaf = (name.clone(), generated_attributes(), any::<bool>()).prop_map(|(name, attrs, empty)| {
        if empty { format!("<{name}{attrs}/>") } else { format!("<{name}{attrs}></{name}>") }
    });
    let filler = prop::sample::select(vec![
        "",
        "",
        "",
        " ",
        "\r\n\t",
        "\u{c}",
        "<!-- c -->",
        "<!--\u{0}-->",
        "<!-- - -->",
        "<!---->",
        "<!-- --->",
        "t",
        "&amp;",
        "<?pi?>",
    ]);
    leaf.prop_recursive(3, 24, 4, move |inner| {
        (name.clone(), generated_attributes(), prop::collection::vec((inner, filler.clone()), 0..4)).prop_map(
            |(name, attrs, children)| {
                let body: String = children.into_iter().map(|(c, f)| format!("{c}{f}")).collect();
                format!("<{name}{attrs}>{body}</{name}>")
            },
        )
    })
}

/// A generated body: either a whole tree (known and unknown names), or a valid query that
/// carries generated attributes on its root and generated unknown elements, which upgram
/// accepts unless they are ill-formed or over a limit.
fn generated_body() -> impl Strategy<Value = String> {
    let declaration = prop::sample::select(vec![
        "",
        "",
        "<?xml version=\"1.0\"?>",
        "<?xml version=\"1.1\"?>",
        "<?xml?>",
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>",
        "<?xml version=\"1.0\"encoding=\"UTF-8\"?>",
        "<?xml version='1.0' encoding='latin1'?>",
        " <?xml version=\"1.0\"?>",
    ]);
    let any_names = vec!["query", "module", "x", "ext", "a.b", "_y", "1", "-z", "é", "n\u{a0}", "a:b", "a:"];
    let unknown_names = vec!["x", "ext", "a.b", "_y", "é", "x\u{b7}", "1", "-z", "n\u{a0}", "a:", ":a", "a:b:c"];
    prop_oneof![
        (declaration.clone(), generated_tree(any_names)).prop_map(|(d, t)| format!("{d}{t}")),
        (declaration, generated_attributes(), generated_tree(unknown_names.clone()), generated_tree(unknown_names))
            .prop_map(|(d, attrs, inner, outer)| {
                format!(r#"{d}<query{attrs}><module id="m" version="1">{inner}</module>{outer}</query>"#)
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Mutated valid bodies: wherever the reference parser finds the XML not well-formed,
    /// upgram rejects it.
    #[test]
    fn mutated_bodies_rejected_by_the_reference_are_rejected(
        base in prop::sample::select(valid_bodies()),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        differential(&mutate(&base, &mutations))?;
    }

    /// Generated bodies, plain and mutated: the same property.
    #[test]
    fn generated_bodies_rejected_by_the_reference_are_rejected(
        body in generated_body(),
        mutations in prop::collection::vec(mutation(), 0..3),
    ) {
        differential(&mutate(&body, &mutations))?;
    }
}

#[test]
fn the_valid_bodies_are_accepted_by_both() {
    for body in valid_bodies() {
        decode(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
        roxmltree::Document::parse(&body).unwrap_or_else(|e| panic!("reference parser on {body}: {e}"));
    }
}

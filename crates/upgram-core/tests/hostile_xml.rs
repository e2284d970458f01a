//! Hostile XML bodies (SPEC.md §4.1): each is rejected with the error the spec names, quickly,
//! without expanding anything.

use upgram_core::body::{ErrorBody, Fallback, Query, Response};
use upgram_core::error::BodyError;

const FOR: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn query_error(body: &[u8]) -> BodyError {
    Query::decode(body).expect_err("hostile body must be rejected")
}

#[test]
fn hostile_queries_are_rejected_with_the_right_error() {
    let deep = format!("<query><module id=\"m\">{}{}</module></query>", "<x>".repeat(20), "</x>".repeat(20));
    let huge = format!("<query><module id=\"m\" version=\"{}\"/></query>", "1".repeat(5000));
    let many_attrs = format!(
        "<query><module id=\"m\" {}/></query>",
        (0..20).map(|i| format!("a{i}=\"x\"")).collect::<Vec<_>>().join(" ")
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("doctype", br#"<!DOCTYPE query><query><module id="m"/></query>"#.to_vec(), "doctype"),
        (
            "billion laughs",
            br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><query><module id="&lol2;"/></query>"#.to_vec(),
            "doctype",
        ),
        ("external entity in attribute", br#"<query><module id="&xxe;"/></query>"#.to_vec(), "entity"),
        ("entity in text", b"<query>&xxe;<module id=\"m\"/></query>".to_vec(), "entity"),
        ("predefined entity as text", b"<query>&amp;<module id=\"m\"/></query>".to_vec(), "unexpected-text"),
        ("processing instruction", br#"<query><?php evil() ?><module id="m"/></query>"#.to_vec(), "processing-instruction"),
        ("late declaration", br#"<query><?xml version="1.0"?><module id="m"/></query>"#.to_vec(), "processing-instruction"),
        ("cdata", br#"<query><![CDATA[<module id="m"/>]]></query>"#.to_vec(), "cdata"),
        ("deep nesting", deep.into_bytes(), "too-deep"),
        ("not utf-8", b"<query><module id=\"\xff\xfe\"/></query>".to_vec(), "not-utf8"),
        ("duplicate attribute", br#"<query><module id="a" id="b"/></query>"#.to_vec(), "duplicate-attribute"),
        ("huge attribute value", huge.into_bytes(), "attribute-too-long"),
        ("too many attributes", many_attrs.into_bytes(), "too-many-attributes"),
        ("stray text", br#"<query>hello<module id="m"/></query>"#.to_vec(), "unexpected-text"),
        ("wrong root", br#"<response/>"#.to_vec(), "wrong-root"),
        ("empty document", b"".to_vec(), "wrong-root"),
        ("two roots", br#"<query><module id="m"/></query><query/>"#.to_vec(), "xml-syntax"),
        ("unclosed", br#"<query><module id="m">"#.to_vec(), "xml-syntax"),
        ("mismatched end", br#"<query><module id="m"></file></query>"#.to_vec(), "xml-syntax"),
        ("no module", br#"<query/>"#.to_vec(), "missing-element"),
        ("missing id", br#"<query><module version="1"/></query>"#.to_vec(), "missing-attribute"),
        ("bad module id", br#"<query><module id="a b"/></query>"#.to_vec(), "invalid-attribute"),
        ("bad version", br#"<query><module id="m" version="01.2"/></query>"#.to_vec(), "invalid-attribute"),
        ("absolute path", br#"<query><module id="m"><file id="/etc/passwd" version="1"/></module></query>"#.to_vec(), "invalid-attribute"),
        ("backslash path", br#"<query><module id="m"><file id="..\x" version="1"/></module></query>"#.to_vec(), "invalid-attribute"),
        ("unquoted attribute", br#"<query><module id=m/></query>"#.to_vec(), "xml-syntax"),
    ];
    for (what, body, expected) in cases {
        let error = query_error(&body);
        assert_eq!(error.name(), expected, "{what}: got {error}");
    }
}

#[test]
fn element_count_is_bounded() {
    let body = format!("<query>{}</query>", "<module id=\"m\"><a/><a/><a/><a/></module>".repeat(60_000));
    let error = query_error(body.as_bytes());
    assert_eq!(error.name(), "too-many-elements", "{error}");
}

#[test]
fn hostile_responses_are_rejected_with_the_right_error() {
    let head = format!(r#"<response for="{FOR}" issued="10" expires="20""#);
    let cases: Vec<(&str, String, &str)> = vec![
        ("missing for", r#"<response issued="1" expires="2"/>"#.into(), "missing-attribute"),
        (
            "uppercase digest",
            format!(r#"<response for="{}" issued="1" expires="2"/>"#, FOR.replace('0', "A")),
            "invalid-attribute",
        ),
        ("expires before issued", format!(r#"<response for="{FOR}" issued="20" expires="10"/>"#), "invalid-attribute"),
        ("number with sign", format!(r#"<response for="{FOR}" issued="+1" expires="2"/>"#), "invalid-attribute"),
        (
            "number overflow",
            format!(r#"<response for="{FOR}" issued="99999999999999999999999" expires="2"/>"#),
            "invalid-attribute",
        ),
        ("unknown status", format!(r#"{head}><module id="m" status="maybe"/></response>"#), "invalid-attribute"),
        (
            "update without latest",
            format!(r#"{head}><module id="m" status="update"/></response>"#),
            "missing-attribute",
        ),
        (
            "update without info",
            format!(r#"{head}><module id="m" status="update" latest="2"/></response>"#),
            "missing-element",
        ),
        (
            "package and files",
            format!(
                r#"{head}><module id="m" status="update" latest="2"><package url="https://a/p" size="1" sha256="{FOR}"/><file id="f" version="2" mode="delete"/></module></response>"#
            ),
            "unexpected-element",
        ),
        (
            "incremental without delta",
            format!(
                r#"{head}><module id="m" status="update" latest="2"><file id="f" version="2" mode="incremental" url="https://a/f" size="1" sha256="{FOR}"/></module></response>"#
            ),
            "missing-element",
        ),
        (
            "delta on replace",
            format!(
                r#"{head}><module id="m" status="update" latest="2"><file id="f" version="2" mode="replace" url="https://a/f" size="1" sha256="{FOR}"><delta from="1" url="https://a/d" size="1" sha256="{FOR}"/></file></module></response>"#
            ),
            "unexpected-element",
        ),
        (
            "delete with url",
            format!(
                r#"{head}><module id="m" status="update" latest="2"><file id="f" version="2" mode="delete" url="https://a/f"/></module></response>"#
            ),
            "invalid-attribute",
        ),
        (
            "relative url without base",
            format!(
                r#"{head}><module id="m" status="update" latest="2"><file id="f" version="2" mode="replace" url="f/1" size="1" sha256="{FOR}"/></module></response>"#
            ),
            "invalid-attribute",
        ),
        (
            "file scheme",
            format!(
                r#"{head}><module id="m" status="update" latest="2"><package url="file:///etc/passwd" size="1" sha256="{FOR}"/></module></response>"#
            ),
            "invalid-attribute",
        ),
        (
            "traversal in file list",
            format!(
                r#"{head}><module id="m" status="update" latest="2"><file id="a/../../b" version="2" mode="delete"/></module></response>"#
            ),
            "invalid-attribute",
        ),
        ("error without code", format!(r#"{head}><module id="m" status="error"/></response>"#), "missing-attribute"),
        (
            "boolean junk",
            format!(r#"{head}><module id="m" status="unknown" forced="yes"/></response>"#),
            "invalid-attribute",
        ),
    ];
    for (what, body, expected) in cases {
        let error = Response::decode(body.as_bytes()).expect_err(what);
        assert_eq!(error.name(), expected, "{what}: got {error}");
    }
}

#[test]
fn hostile_fallbacks_and_errors_are_rejected() {
    let no_mirror = format!(r#"<fallback for="{FOR}" issued="1" expires="2" size="10" sha256="{FOR}"/>"#);
    assert_eq!(Fallback::decode(no_mirror.as_bytes()).expect_err("no mirror").name(), "missing-element");
    let huge = format!(
        r#"<fallback for="{FOR}" issued="1" expires="2" size="4194305" sha256="{FOR}"><mirror url="https://a/d"/></fallback>"#
    );
    assert_eq!(Fallback::decode(huge.as_bytes()).expect_err("too large").name(), "invalid-attribute");
    let relative = format!(
        r#"<fallback for="{FOR}" issued="1" expires="2" size="1" sha256="{FOR}"><mirror url="doc.xml"/></fallback>"#
    );
    assert_eq!(Fallback::decode(relative.as_bytes()).expect_err("relative").name(), "invalid-attribute");
    let mirrors = (0..9).map(|i| format!(r#"<mirror url="https://m{i}/d"/>"#)).collect::<String>();
    let many = format!(r#"<fallback for="{FOR}" issued="1" expires="2" size="1" sha256="{FOR}">{mirrors}</fallback>"#);
    assert_eq!(Fallback::decode(many.as_bytes()).expect_err("too many").name(), "too-many-elements");
    assert_eq!(ErrorBody::decode(br#"<error code="2"/>"#).expect_err("no supported").name(), "missing-attribute");
    assert_eq!(ErrorBody::decode(br#"<error code="70000"/>"#).expect_err("out of range").name(), "invalid-attribute");
}

#[test]
fn forward_compatible_parts_are_ignored() {
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><!-- hello --><response for="{FOR}" issued="1" expires="2" signed-by="x"> <module id="m" status="current" latest="1" colour="blue"><hint><deeper/></hint></module><future/></response>"#
    );
    let response = Response::decode(body.as_bytes()).expect("unknown parts skipped");
    assert_eq!(response.modules.len(), 1);
    assert_eq!(response.modules[0].latest.as_ref().map(|v| v.as_str()), Some("1"));
}

#[test]
fn escaped_values_round_trip_and_borrow_otherwise() {
    let body = br#"<query><module id="m"><file id="a &amp; b/&quot;c&quot;&#233;d" version="1"/></module></query>"#;
    let query = Query::decode(body).expect("escapes are fine");
    assert_eq!(query.modules[0].files[0].id, "a & b/\"c\"éd");
    assert!(matches!(query.modules[0].id, std::borrow::Cow::Borrowed(_)), "plain values borrow from the input");
    assert!(matches!(query.modules[0].files[0].id, std::borrow::Cow::Owned(_)));
    assert_eq!(Query::decode(&query.to_vec()).expect("re-decodes"), query);
}

#[test]
fn version_1_elements_in_the_wrong_place_are_errors_not_extensions() {
    let cases: Vec<(&str, String)> = vec![
        ("module in module", r#"<query><module id="a"><module id="b"/></module></query>"#.into()),
        ("file in query", r#"<query><file id="a" version="1"/><module id="m"/></query>"#.into()),
        (
            "file under response",
            format!(
                r#"<response for="{FOR}" issued="1" expires="2"><file id="a" version="1" mode="delete"/></response>"#
            ),
        ),
        (
            "mirror in response",
            format!(r#"<response for="{FOR}" issued="1" expires="2"><mirror url="https://a/b"/></response>"#),
        ),
        (
            "delta in package",
            format!(
                r#"<response for="{FOR}" issued="1" expires="2"><module id="m" status="update" latest="2"><package url="https://a/p" size="1" sha256="{FOR}"><delta from="1" url="https://a/d" size="1" sha256="{FOR}"/></package></module></response>"#
            ),
        ),
    ];
    for (what, body) in cases {
        let error = if body.starts_with("<query") {
            Query::decode(body.as_bytes()).expect_err(what)
        } else {
            Response::decode(body.as_bytes()).expect_err(what)
        };
        assert_eq!(error.name(), "unexpected-element", "{what}: {error}");
    }
}

#[test]
fn urls_are_printable_ascii() {
    for url in [
        "https://a.example/caf\u{e9}",
        "https://a.example/a b",
        "https://a.example/\u{85}",
        "https://a.example/\u{2028}x",
    ] {
        let body = format!(
            r#"<response for="{FOR}" issued="1" expires="2"><module id="m" status="update" latest="2"><package url="{url}" size="1" sha256="{FOR}"/></module></response>"#
        );
        assert_eq!(Response::decode(body.as_bytes()).expect_err(url).name(), "invalid-attribute", "{url:?}");
    }
}

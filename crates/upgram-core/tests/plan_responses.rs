//! The planner fed with decoded responses (SPEC.md §5.6): the dependencies vector (07) planned
//! against an installation, in the order of \[0098\]-\[0100\].

use std::collections::BTreeMap;

use upgram_core::plan::{Choice, Offer, Reason, plan};
use upgram_core::version::Version;
use upgram_core::{Datagram, Message};

fn vector_07() -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../protocol-spec/vectors/07-dependencies-response.toml");
    let text = std::fs::read_to_string(path).expect("vector 07");
    let table: toml::Table = toml::from_str(&text).expect("toml");
    let hex: String = table["hex"].as_str().expect("hex").split_whitespace().collect();
    hex::decode(hex).expect("hex")
}

fn installed(pairs: &[(&str, &str)]) -> BTreeMap<String, Version<'static>> {
    pairs.iter().map(|(id, v)| (id.to_string(), v.parse().expect("version"))).collect()
}

#[test]
fn dependencies_of_a_response_are_planned_first() {
    let bytes = vector_07();
    let datagram = Datagram::decode(&bytes).expect("vector 07 decodes");
    let Message::Response(reply) = &datagram.message else { panic!("a response") };
    let response = reply.body_unverified();
    let offers: Vec<Offer<'_>> = response.modules.iter().filter_map(Offer::from_answer).collect();
    assert_eq!(offers.len(), 2, "main-program is current: no offer");

    let have = installed(&[("main-program", "3.1.0"), ("main-module", "5.0")]);
    let upgrade = plan(&offers, &have, &Choice::All).expect("plannable");
    let order: Vec<&str> = upgrade.steps.iter().map(|s| s.id).collect();
    assert_eq!(order, ["main-module", "pdf-plugin"], "main module before the plug-in that needs it");

    // Declining every optional upgrade still pulls in nothing: neither is forced.
    let none = plan(&offers, &have, &Choice::OnlyForced).expect("plannable");
    assert!(none.steps.is_empty());

    // Choosing only the plug-in pulls its dependency in.
    let picked = plan(&offers, &have, &Choice::Selected(&["pdf-plugin"])).expect("plannable");
    let order: Vec<(&str, &Reason)> = picked.steps.iter().map(|s| (s.id, &s.reason)).collect();
    assert_eq!(order[0].0, "main-module");
    assert!(matches!(order[0].1, Reason::Dependency { of } if of == "pdf-plugin"));
    assert_eq!(order[1].0, "pdf-plugin");

    // main-program too old and not offered: unsatisfiable, named.
    let old = installed(&[("main-program", "3.0"), ("main-module", "5.0")]);
    let error = plan(&offers, &old, &Choice::All).expect_err("main-program 3.0 < 3.1");
    assert!(error.to_string().contains("main-program"), "{error}");
}

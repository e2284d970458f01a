#[test]
fn make_seeds() {
    let base = upgram_fuzz::patch_base();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/patch");
    let mut edit = base.clone();
    edit[100..116].copy_from_slice(b"sixteen new byte");
    let mut grown = base.clone();
    grown.splice(2000..2000, b"inserted text in the middle".iter().copied());
    grown.extend_from_slice(&[7u8; 300]);
    let shrunk = base[500..3500].to_vec();
    let unrelated: Vec<u8> = (0..1500u32).map(|i| (i * 7919 % 251) as u8).collect();
    for (name, new) in [("edit16", edit), ("grown", grown), ("shrunk", shrunk), ("unrelated", unrelated), ("same", base.clone()), ("empty", Vec::new())] {
        let patch = upgram_client::patch::make(&base, &new).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), patch).unwrap();
    }
}

//! Fuzz target `roundtrip`: see `upgram_fuzz::roundtrip`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| upgram_fuzz::roundtrip(data));

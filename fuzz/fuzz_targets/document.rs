//! Fuzz target `document`: see `upgram_fuzz::document`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| upgram_fuzz::document(data));

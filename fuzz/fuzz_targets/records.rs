//! Fuzz target `records`: see `upgram_fuzz::records`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| upgram_fuzz::records(data));

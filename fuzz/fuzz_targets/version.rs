//! Fuzz target `version`: see `upgram_fuzz::version`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| upgram_fuzz::version(data));

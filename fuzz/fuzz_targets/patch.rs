//! Fuzz target `patch`: see `upgram_fuzz::patch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| upgram_fuzz::patch(data));

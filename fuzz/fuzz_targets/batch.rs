//! Fuzz target `batch`: see `upgram_fuzz::batch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| upgram_fuzz::batch(data));

//! Fuzz target `datagram`: see `upgram_fuzz::datagram`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| upgram_fuzz::datagram(data));

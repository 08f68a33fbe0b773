//! Fuzz target: see `yrd_fuzz::filter_text`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| yrd_fuzz::filter_text(data));

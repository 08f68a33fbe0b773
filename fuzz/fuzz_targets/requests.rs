//! Fuzz target: see `yrd_fuzz::requests`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| yrd_fuzz::requests(data));

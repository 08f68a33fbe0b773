//! Fuzz target: see `yrd_fuzz::sort_key`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| yrd_fuzz::sort_key(data));

//! Fuzz target: see `yrd_fuzz::filter_tree`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| yrd_fuzz::filter_tree(data));

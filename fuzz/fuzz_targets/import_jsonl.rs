//! Fuzz target: see `yrd_fuzz::import_jsonl`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| yrd_fuzz::import_jsonl(data));

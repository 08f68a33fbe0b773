//! Fuzz target: see `yrd_fuzz::import_csv`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| yrd_fuzz::import_csv(data));

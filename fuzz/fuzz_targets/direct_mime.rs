//! libFuzzer's entry for the `direct_mime` target; what it checks is in `fuzz/targets/direct_mime.rs`,
//! shared with the seed replay that `cargo test` runs (`tests/fuzz_seeds.rs`).
#![no_main]

#[path = "../targets/direct_mime.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));

//! libFuzzer's entry for the `docs` target; what it checks is in `fuzz/targets/docs.rs`,
//! shared with the seed replay that `cargo test` runs (`tests/fuzz_seeds.rs`).
#![no_main]

#[path = "../targets/docs.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));

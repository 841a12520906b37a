//! libFuzzer's entry for the `reports` target; what it checks is in `fuzz/targets/reports.rs`,
//! shared with the seed replay that `cargo test` runs (`tests/fuzz_seeds.rs`).
#![no_main]

#[path = "../targets/reports.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));

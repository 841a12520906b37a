//! libFuzzer's entry for the `reminder_rule` target; what it checks is in `fuzz/targets/reminder_rule.rs`,
//! shared with the seed replay that `cargo test` runs (`tests/fuzz_seeds.rs`).
#![no_main]

#[path = "../targets/reminder_rule.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));

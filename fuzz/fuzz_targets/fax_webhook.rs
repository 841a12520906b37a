//! libFuzzer's entry for the `fax_webhook` target; what it checks is in `fuzz/targets/fax_webhook.rs`,
//! shared with the seed replay that `cargo test` runs (`tests/fuzz_seeds.rs`).
#![no_main]

#[path = "../targets/fax_webhook.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));

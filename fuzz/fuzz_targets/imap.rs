//! libFuzzer's entry for the `imap` target; what it checks is in `fuzz/targets/imap.rs`,
//! shared with the seed replay that `cargo test` runs (`tests/fuzz_seeds.rs`).
#![no_main]

#[path = "../targets/imap.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));

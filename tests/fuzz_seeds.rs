//! The fuzz targets (`fuzz/targets/`) run by `cargo test`: each target's committed seeds
//! (`fuzz/seeds/<target>/`), then a fixed sequence of mutations of them (bit flips, byte
//! changes, inserts, deletions, duplicated and spliced chunks, truncations) from a fixed PRNG
//! seed, so every run checks the same inputs. The checks are the targets' own: no panic, and
//! each target's assertions. Coverage-guided fuzzing with libFuzzer and AddressSanitizer is
//! `.ci/fuzz` (README "Fuzzing"); an input that fails here is written to
//! `target/fuzz-seeds-failures/<target>-<n>` for `cargo fuzz run <target> <file>`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

#[path = "../fuzz/targets/direct_content.rs"]
mod direct_content;
#[path = "../fuzz/targets/direct_mime.rs"]
mod direct_mime;
#[path = "../fuzz/targets/direct_open.rs"]
mod direct_open;
#[path = "../fuzz/targets/docs.rs"]
mod docs;
#[path = "../fuzz/targets/fax_webhook.rs"]
mod fax_webhook;
#[path = "../fuzz/targets/hl7.rs"]
mod hl7;
#[path = "../fuzz/targets/imap.rs"]
mod imap;
#[path = "../fuzz/targets/reminder_rule.rs"]
mod reminder_rule;
#[path = "../fuzz/targets/reports.rs"]
mod reports;
#[path = "../fuzz/targets/webhook.rs"]
mod webhook;

/// Mutated inputs per target after its seeds.
const MUTATIONS: usize = 3000;
/// Longest mutated input (the libFuzzer runs use 4 KiB for most targets).
const MAX_LEN: usize = 64 * 1024;

/// xorshift64*: a fixed, dependency-free sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("seed entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("seed");
            (path, bytes)
        })
        .collect()
}

/// One to four edits of `input`, some taking bytes from `other` (another seed).
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                // Bytes parsers care about more often than the rest.
                const INTERESTING: &[u8] = b"\0\r\n\x0b\x1c|^~\\&:;=\"'<>/-+0 9\xff\x80";
                input[at] = if rng.below(2) == 0 {
                    INTERESTING[rng.below(INTERESTING.len())]
                } else {
                    rng.next() as u8
                };
            }
            2 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                input.drain(at..at + n);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(256));
                let chunk = input[at..at + n].to_vec();
                let to = rng.below(len + 1);
                input.splice(to..to, chunk);
            }
            5 if !other.is_empty() => {
                let from = rng.below(other.len());
                let n = 1 + rng.below((other.len() - from).min(512));
                let to = rng.below(len + 1);
                let end = (to + n).min(len);
                input.splice(to..end, other[from..from + n].iter().copied());
            }
            6 if len > 0 => input.truncate(rng.below(len)),
            _ => {
                // A repeated byte run: lengths and counters past their limits.
                let at = rng.below(len + 1);
                let n = 1 + rng.below(300);
                let byte = rng.next() as u8;
                input.splice(at..at, std::iter::repeat_n(byte, n));
            }
        }
    }
    input.truncate(MAX_LEN);
}

/// Runs `check` on every seed of `target`, then on [`MUTATIONS`] mutations of them.
fn replay(target: &str, check: fn(&[u8])) {
    let seeds = seeds(target);
    // The sequence differs per target (FNV-1a of its name) and never between runs.
    let mut rng = Rng(target.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }));
    let mut inputs: Vec<(String, Vec<u8>)> = seeds
        .iter()
        .map(|(path, bytes)| (path.display().to_string(), bytes.clone()))
        .collect();
    for n in 0..MUTATIONS {
        let (_, base) = &seeds[rng.below(seeds.len())];
        let (_, other) = &seeds[rng.below(seeds.len())];
        let mut input = base.clone();
        mutate(&mut rng, &mut input, other);
        inputs.push((format!("mutation {n}"), input));
    }
    for (n, (what, input)) in inputs.iter().enumerate() {
        if catch_unwind(AssertUnwindSafe(|| check(input))).is_err() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-seeds-failures");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{target}-{n}"));
            let _ = std::fs::write(&file, input);
            panic!(
                "fuzz target {target} failed on {what} (input written to {})",
                file.display()
            );
        }
    }
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name), $name::run);
            }
        )*
    };
}

targets!(
    direct_content,
    direct_mime,
    direct_open,
    docs,
    fax_webhook,
    hl7,
    imap,
    reminder_rule,
    reports,
    webhook,
);

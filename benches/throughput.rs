//! `cargo bench`: the same figures as `switchboard bench` (20,000 messages, SQLite and
//! PostgreSQL at `TEST_DATABASE_URL`).

// The benchmark is the binary's (`src/cli/bench/`); compiled here too so `cargo bench` runs it.
#[allow(dead_code)]
#[path = "../src/cli/bench/mod.rs"]
mod bench;

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench::run(bench::BenchArgs::default())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

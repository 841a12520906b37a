//! `switchboard bench`: throughput and latency figures (see README "Benchmarks").

use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Messages to send through the API path.
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
}

pub async fn run(_args: BenchArgs) -> Result<()> {
    anyhow::bail!("not yet")
}

//! `runner bench …`: measurements, not tests. Figures go to stdout (and the issue notes).

pub mod checkpointing;
mod pytorch;
pub mod recipe;

use std::io::Write;

use anyhow::{anyhow, Result};

/// `runner bench WHAT`.
#[derive(clap::Subcommand)]
pub enum Args {
    /// Step time, tokens/s and peak memory of a recipe's training step, against PyTorch.
    Recipe(recipe::Args),
    /// Peak memory of one training step with and without gradient checkpointing.
    Checkpointing(checkpointing::Args),
}

impl Args {
    pub fn run(&self, out: &mut dyn Write) -> std::io::Result<i32> {
        match self {
            Args::Recipe(a) => a.run(out),
            Args::Checkpointing(a) => a.run(out),
        }
    }
}

/// The process's peak resident set (VmHWM) in KiB.
pub fn peak_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmHWM in /proc/self/status (Linux only)"))
}

//! `runner bench …`: measurements, not tests. Figures go to stdout (and the issue notes).

pub mod checkpointing;
pub mod recipe;

use anyhow::{anyhow, Result};

/// The process's peak resident set (VmHWM) in KiB.
pub fn peak_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmHWM in /proc/self/status (Linux only)"))
}

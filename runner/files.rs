//! Files that must never be seen half-written, and JSON files read with a hint. The ground
//! floor: training, sweeps and models all write through here.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

/// A JSON file; `hint` says what the file should have been when it cannot be read.
pub fn read_json(path: &Path, hint: &str) -> Result<Value> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read {}\n  hint: {hint}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))
}

/// Writes a file through a temporary file, fsync and rename, so a reader never sees half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut f =
        fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Where runner keeps what it can recompute (file digests, retrieved exemplars):
/// `$RUNNER_CACHE_DIR` (a cluster's shared disk, a test's own folder), else `results/cache`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("RUNNER_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("results/cache"), PathBuf::from)
}

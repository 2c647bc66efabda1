//! A sweep's record, `results/sweeps/<name>/trials.json`: every trial's line, rewritten
//! atomically after each one ends, and the sweep file beside it (`sweep.json`). The state a
//! resumed sweep starts from; everything in `results.rs` and `plot.rs` is rendered from it.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::spec::SweepSpec;
use super::trials::Configuration;
use crate::files::write_atomic;
use crate::plan::common::Goal;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Trained to the end.
    Finished,
    /// Stopped by the median rule.
    Stopped,
    /// Exited with an error (the error is kept).
    Failed,
    /// Cut short by Ctrl-C or a lost job: runs again (and resumes) next time.
    Interrupted,
}

impl Status {
    /// Whether a new invocation of the sweep leaves the trial alone.
    pub fn is_done(self) -> bool {
        self != Status::Interrupted
    }

    pub fn name(self) -> &'static str {
        match self {
            Status::Finished => "finished",
            Status::Stopped => "stopped",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
        }
    }
}

/// One trial's line of the record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the sweep's expansion.
    pub trial: usize,
    pub plan_hash: String,
    pub params: Configuration,
    pub seed: Option<u64>,
    pub status: Status,
    /// The sweep metric's best value over the trial's evaluations.
    pub metric: Option<f64>,
    /// The last evaluation's metrics (`eval/loss`, ...).
    pub metrics: BTreeMap<String, f64>,
    pub wall_seconds: f64,
    pub run_dir: String,
    pub error: Option<String>,
}

pub const RECORD: &str = "trials.json";
/// The sweep file's content, kept beside the record for `runner report`.
pub const SPEC: &str = "sweep.json";

pub fn save_spec(dir: &Path, spec: &SweepSpec) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(&dir.join(SPEC), &serde_json::to_vec_pretty(spec)?)
}

pub fn load_spec(dir: &Path) -> Result<SweepSpec> {
    let path = dir.join(SPEC);
    let bytes = fs::read(&path).with_context(|| {
        format!(
            "cannot read {}\n  hint: is this the results folder of `runner sweep`?",
            path.display()
        )
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not a sweep", path.display()))
}

/// The record of earlier invocations (empty when there is none).
pub fn load(dir: &Path) -> Result<Vec<Record>> {
    let path = dir.join(RECORD);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a sweep record; delete it to start over",
                path.display()
            )
        }),
        Err(_) => Ok(Vec::new()),
    }
}

pub fn save(dir: &Path, records: &[Record]) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(&dir.join(RECORD), &serde_json::to_vec_pretty(records)?)
}

/// Whether `a` is better than `b` under `goal`.
pub fn better(goal: Goal, a: f64, b: f64) -> bool {
    match goal {
        Goal::Minimize => a < b,
        Goal::Maximize => a > b,
    }
}

/// The swept keys, in the sweep's order.
pub fn keys(records: &[Record]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for (k, _) in records.iter().flat_map(|r| &r.params) {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    keys
}

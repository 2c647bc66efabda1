//! Reading a run's `metrics.csv` (`step,split,metric,value`, appended as the run goes).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

/// One row.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub step: u64,
    pub split: String,
    pub metric: String,
    pub value: f64,
}

impl Entry {
    /// `split/metric`, as sweeps name metrics (`eval/loss`).
    pub fn name(&self) -> String {
        format!("{}/{}", self.split, self.metric)
    }
}

/// Every row of the file, in order. A run killed mid-write may leave a partial last line,
/// which is skipped.
pub fn read(path: &Path) -> Result<Vec<Entry>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    let mut entries = Vec::new();
    for (i, line) in complete.lines().enumerate() {
        if i == 0 || line.trim().is_empty() {
            continue; // header
        }
        let fields: Vec<&str> = line.split(',').collect();
        let [step, split, metric, value] = fields[..] else {
            bail!(
                "{} line {}: expected step,split,metric,value, got `{line}`",
                path.display(),
                i + 1
            );
        };
        let parse_err = || anyhow!("{} line {}: cannot parse `{line}`", path.display(), i + 1);
        entries.push(Entry {
            step: step.trim().parse().map_err(|_| parse_err())?,
            split: split.trim().to_string(),
            metric: metric.trim().to_string(),
            value: value.trim().parse().map_err(|_| parse_err())?,
        });
    }
    Ok(entries)
}

/// The values of one metric (`eval/loss`), by step; a repeated step keeps its last value.
pub fn series(entries: &[Entry], name: &str) -> Vec<(u64, f64)> {
    let mut out: Vec<(u64, f64)> = Vec::new();
    for e in entries.iter().filter(|e| e.name() == name) {
        match out.last_mut() {
            Some(last) if last.0 == e.step => last.1 = e.value,
            _ => out.push((e.step, e.value)),
        }
    }
    out
}

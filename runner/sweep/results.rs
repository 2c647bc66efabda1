//! What is rendered from a sweep's record (`record.rs`) into `results/sweeps/<name>/`:
//! `trials.csv`, `summary.md`, `plot.svg` and one TensorBoard HParams record per trial under
//! `tensorboard/`; and a trial's measured metric, read from its run's `metrics.csv`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use super::plot;
use super::record::{better, keys, Record, Status};
use super::spec::{Metric, SweepSpec};
use super::trials::{as_overrides, Configuration};
use crate::artifacts::metrics_csv;
use crate::artifacts::tensorboard::{EventWriter, HParamValue};
use crate::files::write_atomic;
use crate::plan::common::Goal;

/// The best value of `metric` over a run's evaluations, and its last evaluation's metrics.
pub fn measure(run_dir: &Path, metric: &Metric) -> (Option<f64>, BTreeMap<String, f64>) {
    let Ok(entries) = metrics_csv::read(&run_dir.join("metrics.csv")) else {
        return (None, BTreeMap::new());
    };
    let best = metrics_csv::series(&entries, &metric.name)
        .into_iter()
        .map(|(_, v)| v)
        .filter(|v| v.is_finite())
        .reduce(|a, b| if better(metric.goal, b, a) { b } else { a });
    let last_step = entries
        .iter()
        .filter(|e| e.split == "eval")
        .map(|e| e.step)
        .max();
    let last = entries
        .iter()
        .filter(|e| e.split == "eval" && Some(e.step) == last_step)
        .map(|e| (e.name(), e.value))
        .collect();
    (best, last)
}

/// Writes everything rendered from the record.
pub fn render(dir: &Path, spec: &SweepSpec, records: &[Record]) -> Result<()> {
    write_atomic(
        &dir.join("trials.csv"),
        trials_csv(spec, records).as_bytes(),
    )?;
    write_atomic(
        &dir.join("summary.md"),
        summary_md(spec, records).as_bytes(),
    )?;
    write_atomic(&dir.join("plot.svg"), plot::svg(spec, records).as_bytes())?;
    hparams(dir, spec, records)
}

fn csv_field(s: &str) -> String {
    match s.contains([',', '"', '\n']) {
        true => format!("\"{}\"", s.replace('"', "\"\"")),
        false => s.to_string(),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The value a configuration gives `key`, as a table shows it (empty when it gives none).
fn value_of(configuration: &[(String, Value)], key: &str) -> String {
    configuration
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| show(v))
        .unwrap_or_default()
}

/// A markdown table's header row and separator, from groups of column names.
fn table_head(out: &mut String, groups: &[&[&str]]) {
    let columns: Vec<&str> = groups.iter().flat_map(|g| g.iter().copied()).collect();
    let _ = writeln!(out, "| {} |", columns.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(columns.len()));
}

/// One row per trial: its values, status, metrics, time and run directory.
pub fn trials_csv(spec: &SweepSpec, records: &[Record]) -> String {
    let keys = keys(records);
    let mut metric_names: Vec<&String> = records.iter().flat_map(|r| r.metrics.keys()).collect();
    metric_names.sort();
    metric_names.dedup();
    let mut header: Vec<String> = vec!["trial".into(), "status".into()];
    header.extend(keys.iter().cloned());
    header.push("seed".into());
    header.push(format!("best {}", spec.metric.name));
    header.extend(metric_names.iter().map(|m| format!("final {m}")));
    header.extend(["wall_seconds", "run_dir", "plan_hash", "error"].map(String::from));
    let mut out = header
        .iter()
        .map(|h| csv_field(h))
        .collect::<Vec<_>>()
        .join(",")
        + "\n";
    for r in records {
        let mut row = vec![r.trial.to_string(), r.status.name().to_string()];
        row.extend(keys.iter().map(|k| value_of(&r.params, k)));
        row.push(r.seed.map(|s| s.to_string()).unwrap_or_default());
        row.push(r.metric.map(|m| m.to_string()).unwrap_or_default());
        row.extend(
            metric_names
                .iter()
                .map(|m| r.metrics.get(*m).map(|v| v.to_string()).unwrap_or_default()),
        );
        row.push(format!("{:.1}", r.wall_seconds));
        row.push(r.run_dir.clone());
        row.push(r.plan_hash.clone());
        row.push(r.error.clone().unwrap_or_default());
        out += &(row
            .iter()
            .map(|f| csv_field(f))
            .collect::<Vec<_>>()
            .join(",")
            + "\n");
    }
    out
}

/// One configuration's replicates: mean, sample standard deviation, count.
pub struct Aggregate {
    pub configuration: Configuration,
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

/// Configurations with a measured metric, best mean first.
pub fn aggregates(goal: Goal, records: &[Record]) -> Vec<Aggregate> {
    let mut groups: Vec<(Configuration, Vec<f64>)> = Vec::new();
    for r in records.iter().filter(|r| r.status != Status::Failed) {
        let Some(m) = r.metric else { continue };
        match groups.iter_mut().find(|(c, _)| *c == r.params) {
            Some((_, values)) => values.push(m),
            None => groups.push((r.params.clone(), vec![m])),
        }
    }
    let mut out: Vec<Aggregate> = groups
        .into_iter()
        .map(|(configuration, values)| {
            let n = values.len();
            let mean = values.iter().sum::<f64>() / n as f64;
            let var = match n {
                1 => 0.0,
                _ => values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64,
            };
            Aggregate {
                configuration,
                mean,
                std: var.sqrt(),
                n,
            }
        })
        .collect();
    out.sort_by(|a, b| match better(goal, a.mean, b.mean) {
        true => std::cmp::Ordering::Less,
        false if better(goal, b.mean, a.mean) => std::cmp::Ordering::Greater,
        false => std::cmp::Ordering::Equal,
    });
    out
}

/// Trials ranked by the metric, configurations with mean ± std over seeds, the best one as
/// `KEY=VALUE` overrides.
pub fn summary_md(spec: &SweepSpec, records: &[Record]) -> String {
    let goal = spec.metric.goal;
    let mut out = String::new();
    let _ = writeln!(out, "# Sweep `{}`\n", spec.name);
    if let Some(d) = &spec.description {
        let _ = writeln!(out, "{d}\n");
    }
    let counts: Vec<String> = [
        Status::Finished,
        Status::Stopped,
        Status::Failed,
        Status::Interrupted,
    ]
    .iter()
    .map(|s| (s, records.iter().filter(|r| r.status == *s).count()))
    .filter(|(_, n)| *n > 0)
    .map(|(s, n)| format!("{n} {}", s.name()))
    .collect();
    let _ = writeln!(
        out,
        "Recipe `{}`; metric `{}` ({}), best value over each trial's evaluations; {} trials: {}.\n",
        spec.recipe,
        spec.metric.name,
        match goal {
            Goal::Minimize => "lower is better",
            Goal::Maximize => "higher is better",
        },
        records.len(),
        counts.join(", ")
    );
    let aggregates = aggregates(goal, records);
    if let Some(best) = aggregates.first() {
        let _ = writeln!(out, "## Best configuration\n");
        let _ = writeln!(
            out,
            "{} = {:.6} (mean of {})\n",
            spec.metric.name, best.mean, best.n
        );
        let _ = writeln!(out, "```\n{}\n```\n", as_overrides(&best.configuration));
    }
    let keys = keys(records);
    let _ = writeln!(out, "## Configurations (mean ± std over seeds)\n");
    let metric = spec.metric.name.as_str();
    let keys_str: Vec<&str> = keys.iter().map(String::as_str).collect();
    table_head(&mut out, &[&["rank"], &keys_str, &[metric, "n"]]);
    for (i, a) in aggregates.iter().enumerate() {
        let values: Vec<String> = keys.iter().map(|k| value_of(&a.configuration, k)).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {:.6} ± {:.6} | {} |",
            i + 1,
            values.join(" | "),
            a.mean,
            a.std,
            a.n
        );
    }
    let _ = writeln!(out, "\n## Trials (best first)\n");
    table_head(
        &mut out,
        &[
            &["trial", "status"],
            &keys_str,
            &["seed", metric, "wall (s)", "run"],
        ],
    );
    let mut ranked: Vec<&Record> = records.iter().collect();
    ranked.sort_by(|a, b| match (a.metric, b.metric) {
        (Some(x), Some(y)) if better(goal, x, y) => std::cmp::Ordering::Less,
        (Some(x), Some(y)) if better(goal, y, x) => std::cmp::Ordering::Greater,
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        _ => a.trial.cmp(&b.trial),
    });
    for r in ranked {
        let values: Vec<String> = keys.iter().map(|k| value_of(&r.params, k)).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.1} | {} |",
            r.trial,
            r.status.name(),
            values.join(" | "),
            r.seed.map(|s| s.to_string()).unwrap_or_default(),
            r.metric
                .map(|m| format!("{m:.6}"))
                .unwrap_or_else(|| "–".into()),
            r.wall_seconds,
            r.run_dir
        );
    }
    out
}

/// One TensorBoard run per trial under `tensorboard/`, with its swept values (and seed) as
/// hyperparameters and its metrics as scalars: `tensorboard --logdir` on the sweep folder
/// compares the trials in the HParams view. Rewritten whole each time.
fn hparams(dir: &Path, spec: &SweepSpec, records: &[Record]) -> Result<()> {
    let root = dir.join("tensorboard");
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("clearing {}", root.display()))?;
    }
    for r in records.iter().filter(|r| r.metric.is_some()) {
        let name = Path::new(&r.run_dir)
            .file_name()
            .map_or_else(|| r.trial.to_string(), |n| n.to_string_lossy().to_string());
        let mut writer = EventWriter::create(&root.join(name))?;
        let mut params: Vec<(String, HParamValue)> = r
            .params
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::Number(n) => HParamValue::Number(n.as_f64().unwrap_or(f64::NAN)),
                    Value::Bool(b) => HParamValue::Bool(*b),
                    other => HParamValue::Text(show(other)),
                };
                (k.clone(), value)
            })
            .collect();
        if let Some(seed) = r.seed {
            params.push(("seed".into(), HParamValue::Number(seed as f64)));
        }
        params.push(("status".into(), HParamValue::Text(r.status.name().into())));
        let mut tags: Vec<String> = vec![format!("best {}", spec.metric.name)];
        tags.extend(r.metrics.keys().cloned());
        let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
        writer.hparams(&params, &tag_refs)?;
        if let Some(m) = r.metric {
            writer.scalar(&tags[0], m, 0)?;
        }
        for (k, v) in &r.metrics {
            writer.scalar(k, *v, 0)?;
        }
        writer.flush()?;
    }
    Ok(())
}

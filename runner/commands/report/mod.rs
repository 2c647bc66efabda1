//! `runner report RUN_DIR|RECIPE`: a finished run's metrics, and the paper's values for the same
//! setting beside them (`crate::commands::report::papers`).

pub mod papers;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::artifacts::metrics_csv;
use crate::document::{document, Document};
use crate::files::read_json;
use crate::sweep::{record, results};
use papers::{Match, Papers};

/// `runner report TARGET…`.
#[derive(clap::Args)]
pub struct Args {
    /// Run directories, recipes (their default run directory), sweep files or sweep
    /// results folders.
    #[arg(required = true)]
    targets: Vec<PathBuf>,
    /// Show only these evaluation metrics (comma-separated names; `prefix*` for all that
    /// start so).
    #[arg(long, value_delimiter = ',')]
    metrics: Vec<String>,
}

impl Args {
    pub fn run(&self, out: &mut dyn Write) -> std::io::Result<i32> {
        run(&self.targets, &self.metrics, out)
    }
}

/// One target that is a run directory or a recipe: that run's report beside the paper's
/// values. A sweep (its file or results folder): its summary tables. Several targets: each
/// sweep's tables, and one table comparing the runs.
/// `metrics` keeps the evaluation metrics shown to those named (`name`, or `prefix*`); empty
/// shows all.
pub fn run(targets: &[PathBuf], metrics: &[String], out: &mut dyn Write) -> std::io::Result<i32> {
    let is_sweep = |t: &Path| {
        t.join(record::RECORD).is_file()
            || (t.is_file() && matches!(document(t, &[]), Ok(Document::Sweep(_))))
    };
    if let [target] = targets {
        if !is_sweep(target) {
            return single(target, metrics, out);
        }
    }
    let mut parts = Vec::new();
    let mut runs = Vec::new();
    for t in targets {
        match is_sweep(t) {
            true => parts.push(sweep_tables(t)),
            false if t.is_file() => match crate::plan::resolve::resolve(t, &[]) {
                Ok(plan) => runs.push(recipe_run(&plan)),
                Err(errors) => {
                    super::report(&errors, out)?;
                    return Ok(super::INVALID);
                }
            },
            false => runs.push(t.clone()),
        }
    }
    if !runs.is_empty() {
        parts.push(runs_table(&runs, metrics));
    }
    let joined: Result<Vec<String>> = parts.into_iter().collect();
    super::finish(joined.map(|p| p.join("\n")), out)
}

/// The report of one run directory or recipe.
fn single(target: &Path, metrics: &[String], out: &mut dyn Write) -> std::io::Result<i32> {
    let dir = match target.is_file() {
        true => match crate::plan::resolve::resolve(target, &[]) {
            Ok(plan) => recipe_run(&plan),
            Err(errors) => {
                super::report(&errors, out)?;
                return Ok(super::INVALID);
            }
        },
        false => target.to_path_buf(),
    };
    super::finish(report(&dir, metrics), out)
}

/// The run directory of a recipe's plan, saying on stderr when the files the plan reads changed
/// since that run was trained (its results are then not this data's).
fn recipe_run(plan: &crate::plan::Plan) -> PathBuf {
    let dir = crate::train::trainer::default_dir(plan);
    let changed = crate::methods::inputs::file_digests(plan)
        .map(|now| crate::train::run_dir::changed_files(&dir, &now))
        .unwrap_or_default();
    if !changed.is_empty() {
        eprintln!(
            "warning: {} was trained from other files: {}; `runner run` refuses it until --force trains it anew",
            dir.display(),
            changed.join("; ")
        );
    }
    dir
}

/// Whether `metric` is among `wanted` (`name` or `prefix*`; all when `wanted` is empty).
fn shown(metric: &str, wanted: &[String]) -> bool {
    wanted.is_empty()
        || wanted.iter().any(|w| match w.strip_suffix('*') {
            Some(prefix) => metric.starts_with(prefix),
            None => metric == w,
        })
}

/// A sweep's summary, rendered from its record.
fn sweep_tables(target: &Path) -> Result<String> {
    let dir = match target.is_file() {
        true => match document(target, &[]) {
            Ok(Document::Sweep(spec)) => Path::new("results/sweeps").join(&spec.name),
            _ => bail!("{}: not a sweep file", target.display()),
        },
        false => target.to_path_buf(),
    };
    let spec = record::load_spec(&dir)?;
    Ok(results::summary_md(&spec, &record::load(&dir)?))
}

/// One row per run: its name, steps, last train loss and last evaluation.
fn runs_table(dirs: &[PathBuf], wanted: &[String]) -> Result<String> {
    let mut rows = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for dir in dirs {
        let summary = read_json(&dir.join("summary.json"), "").ok();
        let plan = read_json(&dir.join("plan.json"), "is this a run directory?")?;
        let (last, train_loss) = read_metrics(&dir.join("metrics.csv")).unwrap_or((None, None));
        let metrics: BTreeMap<String, f64> = last
            .map(|e| {
                e.metrics
                    .into_iter()
                    .filter(|(m, _)| shown(m, wanted))
                    .collect()
            })
            .unwrap_or_default();
        for m in metrics.keys() {
            if !names.contains(m) {
                names.push(m.clone());
            }
        }
        let name = plan
            .pointer("/plan/name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        let state = match &summary {
            Some(s) => format!("{} steps", s["steps"].as_u64().unwrap_or(0)),
            None => "unfinished".into(),
        };
        rows.push((dir.display().to_string(), name, state, train_loss, metrics));
    }
    let mut s = format!(
        "| run | name | state | train loss | {} |\n",
        names.join(" | ")
    );
    s += &format!("|---|---|---|---|{}\n", "---|".repeat(names.len()));
    for (dir, name, state, loss, metrics) in rows {
        let values: Vec<String> = names
            .iter()
            .map(|m| metrics.get(m).map_or("–".into(), |v| number(*v)))
            .collect();
        let loss = loss.map_or("–".into(), |l| format!("{l:.4}"));
        s += &format!(
            "| {dir} | {name} | {state} | {loss} | {} |\n",
            values.join(" | ")
        );
    }
    Ok(s)
}

/// The last evaluation of `metrics.csv`: its step and its metrics in file order; and the
/// untrained model's, when the run evaluated at step 0 (`evaluation.at_start`).
#[derive(Debug, Default, PartialEq)]
pub struct LastEval {
    pub step: u64,
    pub metrics: Vec<(String, f64)>,
    pub baseline: Vec<(String, f64)>,
}

/// Reads `metrics.csv` (`step,split,metric,value`): the `eval` rows at the largest step, and
/// the last train loss.
pub fn read_metrics(path: &Path) -> Result<(Option<LastEval>, Option<f64>)> {
    let mut last: Option<LastEval> = None;
    let mut train_loss = None;
    let mut baseline = Vec::new();
    for e in metrics_csv::read(path)? {
        match e.split.as_str() {
            "train" if e.metric == "loss" => train_loss = Some(e.value),
            "eval" => {
                if e.step == 0 {
                    baseline.push((e.metric.clone(), e.value));
                }
                let at = last.get_or_insert_with(|| LastEval {
                    step: e.step,
                    ..LastEval::default()
                });
                if e.step > at.step {
                    *at = LastEval {
                        step: e.step,
                        ..LastEval::default()
                    };
                }
                if e.step == at.step {
                    at.metrics.retain(|(m, _)| *m != e.metric);
                    at.metrics.push((e.metric, e.value));
                }
            }
            _ => {}
        }
    }
    if let Some(last) = last.as_mut().filter(|l| l.step > 0) {
        last.baseline = baseline;
    }
    Ok((last, train_loss))
}

/// A metric value: integers without decimals, others with four.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

fn report(dir: &Path, wanted: &[String]) -> Result<String> {
    if !dir.is_dir() {
        bail!(
            "{}: no such run directory\n  hint: pass the directory `runner run` wrote \
             (results/runs/NAME, or its --out)",
            dir.display()
        );
    }
    let summary = read_json(
        &dir.join("summary.json"),
        "summary.json is written when a run finishes; finish or resume it with \
         `runner run RECIPE --out DIR`",
    )?;
    let plan_file = read_json(
        &dir.join("plan.json"),
        "plan.json is written when a run starts; is this a run directory?",
    )?;
    let plan = plan_file.get("plan").unwrap_or(&plan_file);

    let metrics_path = dir.join("metrics.csv");
    let (last_eval, last_train_loss) = if metrics_path.is_file() {
        read_metrics(&metrics_path)?
    } else {
        (None, None)
    };

    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let name = text(&summary, "name")
        .or_else(|| text(plan, "name"))
        .unwrap_or_else(|| "?".into());
    let kind = text(&summary, "kind")
        .or_else(|| text(plan, "kind"))
        .unwrap_or_else(|| "?".into());
    let hash = text(&summary, "plan_hash")
        .or_else(|| text(&plan_file, "hash"))
        .unwrap_or_else(|| "?".into());
    let steps = summary
        .get("steps")
        .and_then(Value::as_u64)
        .map_or("?".into(), |s| s.to_string());
    let train_loss = summary
        .get("final_train_loss")
        .and_then(Value::as_f64)
        .or(last_train_loss)
        .map_or("-".into(), |v| format!("{v:.4}"));

    let mut s = String::new();
    let w = &mut s;
    writeln!(w, "run               {name}")?;
    writeln!(w, "directory         {}", dir.display())?;
    writeln!(w, "kind              {kind}")?;
    writeln!(w, "plan hash         {hash}")?;
    writeln!(w, "steps             {steps}")?;
    writeln!(w, "final train loss  {train_loss}")?;
    match &last_eval {
        Some(e) => {
            let width = e
                .metrics
                .iter()
                .filter(|(m, _)| shown(m, wanted))
                .map(|(m, _)| m.len())
                .max()
                .unwrap_or(0);
            match e.baseline.is_empty() {
                true => writeln!(w, "last eval         step {}", e.step)?,
                false => {
                    writeln!(
                        w,
                        "last eval         step {}, beside the untrained model (step 0)",
                        e.step
                    )?;
                    let last = format!("step {}", e.step);
                    writeln!(w, "  {:<width$}  {last:>10}  {:>10}", "", "step 0")?;
                }
            }
            for (m, v) in e.metrics.iter().filter(|(m, _)| shown(m, wanted)) {
                let base = e.baseline.iter().find(|(b, _)| b == m);
                match base {
                    Some((_, b)) => {
                        writeln!(w, "  {m:<width$}  {:>10}  {:>10}", number(*v), number(*b))?
                    }
                    None => writeln!(w, "  {m:<width$}  {}", number(*v))?,
                }
            }
        }
        None if metrics_path.is_file() => writeln!(w, "last eval         none in metrics.csv")?,
        None => writeln!(w, "last eval         no metrics.csv (logging.csv is off)")?,
    }
    match summary.get("best") {
        Some(best) if !best.is_null() => {
            let metric = best.get("metric").and_then(Value::as_str).unwrap_or("?");
            let value = best
                .get("value")
                .and_then(Value::as_f64)
                .map_or("-".into(), number);
            let step = best
                .get("step")
                .and_then(Value::as_u64)
                .map_or("?".into(), |s| s.to_string());
            writeln!(w, "best              {metric} {value} at step {step}")?;
        }
        _ => writeln!(w, "best              none recorded")?,
    }
    writeln!(w)?;

    let papers = Papers::builtin().context("the built-in paper tables")?;
    let metrics: BTreeMap<String, f64> = last_eval
        .map(|e| e.metrics.into_iter().collect())
        .unwrap_or_default();
    match papers::match_run(&papers, plan, &metrics) {
        Match::None(why) => write!(w, "no paper row matches this setting: {why}")?,
        Match::Rows { rows, notes } => {
            writeln!(w, "paper vs this run")?;
            let mut current: Option<(&str, &str)> = None;
            let width = rows.iter().map(|c| c.metric.len()).max().unwrap_or(0);
            for c in &rows {
                if current != Some((&c.table, &c.setting)) {
                    current = Some((&c.table, &c.setting));
                    writeln!(w, "{}: {}", c.table, c.setting)?;
                    writeln!(
                        w,
                        "  {:<width$}  {:>8}  {:>10}  {:>10}",
                        "metric", "paper", "run", "run-paper"
                    )?;
                }
                let (run, diff) = match c.run {
                    Some(v) => (format!("{v:.2}"), format!("{:+.2}", v - c.paper.value)),
                    None => ("-".into(), "-".into()),
                };
                let note = if c.note.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", c.note)
                };
                writeln!(
                    w,
                    "  {:<width$}  {:>8}  {run:>10}  {diff:>10}{note}",
                    c.metric, c.paper.text
                )?;
            }
            for n in notes {
                writeln!(w, "note: {n}")?;
            }
        }
    }
    Ok(s.trim_end().to_string())
}

//! `runner report RUN_DIR|RECIPE`: a finished run's metrics, and the paper's values for the same
//! setting beside them (`crate::report::papers`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::report::papers::{self, Match, Papers};

/// `target` is a run directory, or a recipe whose default run directory is reported.
pub fn run(target: &Path, out: &mut dyn Write) -> std::io::Result<i32> {
    let dir = match target.is_file() {
        true => match crate::plan::resolve::resolve(target, &[]) {
            Ok(plan) => crate::train::trainer::default_dir(&plan),
            Err(errors) => {
                super::report(&errors, out)?;
                return Ok(super::INVALID);
            }
        },
        false => target.to_path_buf(),
    };
    super::finish(report(&dir), out)
}

/// The last evaluation of `metrics.csv`: its step and its metrics in file order.
#[derive(Debug, Default, PartialEq)]
pub struct LastEval {
    pub step: u64,
    pub metrics: Vec<(String, f64)>,
}

/// Reads `metrics.csv` (`step,split,metric,value`): the `eval` rows at the largest step, and
/// the last train loss.
pub fn read_metrics(path: &Path) -> Result<(Option<LastEval>, Option<f64>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut last: Option<LastEval> = None;
    let mut train_loss = None;
    for (i, line) in text.lines().enumerate() {
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
        let step: u64 = step.trim().parse().map_err(|_| parse_err())?;
        let value: f64 = value.trim().parse().map_err(|_| parse_err())?;
        match split.trim() {
            "train" if metric.trim() == "loss" => train_loss = Some(value),
            "eval" => {
                let at = last.get_or_insert_with(|| LastEval {
                    step,
                    metrics: Vec::new(),
                });
                if step > at.step {
                    *at = LastEval {
                        step,
                        metrics: Vec::new(),
                    };
                }
                if step == at.step {
                    let metric = metric.trim().to_string();
                    at.metrics.retain(|(m, _)| *m != metric);
                    at.metrics.push((metric, value));
                }
            }
            _ => {}
        }
    }
    Ok((last, train_loss))
}

fn read_json(path: &Path, hint: &str) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("cannot read {}: {e}\n  hint: {hint}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// A metric value: integers without decimals, others with four.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

fn report(dir: &Path) -> Result<String> {
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
            writeln!(w, "last eval         step {}", e.step)?;
            let width = e.metrics.iter().map(|(m, _)| m.len()).max().unwrap_or(0);
            for (m, v) in &e.metrics {
                writeln!(w, "  {m:<width$}  {}", number(*v))?;
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

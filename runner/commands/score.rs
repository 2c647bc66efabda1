//! `runner score --predictions P --references R [--metrics bleu4,rouge_l,meteor] [--by FIELD,…]`:
//! scores generations on their own, as CoE's `scoring.py` does: each metric per sample, then
//! the mean (×100), overall and for each value of the `--by` fields (subject, grade, context
//! type: fields of the reference records).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::data::records;
use crate::eval::text_metrics::TextScorer;
use crate::plan::kinds::coe::TextMetric;

/// `runner score --predictions P --references R`.
#[derive(clap::Args)]
pub struct Options {
    /// Generations: .txt lines, or JSON/JSONL strings or {id?, prediction}.
    #[arg(long)]
    pub predictions: PathBuf,
    /// References: .txt lines, or JSON/JSONL strings or {id?, reference(s), subgroup fields…}.
    #[arg(long)]
    pub references: PathBuf,
    /// Metrics, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "bleu4,rouge_l,meteor")]
    pub metrics: Vec<String>,
    /// Reference fields to break the scores down by (such as subject,grade,context_type).
    #[arg(long, value_delimiter = ',')]
    pub by: Vec<String>,
}

/// A metric by the names `--metrics` accepts.
fn parse_metric(name: &str) -> Result<TextMetric> {
    match name.to_lowercase().replace('-', "_").as_str() {
        "bleu4" | "bleu" => Ok(TextMetric::Bleu4),
        "rouge_l" | "rougel" => Ok(TextMetric::RougeL),
        "meteor" => Ok(TextMetric::Meteor),
        other => bail!("--metrics: unknown metric `{other}`\n  hint: runner score knows bleu4, rouge_l and meteor"),
    }
}

pub fn run(options: &Options, out: &mut dyn std::io::Write) -> std::io::Result<i32> {
    super::finish(score(options), out)
}

/// One line of a predictions or references file: its id, its texts, and the record.
struct Entry {
    id: Option<String>,
    texts: Vec<String>,
    record: Value,
}

/// `.txt`: one text per line. JSON or JSONL: strings, or objects whose text is under one of
/// `keys` (a string, or a list for several references), with an optional `id`.
fn read(path: &Path, keys: &[&str]) -> Result<Vec<Entry>> {
    if path.extension().is_some_and(|e| e == "txt") {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return Ok(text
            .lines()
            .map(|l| Entry {
                id: None,
                texts: vec![l.to_string()],
                record: Value::Null,
            })
            .collect());
    }
    let what = format!("strings or objects with one of {keys:?}");
    records::read(path, &what)?
        .into_iter()
        .map(|(place, value)| {
            let texts = match &value {
                Value::String(s) => vec![s.clone()],
                Value::Object(o) => match keys.iter().find_map(|k| o.get(*k)) {
                    Some(Value::String(s)) => vec![s.clone()],
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|i| i.as_str().map(str::to_string))
                        .collect::<Option<_>>()
                        .with_context(|| {
                            format!("{} {place}: texts must be strings", path.display())
                        })?,
                    _ => bail!(
                        "{} {place}: no text under any of {keys:?}\n  hint: name the field `{}`",
                        path.display(),
                        keys[0]
                    ),
                },
                _ => bail!("{} {place}: expected {what}", path.display()),
            };
            let id = value.get("id").map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            Ok(Entry {
                id,
                texts,
                record: value,
            })
        })
        .collect()
}

fn score(options: &Options) -> Result<String> {
    let metrics: Vec<TextMetric> = options
        .metrics
        .iter()
        .map(|m| parse_metric(m))
        .collect::<Result<_>>()?;
    let scorer = TextScorer::new(&metrics)?;
    let predictions = read(&options.predictions, &["prediction", "text", "output"])?;
    let references = read(
        &options.references,
        &["reference", "references", "text", "output"],
    )?;
    // Pair by id when every line has one, else line by line.
    let by_id = predictions
        .iter()
        .chain(&references)
        .all(|e| e.id.is_some());
    let pairs: Vec<(&Entry, &Entry)> = match by_id {
        true => {
            let index: BTreeMap<&str, &Entry> = references
                .iter()
                .map(|r| (r.id.as_deref().unwrap_or_default(), r))
                .collect();
            predictions
                .iter()
                .map(|p| {
                    let id = p.id.as_deref().unwrap_or_default();
                    index.get(id).map(|r| (p, *r)).with_context(|| {
                        format!("prediction `{id}` has no reference in {}", options.references.display())
                    })
                })
                .collect::<Result<_>>()?
        }
        false if predictions.len() == references.len() => predictions.iter().zip(&references).collect(),
        false => bail!(
            "{} has {} predictions and {} has {} references, and not every line has an `id`\n  hint: give both files ids, or one line per example in the same order",
            options.predictions.display(),
            predictions.len(),
            options.references.display(),
            references.len()
        ),
    };
    if pairs.is_empty() {
        bail!("{}: no predictions to score", options.predictions.display());
    }
    // Per sample, then means per group.
    let mut groups: BTreeMap<(String, String), Vec<Vec<f64>>> = BTreeMap::new();
    for (p, r) in &pairs {
        let values = scorer.score(&p.texts[0], &r.texts)?;
        groups
            .entry(("all".into(), String::new()))
            .or_default()
            .push(values.clone());
        for field in &options.by {
            let value = match r.record.get(field) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => "(none)".into(),
                Some(other) => other.to_string(),
            };
            groups
                .entry((field.clone(), value))
                .or_default()
                .push(values.clone());
        }
    }
    let mut s = String::new();
    let names: Vec<&str> = metrics.iter().map(|m| m.name()).collect();
    let _ = writeln!(s, "| group | n | {} |", names.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(names.len() + 2));
    let mut ordered: Vec<_> = groups.iter().collect();
    ordered.sort_by_key(|((field, _), _)| field != "all");
    for ((field, value), rows) in ordered {
        let label = match field.as_str() {
            "all" => "all".to_string(),
            _ => format!("{field}={value}"),
        };
        let means: Vec<String> = (0..metrics.len())
            .map(|i| {
                let mean = rows.iter().map(|r| r[i]).sum::<f64>() / rows.len() as f64;
                format!("{:.2}", 100.0 * mean)
            })
            .collect();
        let _ = writeln!(s, "| {label} | {} | {} |", rows.len(), means.join(" | "));
    }
    let _ = write!(
        s,
        "\nper-sample means ×100; BLEU-4 as HF evaluate's bleu (13a, no smoothing), ROUGE-L as rouge-score's rougeL F, METEOR as HF evaluate's meteor (NLTK's, on word_tokenize)"
    );
    Ok(s)
}

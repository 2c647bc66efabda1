//! `runner validate [PATH…]`: check every recipe, sweep and fragment without a GPU, weights or
//! data. Exit 0 when all are valid, 1 when any is invalid, 2 for usage errors.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{Format, INVALID, OK, USAGE};
use crate::config::Diagnostic;
use crate::document::{document, Document};

/// `runner validate [PATHS…]`.
#[derive(clap::Args)]
pub struct Args {
    /// Files or folders (default: recipes/, configs/, sweeps/).
    paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Fail on warnings too (for CI): a warning is a setting that cannot make a run wrong but
    /// is likely a slip, such as evaluation every 50 steps in a 20-step run.
    #[arg(long)]
    strict: bool,
}

impl Args {
    pub fn run(&self, out: &mut dyn Write) -> std::io::Result<i32> {
        run(&self.paths, self.format, self.strict, out)
    }
}

/// Folders checked when no path is given.
pub const DEFAULT_PATHS: [&str; 3] = ["recipes", "configs", "sweeps"];

pub fn run(
    paths: &[PathBuf],
    format: Format,
    strict: bool,
    out: &mut dyn Write,
) -> std::io::Result<i32> {
    let paths: Vec<PathBuf> = if paths.is_empty() {
        DEFAULT_PATHS
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect()
    } else {
        paths.to_vec()
    };
    if let Some(missing) = paths.iter().find(|p| !p.exists()) {
        writeln!(out, "error: {} does not exist", missing.display())?;
        return Ok(USAGE);
    }
    let files = yaml_files(&paths);
    let mut results = Vec::new();
    for file in &files {
        results.push((file, document(file, &[])));
    }
    let fails = |r: &Result<Document, Vec<Diagnostic>>| {
        r.is_err() || (strict && !warnings_of(r).is_empty())
    };
    let invalid = results.iter().filter(|(_, r)| fails(r)).count();
    match format {
        Format::Text => {
            for (file, result) in &results {
                let status = if fails(result) { "invalid" } else { "ok     " };
                match result {
                    Ok(doc) => writeln!(out, "{status} {}  ({})", file.display(), describe(doc))?,
                    Err(_) => writeln!(out, "{status} {}", file.display())?,
                }
                for d in result.as_ref().err().into_iter().flatten() {
                    writeln!(out, "{d}")?;
                }
                for w in warnings_of(result) {
                    writeln!(out, "{w}")?;
                }
            }
            let errors: usize = results
                .iter()
                .filter_map(|(_, r)| r.as_ref().err())
                .map(Vec::len)
                .sum();
            let warnings: usize = results.iter().map(|(_, r)| warnings_of(r).len()).sum();
            writeln!(
                out,
                "checked {} files: {} valid, {invalid} invalid ({errors} errors, {warnings} warnings{})",
                files.len(),
                files.len() - invalid,
                if strict { ", failing under --strict" } else { "" },
            )?;
        }
        Format::Json => {
            let entries: Vec<_> = results
                .iter()
                .map(|(file, result)| {
                    let mut entry = file_json(file, result);
                    entry["valid"] = json!(!fails(result));
                    entry["warnings"] = json!(warnings_of(result)
                        .iter()
                        .map(Diagnostic::to_json)
                        .collect::<Vec<_>>());
                    entry
                })
                .collect();
            let report = json!({"valid": invalid == 0, "files": entries});
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&report).expect("JSON values serialize")
            )?;
        }
    }
    Ok(if invalid == 0 { OK } else { INVALID })
}

/// The warnings of a checked file (a recipe's; other files have none).
fn warnings_of(result: &Result<Document, Vec<Diagnostic>>) -> &[Diagnostic] {
    match result {
        Ok(Document::Recipe(plan)) => &plan.warnings,
        _ => &[],
    }
}

fn describe(doc: &Document) -> String {
    match doc {
        Document::Recipe(plan) => {
            format!("{} recipe, plan {}", plan.recipe.kind(), &plan.hash[..12])
        }
        Document::Sweep(_) => "sweep".into(),
        Document::Fragment(def) => format!("fragment of {def}"),
    }
}

fn file_json(file: &Path, result: &Result<Document, Vec<Diagnostic>>) -> serde_json::Value {
    match result {
        Ok(Document::Recipe(plan)) => {
            json!({"path": file, "valid": true, "type": "recipe", "kind": plan.recipe.kind(), "hash": plan.hash, "errors": []})
        }
        Ok(Document::Sweep(_)) => {
            json!({"path": file, "valid": true, "type": "sweep", "errors": []})
        }
        Ok(Document::Fragment(def)) => {
            json!({"path": file, "valid": true, "type": "fragment", "fragment_of": def, "errors": []})
        }
        Err(errors) => {
            json!({"path": file, "valid": false, "errors": errors.iter().map(Diagnostic::to_json).collect::<Vec<_>>()})
        }
    }
}

/// The YAML files named, folders walked recursively, in a stable order.
fn yaml_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_file() {
            files.push(path.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = walkdir::WalkDir::new(path)
            .into_iter()
            .filter_map(Result::ok)
            .map(walkdir::DirEntry::into_path)
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

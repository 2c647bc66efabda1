//! Data files of JSON records: a JSON list (`.json`) or one record per line (`.jsonl`). Each
//! record comes with its place (`item N`, `line N`) for error messages.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

/// The records of `path`; `what` says what a record should be, for the error of a file that
/// is not a JSON list.
pub fn read(path: &Path, what: &str) -> Result<Vec<(String, Value)>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read {}\n  hint: check data.train and data.validation",
            path.display()
        )
    })?;
    if path.extension().is_some_and(|e| e == "jsonl") {
        return text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                let value = serde_json::from_str(l)
                    .map_err(|e| anyhow!("{}:{}: not valid JSON: {e}", path.display(), i + 1))?;
                Ok((format!("line {}", i + 1), value))
            })
            .collect();
    }
    let list: Vec<Value> = serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "{}:{}:{}: expected a JSON list of {what}: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    Ok(list
        .into_iter()
        .enumerate()
        .map(|(i, v)| (format!("item {i}"), v))
        .collect())
}

/// The records of `path` typed as `T`; a record that does not fit is reported with its place
/// and `hint`.
pub fn read_as<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
    hint: &str,
) -> Result<Vec<T>> {
    read(path, what)?
        .into_iter()
        .map(|(place, v)| {
            serde_json::from_value(v)
                .map_err(|e| anyhow!("{} ({place}): {e}\n  hint: {hint}", path.display()))
        })
        .collect()
}

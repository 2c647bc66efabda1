//! Plain text for language modelling, as LongLoRA's context-extension stage prepares it:
//! documents joined with EOS and cut into blocks of exactly the training length; the loss
//! covers every token.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use super::batch::Example;
use super::tokenizer::Tokenizer;

/// The documents of a `.txt` file (one per non-empty line), a JSON list of strings or of
/// `{"text": …}` objects, or JSONL of either.
pub fn read_texts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}\n  hint: check data.train", path.display()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let values: Vec<Value> = match ext {
        "txt" => {
            return Ok(text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect())
        }
        "jsonl" => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| anyhow!("{}:{}: not valid JSON: {e}", path.display(), i + 1))
            })
            .collect::<Result<_>>()?,
        _ => serde_json::from_str(&text).map_err(|e| {
            anyhow!(
                "{}:{}:{}: expected a JSON list of texts: {e}",
                path.display(),
                e.line(),
                e.column()
            )
        })?,
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s),
            Value::Object(o) if o.get("text").is_some_and(Value::is_string) => {
                Ok(o["text"].as_str().unwrap_or_default().to_string())
            }
            _ => Err(anyhow!(
                "{} (item {i}): expected a string or an object with a string `text`",
                path.display()
            )),
        })
        .collect()
}

/// Every document's tokens followed by EOS, concatenated and cut into `block` tokens; the
/// remainder shorter than a block is dropped (as LongLoRA's `group_texts`).
pub fn pack(
    tokenizer: &Tokenizer,
    texts: &[String],
    eos: i64,
    block: usize,
) -> Result<Vec<Example>> {
    let mut stream = Vec::new();
    for t in texts {
        stream.extend(tokenizer.encode(t, true)?);
        stream.push(eos);
    }
    Ok(stream
        .chunks_exact(block.max(1))
        .map(|c| Example {
            ids: c.to_vec(),
            labels: c.to_vec(),
        })
        .collect())
}

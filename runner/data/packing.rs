//! Plain text for language modelling, as LongLoRA's context-extension stage prepares it:
//! documents joined with EOS and cut into blocks of exactly the training length; the loss
//! covers every token.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use super::batch::Example;
use super::records;
use super::tokenizer::Tokenizer;

/// The documents of a `.txt` file (one per non-empty line), a JSON list of strings or of
/// `{"text": …}` objects, or JSONL of either.
pub fn read_texts(path: &Path) -> Result<Vec<String>> {
    if path.extension().is_some_and(|e| e == "txt") {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}\n  hint: check data.train", path.display()))?;
        return Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect());
    }
    records::read(path, "texts")?
        .into_iter()
        .map(|(place, v)| match v {
            Value::String(s) => Ok(s),
            Value::Object(o) if o.get("text").is_some_and(Value::is_string) => {
                Ok(o["text"].as_str().unwrap_or_default().to_string())
            }
            _ => Err(anyhow!(
                "{} ({place}): expected a string or an object with a string `text`",
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

//! Instruction data (`{instruction, input?, output}`, Alpaca's and LongLoRA's format) and the
//! supervised example LongLoRA's `supervised-fine-tune.py` makes of it: prompt + output + EOS,
//! loss on the output only, truncated to the training length.

use std::path::Path;

use anyhow::Result;
use serde::Deserialize;

use super::batch::Example;
use super::records;
use super::tokenizer::Tokenizer;
use crate::models::loss::IGNORE;
use crate::plan::kinds::longlora::Template;

#[derive(Clone, Debug, Deserialize)]
pub struct Item {
    pub instruction: String,
    #[serde(default)]
    pub input: String,
    pub output: String,
}

/// Llama-2's system prompt as LongLoRA's `PROMPT_DICT` spells it (two spaces after "safe.").
const LLAMA2_SYSTEM: &str = "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. Please ensure that your responses are socially unbiased and positive in nature.\n\nIf a question does not make any sense, or is not factually coherent, explain why instead of answering something not correct. If you don't know the answer to a question, please don't share false information.\n";

/// Reads a JSON list (`.json`) or one object per line (`.jsonl`) of instruction items.
pub fn read(path: &Path) -> Result<Vec<Item>> {
    records::read_as(
        path,
        "{instruction, input, output}",
        "each item needs string keys instruction and output (input is optional)",
    )
}

/// The prompt an item is trained and evaluated with.
pub fn prompt(template: Template, item: &Item) -> String {
    let (instruction, input) = (&item.instruction, &item.input);
    match (template, input.is_empty()) {
        (Template::Llama2Chat, false) => {
            format!("[INST] <<SYS>>\n{LLAMA2_SYSTEM}<</SYS>> \n\n {instruction} \n{input} [/INST]")
        }
        (Template::Llama2Chat, true) => format!("[INST]{instruction}[/INST]"),
        (Template::Plain, false) => format!("{instruction}\n{input}\n"),
        (Template::Plain, true) => format!("{instruction}\n"),
    }
}

/// `prompt + output + EOS`, labels -100 over the prompt, cut at `max_length` tokens. As
/// LongLoRA's `preprocess`: the prompt and output are tokenized as one text, and the first
/// (tokenized prompt length) labels are masked.
pub fn encode(
    tokenizer: &Tokenizer,
    template: Template,
    item: &Item,
    eos: i64,
    max_length: usize,
) -> Result<Example> {
    let source = prompt(template, item);
    let source_len = tokenizer.encode(&source, true)?.len();
    let mut ids = tokenizer.encode(&(source + &item.output), true)?;
    ids.push(eos);
    ids.truncate(max_length);
    let mut labels = ids.clone();
    for l in labels.iter_mut().take(source_len) {
        *l = IGNORE;
    }
    Ok(Example { ids, labels })
}

//! QA-Expert's multi-hop QA data (khaimt/qa_expert at 88c788a, the code behind seed 002's
//! README) and the dialogue it trains on: the assistant calls `retrieve` once per
//! sub-question, reads each retrieved paragraph, and answers; loss on the assistant turns only.
//!
//! An item `{question, final_answer, sub_questions: [{question, paragraph, long_answer}], src}`
//! becomes (`convert_multi_qa_format_to_messages`, `get_prompt_of_message`):
//!
//! ```text
//! system: {SYSTEM}<|eot|>
//! user: {question}<|eot|>
//! assistant: <|bof|>retrieve:\n{"query": "{sub 1}"}<|eof|><|eot|>
//! retrieved context: {paragraph 1}<|eot|>
//! assistant: {long answer 1}\n<|bof|>retrieve:\n{"query": "{sub 2}"}<|eof|><|eot|>
//! retrieved context: {paragraph 2}<|eot|>
//! assistant: {long answer 2}\nSummary: {final answer}<|eot|>
//! ```
//!
//! with a newline after each `<|eot|>`. An item with one sub-question is a single-hop one: its
//! call's query is the item's question and its last turn the final answer as it is. The three
//! markers were added to the slow Llama tokenizer with `add_tokens`, which in transformers 4.34
//! strips the whitespace on both sides of them: so is it stripped here, from the text, before
//! tokenizing. The loss covers each assistant turn after `assistant:` through its `<|eot|>`
//! (`preprare_training_inputs`); BOS is added, EOS is not.

use std::ops::Range;
use std::path::Path;

use anyhow::{bail, Result};
use serde::Deserialize;

use super::batch::Example;
use super::records;
use super::tokenizer::Tokenizer;
use crate::models::loss::IGNORE;

/// Begin and end of a function call, end of a turn.
pub const BOF: &str = "<|bof|>";
pub const EOF: &str = "<|eof|>";
pub const EOT: &str = "<|eot|>";
pub const MARKERS: [&str; 3] = [BOF, EOF, EOT];

/// `SYSTEM_MESSAGE` of `qa_expert/prompt_utils.py`, its final newline included.
const SYSTEM: &str = "This is a conversation between user and an artificial intelligence assistant. User will ask question and the assistant will use the function: `retrieve` to retrieve the most relevant context to answer the question. For complex question, assistant might need to use the function `retrieve` multiple times.\n`retrieve`: this function is useful for retrieving the most relevant information given a query. The only parameter of this function is: query(str): the query for retrieving relevant content.\n";

#[derive(Clone, Debug, Deserialize)]
pub struct SubQuestion {
    pub question: String,
    pub paragraph: String,
    pub long_answer: String,
}

/// One item of qa-expert-multi-hop-qa-V1.0 (fields training does not read are ignored).
#[derive(Clone, Debug, Deserialize)]
pub struct Item {
    pub question: String,
    pub final_answer: String,
    pub sub_questions: Vec<SubQuestion>,
}

/// Reads a JSON list (`.json`) or JSON lines (`.jsonl`) of items.
pub fn read(path: &Path) -> Result<Vec<Item>> {
    let items: Vec<Item> = records::read_as(
        path,
        "{question, final_answer, sub_questions}",
        "each item needs question, final_answer and sub_questions [{question, paragraph, long_answer}]",
    )?;
    if let Some(i) = items.iter().position(|it| it.sub_questions.is_empty()) {
        bail!(
            "{} (item {}): sub_questions is empty\n  hint: a single-hop item has one sub-question holding its paragraph (QA-Expert's code needs it)",
            path.display(),
            i + 1
        );
    }
    Ok(items)
}

/// A piece of the rendered text, and whether the loss covers it.
struct Span {
    text: String,
    target: bool,
}

/// `assistant: ` + what the assistant says: a text, a `retrieve` call, or a text then a call.
fn assistant(content: Option<&str>, query: Option<&str>) -> [Span; 3] {
    let call = query.map(|q| format!("{BOF}retrieve:\n{{\"query\": {}}}{EOF}", json_string(q)));
    let body = match (content, call) {
        (Some(text), Some(call)) => format!("{text}\n{call}"),
        (Some(text), None) => text.to_string(),
        (None, Some(call)) => call,
        (None, None) => String::new(),
    };
    [
        Span {
            text: "assistant:".into(),
            target: false,
        },
        Span {
            text: format!(" {body}{EOT}"),
            target: true,
        },
        Span {
            text: "\n".into(),
            target: false,
        },
    ]
}

/// `{role}: {content}<|eot|>` and its newline, outside the loss.
fn turn(role: &str, content: &str) -> [Span; 2] {
    [
        Span {
            text: format!("{role}: {content}{EOT}"),
            target: false,
        },
        Span {
            text: "\n".into(),
            target: false,
        },
    ]
}

/// The item's dialogue, as QA-Expert renders it (whitespace around the markers not yet
/// stripped). Like the reference, only the multi-hop branch strips the final answer.
fn spans(item: &Item) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    out.extend(turn("system", SYSTEM));
    out.extend(turn("user", &item.question));
    let subs = &item.sub_questions;
    if subs.len() > 1 {
        let mut previous: Option<String> = None;
        for sub in subs {
            out.extend(assistant(previous.as_deref(), Some(&sub.question)));
            out.extend(turn("retrieved context", &sub.paragraph));
            previous = Some(sub.long_answer.trim().to_string());
        }
        let last = format!(
            "{}\nSummary: {}",
            previous.unwrap_or_default(),
            item.final_answer.trim()
        );
        out.extend(assistant(Some(&last), None));
    } else {
        out.extend(assistant(None, Some(&item.question)));
        out.extend(turn("retrieved context", &subs[0].paragraph));
        out.extend(assistant(Some(&item.final_answer), None));
    }
    out
}

/// Python's `json.dumps` of a string (ASCII kept as is, `ensure_ascii=False`): quotes,
/// backslashes and control characters escaped, the latter as `\uXXXX` in lower-case hex.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The text, and the byte ranges the loss covers, with the whitespace on both sides of every
/// marker removed (what the legacy added tokens' lstrip/rstrip did to the token stream).
pub fn render(item: &Item) -> (String, Vec<Range<usize>>) {
    let mut chars: Vec<(char, bool)> = Vec::new();
    for span in spans(item) {
        chars.extend(span.text.chars().map(|c| (c, span.target)));
    }
    let text: String = chars.iter().map(|(c, _)| c).collect();
    let mut keep = vec![true; chars.len()];
    // Character index of each byte offset where a marker starts.
    let starts: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
    for marker in MARKERS {
        for (byte, _) in text.match_indices(marker) {
            let first = starts.partition_point(|&b| b < byte);
            let end = first + marker.chars().count();
            let mut i = first;
            while i > 0 && chars[i - 1].0.is_whitespace() {
                i -= 1;
                keep[i] = false;
            }
            let mut j = end;
            while j < chars.len() && chars[j].0.is_whitespace() {
                keep[j] = false;
                j += 1;
            }
        }
    }
    let mut out = String::new();
    let mut targets: Vec<Range<usize>> = Vec::new();
    for ((c, target), kept) in chars.into_iter().zip(keep) {
        if !kept {
            continue;
        }
        let at = out.len();
        out.push(c);
        if target {
            match targets.last_mut() {
                Some(r) if r.end == at => r.end = out.len(),
                _ => targets.push(at..out.len()),
            }
        }
    }
    (out, targets)
}

/// The training example: BOS + the rendered dialogue, labels on the tokens that start inside an
/// assistant turn, cut at `max_length` tokens.
pub fn encode(tokenizer: &Tokenizer, item: &Item, max_length: usize) -> Result<Example> {
    let (text, targets) = render(item);
    let (mut ids, offsets) = tokenizer.encode_with_offsets(&text, true)?;
    let mut labels: Vec<i64> = ids
        .iter()
        .zip(&offsets)
        .map(|(&id, &(start, end))| {
            let inside = end > start && targets.iter().any(|r| r.contains(&start));
            if inside {
                id
            } else {
                IGNORE
            }
        })
        .collect();
    ids.truncate(max_length);
    labels.truncate(max_length);
    Ok(Example { ids, labels })
}

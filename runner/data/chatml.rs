//! CoE's training conversations (turns `{from, value}`, as in Qwen-VL's fine-tuning data) as
//! Qwen-VL's `finetune.py` tokenizes and masks them, in ChatML:
//!
//! ```text
//! <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{value}<|im_end|>\n<|im_start|>assistant\n{value}<|im_end|>\n
//! ```
//!
//! Labels: in the system and user turns only `<|im_start|>`, `<|im_end|>` and the `\n` after
//! it are supervised; in an assistant turn the role and its `\n` are masked, the reply,
//! `<|im_end|>` and `\n` supervised (and its `<|im_start|>`). An image, `<img>path</img>` in a
//! value, becomes `<img>`, one `<imgpad>` per visual token (the model puts the image's
//! features there) and `</img>`, all masked.

use anyhow::{anyhow, bail, Result};

use super::batch::Example;
use super::tokenizer::Tokenizer;
use crate::models::loss::IGNORE;

#[derive(Clone, Debug)]
pub struct Turn {
    pub from: String,
    pub value: String,
}

/// The special tokens of the layout, looked up in the tokenizer.
pub struct Specials {
    pub im_start: i64,
    pub im_end: i64,
    pub img_start: i64,
    pub img_end: i64,
    pub img_pad: i64,
    /// One token: the code skips exactly one after the role.
    pub newline: i64,
}

impl Specials {
    pub fn of(tokenizer: &Tokenizer) -> Result<Specials> {
        let newline = match tokenizer.encode("\n", false)?[..] {
            [nl] => nl,
            ref other => bail!(
                "the tokenizer encodes \"\\n\" as {} tokens; Qwen-VL's layout needs one\n  hint: use a tokenizer with a newline token",
                other.len()
            ),
        };
        Ok(Specials {
            im_start: tokenizer.id("<|im_start|>")?,
            im_end: tokenizer.id("<|im_end|>")?,
            img_start: tokenizer.id("<img>")?,
            img_end: tokenizer.id("</img>")?,
            img_pad: tokenizer.id("<imgpad>")?,
            newline,
        })
    }
}

/// A tokenized conversation and the images it shows, in order.
pub struct Encoded {
    pub example: Example,
    pub images: Vec<String>,
}

/// Ids of `text` with each `<img>path</img>` replaced by the image's placeholder tokens.
fn encode_value(
    tokenizer: &Tokenizer,
    s: &Specials,
    text: &str,
    image_tokens: usize,
    images: &mut Vec<String>,
) -> Result<Vec<i64>> {
    let mut ids = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<img>") {
        let after = &rest[start + "<img>".len()..];
        let end = after
            .find("</img>")
            .ok_or_else(|| anyhow!("`<img>` without `</img>` in {text:?}"))?;
        ids.extend(tokenizer.encode(&rest[..start], false)?);
        ids.push(s.img_start);
        ids.extend(std::iter::repeat_n(s.img_pad, image_tokens));
        ids.push(s.img_end);
        images.push(after[..end].trim().to_string());
        rest = &after[end + "</img>".len()..];
    }
    ids.extend(tokenizer.encode(rest, false)?);
    Ok(ids)
}

/// Qwen-VL's `preprocess` for one conversation: the system turn, then each turn, truncated
/// to `max_length` (padding is left to the batch; an image cut by the limit is dropped whole).
pub fn encode(
    tokenizer: &Tokenizer,
    s: &Specials,
    system: &str,
    turns: &[Turn],
    image_tokens: usize,
    max_length: usize,
) -> Result<Encoded> {
    let mut images = Vec::new();
    let (mut ids, mut labels) = (Vec::new(), Vec::new());
    let mut turn = |role: &str, value_ids: Vec<i64>, supervised: bool| -> Result<()> {
        let role_ids: Vec<i64> = std::iter::once(s.im_start)
            .chain(tokenizer.encode(role, false)?)
            .collect();
        let mut input = role_ids.clone();
        input.push(s.newline);
        input.extend(&value_ids);
        input.extend([s.im_end, s.newline]);
        let mut target = vec![s.im_start];
        match supervised {
            // [im_start] + IGNORE × len(role ids) + input[len(role ids) + 1 .. -2] + [im_end, \n]
            true => {
                target.extend(std::iter::repeat_n(IGNORE, role_ids.len()));
                target.extend(&input[role_ids.len() + 1..input.len() - 2]);
            }
            // [im_start] + IGNORE × (len(input) − 3) + [im_end, \n]
            false => target.extend(std::iter::repeat_n(IGNORE, input.len() - 3)),
        }
        target.extend([s.im_end, s.newline]);
        ids.extend(input);
        labels.extend(target);
        Ok(())
    };
    turn("system", tokenizer.encode(system, false)?, false)?;
    for t in turns {
        let value = encode_value(tokenizer, s, &t.value, image_tokens, &mut images)?;
        match t.from.as_str() {
            "user" | "human" => turn("user", value, false)?,
            "assistant" | "gpt" => turn("assistant", value, true)?,
            other => bail!(
                "a turn from `{other}`: CoE's conversations have turns from user and assistant"
            ),
        }
    }
    // Truncate, and never through an image: its placeholders go whole or not at all.
    let mut keep = ids.len().min(max_length);
    if let Some(open) = ids[..keep].iter().rposition(|&t| t == s.img_start) {
        if !ids[open..keep].contains(&s.img_end) {
            keep = open;
        }
    }
    ids.truncate(keep);
    labels.truncate(keep);
    images.truncate(ids.iter().filter(|&&t| t == s.img_end).count());
    Ok(Encoded {
        example: Example { ids, labels },
        images,
    })
}

/// Keeps only the last reply's own tokens (`reply`, without `<|im_end|>` and the newline) as
/// labels, for scoring that reply alone (the answering task's options, as MLLM-DataEngine
/// scores them); false when truncation cut the reply.
pub fn label_last_reply_only(example: &mut Example, reply: &[i64], s: &Specials) -> bool {
    let n = example.ids.len();
    let end = n.saturating_sub(2);
    let whole = n >= reply.len() + 2
        && example.ids[end..] == [s.im_end, s.newline]
        && example.ids[end - reply.len()..end] == *reply;
    if whole {
        for (i, label) in example.labels.iter_mut().enumerate() {
            if i < end - reply.len() || i >= end {
                *label = IGNORE;
            }
        }
    }
    whole
}

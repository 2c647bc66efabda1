//! The passkey-retrieval test LongLoRA reports (`passkey_retrivial.py`, after Mohtashami &
//! Jaggi's landmark-attention test): a five-digit key hidden at a random depth in repeated
//! filler, asked for at the end; a trial passes when the first number the model generates is
//! the key.

use anyhow::{anyhow, Result};
use tch::{Device, Tensor};

use crate::data::order::SplitMix64;
use crate::data::tokenizer::Tokenizer;
use crate::models::generate::{self, GenerateOptions, Strategy};
use crate::models::llama::Llama;

const TASK: &str = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you about the important information there.";
const GARBAGE: &str =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
const QUESTION: &str = "What is the pass key? The pass key is";

/// One prompt: `n_garbage` filler characters split at a random point around the key line.
pub fn prompt(n_garbage: usize, rng: &mut SplitMix64) -> (String, u64) {
    let prefix = rng.below(n_garbage as u64 + 1) as usize;
    let filler = vec![GARBAGE; n_garbage / GARBAGE.len() + 2].join(" ");
    let key = 1 + rng.below(50_000);
    let info = format!("The pass key is {key}. Remember it. {key} is the pass key.");
    let lines = [
        TASK,
        &filler[..prefix],
        &info,
        &filler[..n_garbage - prefix],
        QUESTION,
    ];
    (lines.join("\n"), key)
}

/// The most filler characters whose prompt stays within `tokens` tokens.
fn fit(tokenizer: &Tokenizer, tokens: usize) -> Result<usize> {
    let length = |n: usize| -> Result<usize> {
        let (text, _) = prompt(n, &mut SplitMix64::new(0));
        Ok(tokenizer.encode(&text, true)?.len())
    };
    let (mut lo, mut hi) = (0usize, tokens * 8);
    if length(0)? > tokens {
        return Ok(0);
    }
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if length(mid)? <= tokens {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo)
}

/// The first run of digits in `text`.
pub fn first_number(text: &str) -> Option<u64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// How many of `trials` prompts of about `tokens` tokens each (keys and depths drawn from
/// `seed`) the model answers, among the trials `takes` picks (by their index), and how many it
/// picked; every trial's prompt is drawn in order, so ranks that pick disjoint trials add up
/// to the whole.
pub fn correct(
    model: &Llama,
    tokenizer: &Tokenizer,
    tokens: usize,
    trials: u32,
    seed: u64,
    takes: impl Fn(usize) -> bool,
) -> Result<(f64, f64)> {
    let n_garbage = fit(tokenizer, tokens)?;
    let mut rng = SplitMix64::new(seed ^ tokens as u64);
    let (mut correct, mut tried) = (0, 0);
    for trial in 0..trials as usize {
        let (text, key) = prompt(n_garbage, &mut rng);
        if !takes(trial) {
            continue;
        }
        tried += 1;
        let ids = tokenizer.encode(&text, true)?;
        let input = Tensor::from_slice(&ids)
            .view([1, -1])
            .to_device(model.device());
        let options = GenerateOptions {
            max_new_tokens: 10,
            strategy: Strategy::Greedy,
            eos: None,
            pad: 0,
            seed: 0,
        };
        let out = generate::decoder_only(model, &input, None, &options);
        let out = Vec::<i64>::try_from(out.view([-1]).to_device(Device::Cpu))
            .map_err(|e| anyhow!("reading generated tokens: {e}"))?;
        if first_number(&tokenizer.decode(&out, true)?) == Some(key) {
            correct += 1;
        }
    }
    Ok((f64::from(correct), f64::from(tried)))
}

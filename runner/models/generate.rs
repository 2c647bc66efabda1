//! Text generation with a key/value cache: greedy or sampled (temperature, nucleus top-p),
//! for decoder-only models (continuing a prompt) and encoder-decoders (from the start token).

use anyhow::Result;
use tch::{Kind, Tensor};

use super::llama::Llama;
use super::t5::T5;
use super::vlm::Vlm;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Strategy {
    Greedy,
    /// Sample from softmax(logits / temperature), restricted to the smallest set of tokens whose
    /// probability reaches `top_p`.
    Sample {
        temperature: f64,
        top_p: f64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: i64,
    pub strategy: Strategy,
    /// A row stops after emitting this token; later positions hold `pad`.
    pub eos: Option<i64>,
    pub pad: i64,
    /// Seeds the sampler (the global generator, reseeded when sampling starts).
    pub seed: i64,
}

/// New tokens `[B, ≤ max_new_tokens]` after `prompt` `[B, T]` (left-padded where `mask` is 0).
pub fn decoder_only(
    model: &Llama,
    prompt: &Tensor,
    mask: Option<&Tensor>,
    options: &GenerateOptions,
) -> Tensor {
    tch::no_grad(|| {
        let mut cache = model.new_cache();
        let b = prompt.size()[0];
        let ones = |n: i64| Tensor::ones([b, n], (Kind::Int64, prompt.device()));
        let mut mask = mask.map_or_else(|| ones(prompt.size()[1]), Tensor::shallow_clone);
        let logits = model.forward_cached(prompt, Some(&mask), &mut cache);
        run(logits, options, |token| {
            mask = Tensor::cat(&[&mask, &ones(1)], 1);
            model.forward_cached(token, Some(&mask), &mut cache)
        })
    })
}

/// `decoder_only` for a vision-language model's prompt with its images.
pub fn multimodal(
    model: &Vlm,
    prompt: &Tensor,
    mask: Option<&Tensor>,
    pixels: Option<&Tensor>,
    options: &GenerateOptions,
) -> Result<Tensor> {
    tch::no_grad(|| {
        let decoder = &model.decoder;
        let mut cache = decoder.new_cache();
        let b = prompt.size()[0];
        let ones = |n: i64| Tensor::ones([b, n], (Kind::Int64, prompt.device()));
        let mut mask = mask.map_or_else(|| ones(prompt.size()[1]), Tensor::shallow_clone);
        let logits = model.prefill(prompt, Some(&mask), pixels, &mut cache)?;
        Ok(run(logits, options, |token| {
            mask = Tensor::cat(&[&mask, &ones(1)], 1);
            decoder.forward_cached(token, Some(&mask), &mut cache)
        }))
    })
}

/// Output tokens `[B, ≤ max_new_tokens]` (without the start token) for encoder input `ids`.
pub fn encoder_decoder(
    model: &T5,
    encoded: &Tensor,
    encoder_mask: &Tensor,
    options: &GenerateOptions,
) -> Tensor {
    tch::no_grad(|| {
        let mut cache = model.new_cache();
        let b = encoded.size()[0];
        let start = Tensor::zeros([b, 1], (Kind::Int64, encoded.device()));
        let logits = model.decode_cached(&start, encoded, encoder_mask, &mut cache);
        run(logits, options, |token| {
            model.decode_cached(token, encoded, encoder_mask, &mut cache)
        })
    })
}

/// The decoding loop: pick from the last position's logits, feed the token back.
fn run(
    first: Tensor,
    options: &GenerateOptions,
    mut step: impl FnMut(&Tensor) -> Tensor,
) -> Tensor {
    if let Strategy::Sample { .. } = options.strategy {
        tch::manual_seed(options.seed);
    }
    let b = first.size()[0];
    if options.max_new_tokens <= 0 {
        return Tensor::zeros([b, 0], (Kind::Int64, first.device()));
    }
    let mut logits = first;
    let mut done = Tensor::zeros([b], (Kind::Bool, logits.device()));
    let mut out = Vec::new();
    for i in 0..options.max_new_tokens {
        let last = logits.select(1, logits.size()[1] - 1);
        let token = pick(&last, options.strategy).masked_fill(&done, options.pad);
        if let Some(eos) = options.eos {
            done = done.logical_or(&token.eq(eos));
        }
        let token = token.view([b, 1]);
        out.push(token.shallow_clone());
        let finished = done.all().int64_value(&[]) == 1;
        if finished || i + 1 == options.max_new_tokens {
            break;
        }
        logits = step(&token);
    }
    Tensor::cat(&out, 1)
}

/// One token per row from `logits` `[B, V]`.
pub fn pick(logits: &Tensor, strategy: Strategy) -> Tensor {
    match strategy {
        Strategy::Greedy => logits.argmax(-1, false),
        Strategy::Sample { temperature, top_p } => {
            let probs =
                (logits.to_kind(Kind::Float) / temperature.max(1e-6)).softmax(-1, Kind::Float);
            let (sorted, order) = probs.sort(-1, true);
            // Keep a token while the mass before it is below top_p; the most likely token, with
            // no mass before it, always stays.
            let before = sorted.cumsum(-1, Kind::Float) - &sorted;
            let dropped = before.ge(top_p).logical_and(&before.gt(0.0));
            let kept = sorted.masked_fill(&dropped, 0.0);
            let choice = kept.multinomial(1, false);
            order.gather(-1, &choice, false).squeeze_dim(-1)
        }
    }
}

//! Perplexity as LongLoRA's `eval.py` measures it: windows of `context` tokens starting every
//! `stride` tokens of one long token stream, the loss of each window weighted by its number of
//! predicted tokens, `ppl = e^(mean loss)`.

use tch::{Device, Tensor};

use crate::models::llama::Llama;
use crate::models::Tape;

/// Perplexity of `tokens` with windows of `context` tokens every `stride` tokens.
/// None when the stream is shorter than one window.
pub fn sliding_window(model: &Llama, tokens: &[i64], context: usize, stride: usize) -> Option<f64> {
    window_losses(model, tokens, context, stride, |_| true)
        .map(|(total, count)| (total / count).exp())
}

/// The summed loss of the windows `takes` picks (by their index) and their predicted tokens;
/// ranks that pick disjoint windows add up to the whole stream's. None when the stream is
/// shorter than one window.
pub fn window_losses(
    model: &Llama,
    tokens: &[i64],
    context: usize,
    stride: usize,
    takes: impl Fn(usize) -> bool,
) -> Option<(f64, f64)> {
    if tokens.len() < context.max(2) {
        return None;
    }
    let (mut total, mut count) = (0.0, 0usize);
    tch::no_grad(|| {
        let starts = (0..=tokens.len() - context).step_by(stride.max(1));
        for (_, start) in starts.enumerate().filter(|(i, _)| takes(*i)) {
            let window = Tensor::from_slice(&tokens[start..start + context])
                .view([1, -1])
                .to_device(model.device());
            // Without [context, vocab] logits: 4 GiB of them in fp32 at 32,768 tokens.
            let losses =
                model.causal_lm_loss(&model.embed(&window), None, &window, &Tape::plain(), false);
            total += losses.sums.to_device(Device::Cpu).double_value(&[0]);
            count += context - 1;
        }
    });
    Some((total, count as f64))
}

//! The fused output projection and cross-entropy (`causal_lm_head_loss`) against logits made
//! in full and `causal_lm_loss`: the same loss, per-row sums and gradients, however the rows
//! are chunked, with the head trained or frozen, in fp32 and bf16.

use runner::models::loss::{
    causal_lm_example_losses, causal_lm_head_loss, causal_lm_head_loss_in_chunks, causal_lm_loss,
    records_gradients, IGNORE,
};
use tch::{Kind, Tensor};

use super::{device, max_diff};

const VOCAB: i64 = 50;

/// Hidden states `[2, 7, 16]` and a head `[50, 16]`, both trained, in `kind` (the head's master
/// in fp32), and labels with ignored positions, also across the two rows' seam. Values come
/// from sines, not the generator that other tests seed.
fn inputs(kind: Kind) -> (Tensor, Tensor, Tensor) {
    let waves = |n: i64, shape: &[i64], f: f64| {
        (Tensor::arange(n, (Kind::Float, device())) * f)
            .sin()
            .view(shape)
    };
    let hidden = (waves(2 * 7 * 16, &[2, 7, 16], 0.37) * 2.0)
        .to_kind(kind)
        .set_requires_grad(true);
    let head = waves(VOCAB * 16, &[VOCAB, 16], 1.31).set_requires_grad(true);
    let labels = (Tensor::arange(14, (Kind::Int64, device())) * 17).remainder(VOCAB);
    let labels = labels.view([2, 7]);
    for (row, col) in [(0, 0), (0, 3), (1, 1), (1, 2)] {
        let _ = labels.get(row).get(col).fill_(IGNORE);
    }
    (hidden, head, labels)
}

/// The gradients of `xs` (undefined where none), zeroed after.
fn grads(xs: [&Tensor; 2]) -> [Tensor; 2] {
    xs.map(|x| {
        let g = x.grad();
        match g.defined() {
            true => {
                let copy = g.copy();
                let _ = g.detach().zero_();
                copy
            }
            false => g,
        }
    })
}

/// The loss and both gradients by full logits.
fn by_logits(hidden: &Tensor, head: &Tensor, labels: &Tensor) -> (Tensor, [Tensor; 2]) {
    let logits = hidden
        .linear::<Tensor>(&head.to_kind(hidden.kind()), None)
        .to_kind(Kind::Float);
    let loss = causal_lm_loss(&logits, labels);
    loss.backward();
    (loss.detach(), grads([hidden, head]))
}

#[test]
fn chunked_losses_and_gradients_are_those_of_full_logits() {
    let (hidden, head, labels) = inputs(Kind::Float);
    let (loss, [dh, dw]) = by_logits(&hidden, &head, &labels);
    let (sums, counts) =
        tch::no_grad(|| causal_lm_example_losses(&hidden.linear::<Tensor>(&head, None), &labels));
    // Position 0's label is never a target; the last position has none.
    assert_eq!(counts, Tensor::from_slice(&[5i64, 4]).to_device(device()));
    // One row at a time, chunks across the seam of the two sequences, all at once.
    for rows in [1, 3, 14, 100] {
        let fused = causal_lm_head_loss_in_chunks(&hidden, &head, &labels, rows);
        assert!(
            max_diff(&fused.mean.detach(), &loss) < 1e-6,
            "rows {rows}: loss"
        );
        assert!(max_diff(&fused.sums, &sums) < 1e-5, "rows {rows}: sums");
        assert_eq!(fused.counts, counts);
        assert!(
            !fused.sums.requires_grad(),
            "per-row sums are for curves only"
        );
        fused.mean.backward();
        let [fh, fw] = grads([&hidden, &head]);
        assert!(max_diff(&fh, &dh) < 1e-6, "rows {rows}: hidden gradient");
        assert!(max_diff(&fw, &dw) < 1e-6, "rows {rows}: head gradient");
    }
    // The gradient is real: a step along it lowers the loss.
    let stepped = tch::no_grad(|| &hidden - &dh * 0.5);
    let lower = causal_lm_head_loss(&stepped, &head.detach(), &labels).mean;
    assert!(lower.double_value(&[]) < loss.double_value(&[]));
}

#[test]
fn a_frozen_head_gets_no_gradient_and_the_hidden_states_theirs() {
    let (hidden, head, labels) = inputs(Kind::Float);
    let head = head.detach();
    let (loss, [dh, _]) = by_logits(&hidden, &head, &labels);
    let fused = causal_lm_head_loss_in_chunks(&hidden, &head, &labels, 4);
    fused.mean.backward();
    assert!(!head.grad().defined());
    assert!(max_diff(&fused.mean.detach(), &loss) < 1e-6);
    assert!(max_diff(&hidden.grad(), &dh) < 1e-6);
}

#[test]
fn under_no_grad_it_gives_the_evaluation_loss() {
    let (hidden, head, labels) = inputs(Kind::Float);
    let (loss, _) = by_logits(&hidden, &head, &labels);
    // Evaluation: parameters still require gradients, but nothing is recorded, which is what
    // decides whether gradients are computed.
    assert!(records_gradients());
    assert!(!tch::no_grad(records_gradients));
    let fused = tch::no_grad(|| causal_lm_head_loss_in_chunks(&hidden, &head, &labels, 4));
    assert!(!fused.mean.requires_grad());
    assert!(max_diff(&fused.mean, &loss) < 1e-6);
}

#[test]
fn bf16_hidden_states_give_the_bf16_logits_loss_and_gradients() {
    let (hidden, head, labels) = inputs(Kind::BFloat16);
    let (loss, [dh, dw]) = by_logits(&hidden, &head, &labels);
    let fused = causal_lm_head_loss_in_chunks(&hidden, &head, &labels, 3);
    assert_eq!(fused.mean.kind(), Kind::Float, "the loss is fp32");
    fused.mean.backward();
    let [fh, fw] = grads([&hidden, &head]);
    assert_eq!(fh.kind(), Kind::BFloat16);
    assert!(max_diff(&fused.mean.detach(), &loss) < 1e-4);
    // Gradients are of order 0.1; bf16 keeps 8 bits, and the head's sums chunk by chunk.
    assert!(max_diff(&fh, &dh) < 4e-3, "hidden: {}", max_diff(&fh, &dh));
    assert!(max_diff(&fw, &dw) < 4e-3, "head: {}", max_diff(&fw, &dw));
}

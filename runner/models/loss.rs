//! Token-level cross-entropy, always in fp32, ignoring label -100 as transformers does.

use tch::{Kind, Reduction, Tensor};

pub const IGNORE: i64 = -100;

/// Mean cross-entropy of `logits` `[..., V]` against `labels` `[...]` over the positions whose
/// label is not -100.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    let v = logits.size()[logits.dim() - 1];
    logits
        .to_kind(Kind::Float)
        .reshape([-1, v])
        .cross_entropy_loss::<Tensor>(&labels.reshape([-1]), None, Reduction::Mean, IGNORE, 0.0)
}

/// A causal LM's loss: position t predicts label t + 1 (labels are the inputs, with -100
/// where no loss is wanted; transformers shifts the same way).
pub fn causal_lm_loss(logits: &Tensor, labels: &Tensor) -> Tensor {
    let t = logits.size()[1];
    cross_entropy(&logits.narrow(1, 0, t - 1), &labels.narrow(1, 1, t - 1))
}

/// A causal LM's loss per example: the summed token losses `[B]` and the counted tokens `[B]`
/// (Σ sums / Σ counts is `causal_lm_loss`), for per-task and per-option losses.
pub fn causal_lm_example_losses(logits: &Tensor, labels: &Tensor) -> (Tensor, Tensor) {
    let (b, t) = (logits.size()[0], logits.size()[1]);
    let v = logits.size()[2];
    let targets = labels.narrow(1, 1, t - 1);
    let per_token = logits
        .narrow(1, 0, t - 1)
        .to_kind(Kind::Float)
        .reshape([-1, v])
        .cross_entropy_loss::<Tensor>(&targets.reshape([-1]), None, Reduction::None, IGNORE, 0.0)
        .view([b, t - 1]);
    let counts = targets.ne(IGNORE).sum_dim_intlist(1, false, Kind::Int64);
    (per_token.sum_dim_intlist(1, false, Kind::Float), counts)
}

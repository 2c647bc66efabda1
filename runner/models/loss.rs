//! Token-level cross-entropy, always in fp32, ignoring label -100 as transformers does.

use tch::{Kind, Reduction, Tensor};

use crate::plan::parts::LOGITS_PER_CHUNK;

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
/// where no loss is wanted). As transformers does, the labels are shifted, not the logits:
/// narrowing `[B, T, V]` logits to T − 1 positions would make reshaping them a copy.
pub fn causal_lm_loss(logits: &Tensor, labels: &Tensor) -> Tensor {
    cross_entropy(logits, &next_tokens(labels))
}

/// A causal LM's loss per example: the summed token losses `[B]` and the counted tokens `[B]`
/// (Σ sums / Σ counts is `causal_lm_loss`), for per-task and per-option losses.
pub fn causal_lm_example_losses(logits: &Tensor, labels: &Tensor) -> (Tensor, Tensor) {
    let (b, t, v) = logits.size3().expect("logits are [B, T, V]");
    let targets = next_tokens(labels);
    let per_token = logits
        .to_kind(Kind::Float)
        .reshape([-1, v])
        .cross_entropy_loss::<Tensor>(&targets.reshape([-1]), None, Reduction::None, IGNORE, 0.0)
        .view([b, t]);
    let counts = targets.ne(IGNORE).sum_dim_intlist(1, false, Kind::Int64);
    (per_token.sum_dim_intlist(1, false, Kind::Float), counts)
}

/// The label each position predicts: `labels` `[B, T]` moved one to the left, -100 at the end.
fn next_tokens(labels: &Tensor) -> Tensor {
    let (b, t) = labels.size2().expect("labels are [B, T]");
    let end = Tensor::full([b, 1], IGNORE, (labels.kind(), labels.device()));
    Tensor::cat(&[&labels.narrow(1, 1, t - 1), &end], 1)
}

/// A causal LM's token losses from the last hidden states, through the output projection.
pub struct TokenLosses {
    /// The mean over counted tokens, which trains: its gradient reaches the hidden states and
    /// the projection as if the logits had been made.
    pub mean: Tensor,
    /// Summed token losses `[B]` and counted tokens `[B]`, without gradients (per-task curves).
    pub sums: Tensor,
    pub counts: Tensor,
}

/// `causal_lm_loss(hidden · headᵀ, labels)` without ever holding `[B, T, V]` logits (fused
/// linear cross-entropy, as Liger-Kernel's and Apple's Cut Cross-Entropy): a chunk of rows at a
/// time, the logits are made, their loss taken and their gradient `softmax − one-hot` sent on
/// to the hidden states and (when it trains) the head at once, and the chunk is freed. At 1,024
/// tokens of a 32,000-word vocabulary that is 64 MiB instead of three 131 MiB tensors (logits,
/// log-probabilities, their gradient); at LongLoRA's 32,768 tokens, 64 MiB instead of 12 GiB.
/// The arithmetic is transformers': logits in the hidden states' kind, the loss in fp32, the
/// gradient cast back to that kind for the products.
pub fn causal_lm_head_loss(hidden: &Tensor, head: &Tensor, labels: &Tensor) -> TokenLosses {
    let rows = (LOGITS_PER_CHUNK / head.size()[0]).max(1);
    causal_lm_head_loss_in_chunks(hidden, head, labels, rows)
}

/// [`causal_lm_head_loss`] `rows` positions at a time.
pub fn causal_lm_head_loss_in_chunks(
    hidden: &Tensor,
    head: &Tensor,
    labels: &Tensor,
    rows: i64,
) -> TokenLosses {
    let (b, t, d) = hidden.size3().expect("hidden states are [B, T, d]");
    let kind = hidden.kind();
    let targets = next_tokens(labels);
    let counts = targets.ne(IGNORE).sum_dim_intlist(1, false, Kind::Int64);
    // On the device, not read back: no host synchronisation in the step.
    let total = counts.sum(Kind::Int64).clamp_min(1).to_kind(Kind::Float);
    // Gradients only where autograd records: under `no_grad` (evaluation) a trained head still
    // requires one, and nothing is to be computed for it.
    let recording = records_gradients();
    let (to_hidden, to_head) = (
        recording && hidden.requires_grad(),
        recording && head.requires_grad(),
    );
    let (per_token, hidden_grad, head_grad) = tch::no_grad(|| {
        let weight = head.to_kind(kind);
        let states = hidden.reshape([b * t, d]);
        let targets = targets.reshape([b * t, 1]);
        let mut losses = Vec::new();
        // Filled chunk by chunk in place: one [B·T, d] tensor, no list to concatenate.
        let hidden_grad = to_hidden.then(|| states.empty_like());
        let mut head_grad = to_head.then(|| weight.zeros_like().to_kind(Kind::Float));
        for start in (0..b * t).step_by(rows as usize) {
            let n = rows.min(b * t - start);
            let (h, y) = (states.narrow(0, start, n), targets.narrow(0, start, n));
            let ignored = y.eq(IGNORE);
            let y = y.clamp_min(0);
            let mut logits = h.linear::<Tensor>(&weight, None).to_kind(Kind::Float);
            let lse = logits.logsumexp([-1], true);
            let loss = (&lse - logits.gather(1, &y, false)).masked_fill(&ignored, 0.0);
            losses.push(loss);
            if !(to_hidden || to_head) {
                continue;
            }
            // ∂(mean loss)/∂logits: (softmax − one-hot) / counted tokens, 0 on ignored rows.
            let _ = logits.g_sub_(&lse).exp_();
            let _ = logits.scatter_add_(
                1,
                &y,
                &Tensor::full([n, 1], -1.0, (Kind::Float, h.device())),
            );
            let _ = logits.masked_fill_(&ignored, 0.0).g_div_(&total);
            let grad = logits.to_kind(kind);
            if let Some(out) = &hidden_grad {
                let _ = grad.mm_out(&out.narrow(0, start, n), &weight);
            }
            match head_grad.as_mut() {
                // fp32 adds the chunk's product in place; bf16 products are summed in fp32.
                Some(g) if kind == Kind::Float => {
                    let _ = g.addmm_(&grad.tr(), &h);
                }
                Some(g) => {
                    let _ = g.g_add_(&grad.tr().mm(&h).to_kind(Kind::Float));
                }
                None => {}
            }
        }
        let per_token = Tensor::cat(&losses, 0).view([b, t]);
        (per_token, hidden_grad.map(|g| g.view([b, t, d])), head_grad)
    });
    let sums = per_token.sum_dim_intlist(1, false, Kind::Float);
    // The gradients computed above enter autograd through terms worth 0 whose gradient they
    // are: ∂/∂x (Σ x·g − const) = g. In bf16 the factor arriving from above (1/accumulation)
    // is rounded to bf16 before it scales the hidden states' g (at most 0.4%, uniformly).
    let mean = [(hidden, hidden_grad), (head, head_grad)]
        .into_iter()
        .filter_map(|(x, g)| g.map(|g| (x * g).sum(Kind::Float)))
        .fold(sums.sum(Kind::Float) / &total, |mean, s| {
            mean + (&s - s.detach())
        });
    TokenLosses { mean, sums, counts }
}

/// Whether autograd records operations here (false under `no_grad`). libtorch's grad mode is
/// not exposed by tch, and a view keeps its base's `requires_grad` even under `no_grad`, so
/// this asks an operation that is not a view.
pub fn records_gradients() -> bool {
    (Tensor::from(0f32).set_requires_grad(true) * 1.0).requires_grad()
}

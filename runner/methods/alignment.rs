//! IAG's hidden-state and attention alignment (`--use_attn --use_hidden`, paper Eqs. 7–10),
//! as its code computes them (`model/losses.py`): each term is averaged over layer pairs
//! (teacher and student have the same depth), teacher tensors carry no gradient.
//!
//! - encoder attention: masked MSE between self-attention probabilities;
//! - decoder attention: cross-entropy between `softmax` of the teacher's and `log_softmax` of
//!   the student's self-attention *probabilities* (the code applies the softmax again);
//! - encoder and decoder states: `1 − cos` per real token (`cosine_embedding_loss`, target 1).
//!
//! FiD's teacher encodes each passage alone, so its encoder tensors are `[B·N, …]`: the
//! student's are repeated per passage and the student's mask applies to both, as in the code.
//! Two of the code's slips are not copied: its mask rows are ordered passage-major while the
//! tensors are question-major (they agree only for batch 1), and its decoder terms are masked
//! by the encoder's mask; here decoder positions are masked by the labels.

use tch::{Kind, Tensor};

use crate::models::t5::Trace;
use crate::plan::kinds::iag::Alignment;

/// Masked MSE of attention maps `[M, H, L, L]`: the sum over real (query, key) pairs of the
/// squared difference, over `H·Σ n²` (`att_mse_loss`).
pub fn attention_mse(student: &Tensor, teacher: &Tensor, mask: &Tensor) -> Tensor {
    let heads = student.size()[1] as f64;
    let m = mask.to_kind(Kind::Float);
    let pairs = m.unsqueeze(1).unsqueeze(3) * m.unsqueeze(1).unsqueeze(2);
    let squared = (student.to_kind(Kind::Float) - teacher.to_kind(Kind::Float)).square() * pairs;
    let count = m
        .sum_dim_intlist(1, false, Kind::Float)
        .square()
        .sum(Kind::Float)
        * heads;
    squared.sum(Kind::Float) / count
}

/// Cross-entropy of attention maps `[M, H, L, L]` (`att_ce_loss`):
/// `−Σ softmax(T)·log_softmax(S)` over real keys, summed over real queries, over `H·Σ n`.
pub fn attention_ce(student: &Tensor, teacher: &Tensor, mask: &Tensor) -> Tensor {
    let heads = student.size()[1] as f64;
    let m = mask.to_kind(Kind::Float);
    let p = teacher.to_kind(Kind::Float).softmax(-1, Kind::Float);
    let log_q = student.to_kind(Kind::Float).log_softmax(-1, Kind::Float);
    let keys = m.unsqueeze(1).unsqueeze(2);
    let per_query = (p * log_q * keys).sum_dim_intlist(-1, false, Kind::Float);
    -(per_query * m.unsqueeze(1)).sum(Kind::Float) / (m.sum(Kind::Float) * heads)
}

/// Mean over real tokens of `1 − cos(s, t)` for states `[M, L, d]` (`cos_loss`).
pub fn hidden_cosine(student: &Tensor, teacher: &Tensor, mask: &Tensor) -> Tensor {
    let cos = Tensor::cosine_similarity(
        &student.to_kind(Kind::Float),
        &teacher.to_kind(Kind::Float),
        -1,
        1e-8,
    );
    let m = mask.to_kind(Kind::Float);
    let distance: Tensor = cos.neg() + 1.0;
    (distance * &m).sum(Kind::Float) / m.sum(Kind::Float)
}

/// The mean of `term` over paired layers.
fn layer_mean(
    student: &[Tensor],
    teacher: &[Tensor],
    term: impl Fn(&Tensor, &Tensor) -> Tensor,
) -> Tensor {
    let terms: Vec<Tensor> = student
        .iter()
        .zip(teacher)
        .map(|(s, t)| term(s, &t.detach()))
        .collect();
    Tensor::stack(&terms, 0).mean(Kind::Float)
}

/// One side's encoder and decoder traces.
pub struct Traces {
    pub encoder: Trace,
    pub decoder: Trace,
}

/// The weighted alignment loss. `passages` is FiD's N: the student's encoder tensors `[B, …]`
/// are repeated to meet the teacher's `[B·N, …]`. `encoder_mask` `[B, L]` is the student's
/// input mask, `decoder_mask` `[B, T]` marks real target positions.
pub fn loss(
    student: &Traces,
    teacher: &Traces,
    passages: i64,
    encoder_mask: &Tensor,
    decoder_mask: &Tensor,
    weights: &Alignment,
) -> Tensor {
    let per_passage = |t: &Tensor| t.repeat_interleave_self_int(passages, 0, None);
    let tile = |ts: &[Tensor]| ts.iter().map(per_passage).collect::<Vec<_>>();
    let encoder_mask = per_passage(encoder_mask);
    let (se, te) = (&student.encoder, &teacher.encoder);
    let (sd, td) = (&student.decoder, &teacher.decoder);
    let encoder_attention = layer_mean(&tile(&se.attention), &te.attention, |s, t| {
        attention_mse(s, t, &encoder_mask)
    });
    let encoder_hidden = layer_mean(&tile(&se.hidden), &te.hidden, |s, t| {
        hidden_cosine(s, t, &encoder_mask)
    });
    let decoder_attention = layer_mean(&sd.attention, &td.attention, |s, t| {
        attention_ce(s, t, decoder_mask)
    });
    let decoder_hidden = layer_mean(&sd.hidden, &td.hidden, |s, t| {
        hidden_cosine(s, t, decoder_mask)
    });
    encoder_attention * weights.encoder_attention
        + decoder_attention * weights.decoder_attention
        + encoder_hidden * weights.encoder_hidden
        + decoder_hidden * weights.decoder_hidden
}

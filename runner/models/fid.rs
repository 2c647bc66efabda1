//! Fusion-in-Decoder (Izacard & Grave; facebookresearch/FiD): each of a question's N passages
//! is encoded on its own, as `question: … title: … context: …`, and the decoder's
//! cross-attention reads all N encodings at once, concatenated along the sequence.

use tch::Tensor;

use super::checkpoint::Tape;
use super::t5::{Trace, T5};

/// The text FiD encodes for one passage.
pub fn passage_text(question: &str, title: &str, context: &str) -> String {
    format!("question: {question} title: {title} context: {context}")
}

/// Encodes `ids` `[B, N, L]` (N passages per question) independently and joins them:
/// returns the encoder states `[B, N·L, d]` and their mask `[B, N·L]`.
pub fn encode<'a>(
    t5: &'a T5,
    ids: &Tensor,
    mask: &Tensor,
    tape: &Tape<'a>,
    train: bool,
) -> (Tensor, Tensor) {
    let (b, n, l) = ids.size3().expect("FiD input is [B, passages, length]");
    let flat_mask = mask.reshape([b * n, l]);
    let encoded = t5.encode(&ids.reshape([b * n, l]), &flat_mask, tape, train);
    let d = encoded.size()[2];
    (encoded.reshape([b, n * l, d]), mask.reshape([b, n * l]))
}

/// Teacher-forced logits `[B, T_dec, vocab]` of the FiD reader.
pub fn forward<'a>(
    t5: &'a T5,
    ids: &Tensor,
    mask: &Tensor,
    decoder_ids: &Tensor,
    tape: &Tape<'a>,
    train: bool,
) -> Tensor {
    let (encoded, joined_mask) = encode(t5, ids, mask, tape, train);
    t5.decode(decoder_ids, &encoded, &joined_mask, tape, train)
}

/// `forward` without a tape, also returning the encoder trace (`[B·N, …]`, passage by
/// passage) and the decoder trace (for IAG's alignment losses).
pub fn forward_traced(
    t5: &T5,
    ids: &Tensor,
    mask: &Tensor,
    decoder_ids: &Tensor,
    train: bool,
) -> (Tensor, Trace, Trace) {
    let (b, n, l) = ids.size3().expect("FiD input is [B, passages, length]");
    let (encoded, encoder) =
        t5.encode_traced(&ids.reshape([b * n, l]), &mask.reshape([b * n, l]), train);
    let d = encoded.size()[2];
    let joined = encoded.reshape([b, n * l, d]);
    let (logits, decoder) =
        t5.decode_traced(decoder_ids, &joined, &mask.reshape([b, n * l]), train);
    (logits, encoder, decoder)
}

//! Attention kernels shared by the models: masks, `scaled_dot_product_attention` (so CUDA picks
//! its fused kernels), and LongLoRA's shifted sparse attention (S²-Attn).

use tch::{Device, Kind, Tensor};

/// Which keys each query may see.
pub enum Mask {
    /// Every query sees every key (one new token against its cache).
    All,
    /// Query i sees keys 0..=i (training without padding: SDPA's `is_causal`, the fused path).
    Causal,
    /// An explicit boolean mask `[B or 1, 1, Q, K]`, true where attention is allowed.
    Allowed(Tensor),
}

/// The decoder mask for `q_len` new queries after `past` cached keys: causal, limited to the
/// last `window` keys when set (Mistral: query i sees keys j with i − window < j ≤ i), and
/// without padded keys (`key_padding` `[B, past + q_len]`, 1 for real tokens).
pub fn decoder_mask(
    q_len: i64,
    past: i64,
    window: Option<i64>,
    key_padding: Option<&Tensor>,
    device: Device,
) -> Mask {
    let padded = key_padding.is_some_and(|m| m.min().int64_value(&[]) == 0);
    let windowed = window.is_some_and(|w| past + q_len > w);
    if !padded && !windowed {
        return match (q_len, past) {
            (1, _) => Mask::All,
            (_, 0) => Mask::Causal,
            _ => Mask::Allowed(causal(q_len, past, None, device).view([1, 1, q_len, -1])),
        };
    }
    let mut allowed = causal(q_len, past, window, device).view([1, 1, q_len, -1]);
    if let Some(m) = key_padding.filter(|_| padded) {
        let keys = m.to_kind(Kind::Bool).view([m.size()[0], 1, 1, -1]);
        allowed = allowed.logical_and(&keys);
    }
    Mask::Allowed(keep_own_position(allowed, q_len, past, device))
}

/// `[q_len, past + q_len]`: true where key j ≤ query i (and within the window).
fn causal(q_len: i64, past: i64, window: Option<i64>, device: Device) -> Tensor {
    let i = Tensor::arange_start(past, past + q_len, (Kind::Int64, device)).view([-1, 1]);
    let j = Tensor::arange(past + q_len, (Kind::Int64, device)).view([1, -1]);
    let mut allowed = j.le_tensor(&i);
    if let Some(w) = window {
        allowed = allowed.logical_and(&j.gt_tensor(&(&i - w)));
    }
    allowed
}

/// A padded query may have no key left; letting every query see itself keeps its softmax
/// finite (its output is ignored by the loss), as transformers does for fully masked rows.
fn keep_own_position(allowed: Tensor, q_len: i64, past: i64, device: Device) -> Tensor {
    let own = Tensor::eye_m(q_len, past + q_len, (Kind::Bool, device))
        .roll([past], [1])
        .view([1, 1, q_len, -1]);
    allowed.logical_or(&own)
}

/// Softmax attention of `q` `[B, H, Q, d]` over `k`, `v` `[B, H, K, d]` where `mask` allows,
/// scores scaled by `scale`.
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Mask, scale: f64) -> Tensor {
    let sdpa = |m: Option<&Tensor>, causal: bool| {
        Tensor::scaled_dot_product_attention(q, k, v, m, 0.0, causal, scale, false)
    };
    match mask {
        Mask::All => sdpa(None, false),
        Mask::Causal => sdpa(None, true),
        Mask::Allowed(m) => sdpa(Some(m), false),
    }
}

/// `[B, H_kv, T, d]` → `[B, H_kv · n, T, d]`: each key/value head serves `n` query heads.
pub fn repeat_kv(x: &Tensor, n: i64) -> Tensor {
    if n == 1 {
        return x.shallow_clone();
    }
    x.repeat_interleave_self_int(n, 1, None)
}

/// Shifted sparse attention (LongLoRA, arXiv 2309.12307, §3.2): the sequence is cut into
/// `groups` groups and each attends causally within its group; the second half of the heads
/// first rolls q, k, v back by half a group, so its groups straddle the first half's and
/// information flows between groups; the output is rolled forward again.
/// `q`, `k`, `v` are `[B, H, T, d]` (key/value heads already repeated). When T does not split
/// into `groups` groups of at least 2 tokens, this is full causal attention: with one group
/// there is nothing to shift.
pub fn shifted_sparse(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    groups: i64,
    key_padding: Option<&Tensor>,
    scale: f64,
) -> Tensor {
    let (b, h, t, d) = q.size4().expect("q is [B, H, T, d]");
    let g = t / groups;
    if groups <= 1 || t % groups != 0 || g < 2 || h < 2 {
        let mask = decoder_mask(t, 0, None, key_padding, q.device());
        return attend(q, k, v, &mask, scale);
    }
    let half = h / 2;
    let shift = |x: &Tensor, by: i64, axis: i64| {
        let parts = x.split_with_sizes([half, h - half], 1);
        Tensor::cat(&[&parts[0], &parts[1].roll([by], [axis])], 1)
    };
    // [B, H, T, d] → [B·T/g, H, g, d]: one batch row per group.
    let grouped = |x: &Tensor| {
        shift(x, (-g).div_euclid(2), 2)
            .view([b, h, groups, g, d])
            .transpose(1, 2)
            .reshape([b * groups, h, g, d])
    };
    let mask = match key_padding.filter(|m| m.min().int64_value(&[]) == 0) {
        None => Mask::Causal,
        Some(m) => {
            // The padding moves with the shifted heads: [B, T] → [B, H, T] → [B·T/g, H, 1, g].
            let keys = shift(
                &m.to_kind(Kind::Bool)
                    .view([b, 1, t])
                    .expand([b, h, t], false),
                (-g).div_euclid(2),
                2,
            )
            .view([b, h, groups, 1, g])
            .transpose(1, 2)
            .reshape([b * groups, h, 1, g]);
            let causal = causal(g, 0, None, q.device()).view([1, 1, g, g]);
            Mask::Allowed(keep_own_position(
                causal.logical_and(&keys),
                g,
                0,
                q.device(),
            ))
        }
    };
    let out = attend(&grouped(q), &grouped(k), &grouped(v), &mask, scale);
    let out = out
        .view([b, groups, h, g, d])
        .transpose(1, 2)
        .reshape([b, h, t, d]);
    shift(&out, g / 2, 2)
}

/// Keys and values of the tokens seen so far, `[B, H_kv, T, d]`, for incremental decoding.
#[derive(Default)]
pub struct KvCache {
    kv: Option<(Tensor, Tensor)>,
}

impl KvCache {
    /// Tokens cached so far.
    pub fn len(&self) -> i64 {
        self.kv.as_ref().map_or(0, |(k, _)| k.size()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the new tokens' keys and values; returns all of them.
    pub fn append(&mut self, k: Tensor, v: Tensor) -> (Tensor, Tensor) {
        let (k, v) = match self.kv.take() {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(&[pk, k], 2), Tensor::cat(&[pv, v], 2)),
        };
        self.kv = Some((k.shallow_clone(), v.shallow_clone()));
        (k, v)
    }

    /// Keys and values computed once and reused at every step (T5's cross-attention).
    pub fn get_or_insert(&mut self, make: impl FnOnce() -> (Tensor, Tensor)) -> (Tensor, Tensor) {
        let (k, v) = self.kv.get_or_insert_with(make);
        (k.shallow_clone(), v.shallow_clone())
    }
}

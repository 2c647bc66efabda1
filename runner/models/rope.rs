//! Rotary position embeddings (Su et al.) with linear position interpolation (Chen et al.,
//! as LongLoRA uses it): dividing the inverse frequencies by `factor` is the same as dividing
//! every position by it, so a context `factor` times longer maps into the trained range.

use tch::{Device, Kind, Tensor};

pub struct Rotary {
    /// `1 / (theta^(2i/d) · factor)` for i < d/2, fp32.
    inv_freq: Tensor,
}

impl Rotary {
    pub fn new(head_dim: i64, theta: f64, factor: f64, device: Device) -> Rotary {
        let exponents = Tensor::arange_start_step(0, head_dim, 2, (Kind::Int64, device))
            .to_kind(Kind::Float)
            / head_dim as f64;
        let inv_freq = Tensor::from(theta)
            .to_device(device)
            .pow(&exponents)
            .reciprocal()
            / factor;
        Rotary { inv_freq }
    }

    /// cos and sin for `positions` `[B, T]`, as `[B, 1, T, head_dim]` in `kind`.
    pub fn cos_sin(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        // [B, T, 1] · [1, 1, d/2] → [B, T, d/2], then the two halves share frequencies.
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * self.inv_freq.view([1, 1, -1]);
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
        (emb.cos().to_kind(kind), emb.sin().to_kind(kind))
    }
}

/// Rotates `x` `[B, H, T, d]` by the position angles: `x·cos + rotate_half(x)·sin`.
pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let (x1, x2) = (x.narrow(3, 0, half), x.narrow(3, half, half));
    let rotated = Tensor::cat(&[&x2.neg(), &x1], 3);
    x * cos + rotated * sin
}

//! How image features reach the decoder: LLaVA's MLP projector (`Linear → GELU → Linear …`,
//! one token per patch), or Qwen-VL's resampler (`visual.py`: `Resampler`, then the tower's
//! `ln_post` and `proj`): learned queries cross-attend once to the patch states, so every image
//! becomes `num_queries` tokens. Queries carry fixed 2-D sin-cos positions of their grid, and
//! keys the same table resized (bicubic) to the patch grid.

use anyhow::Result;
use tch::Tensor;

use super::attention::{attend, Mask};
use super::layers::{LayerNorm, Linear};
use super::store::ParamStore;
use super::vit::resized_positions;
use crate::plan::arch::Connector as Spec;

pub enum Connector {
    Mlp(Vec<Linear>),
    Resampler(Box<Resampler>),
}

pub struct Resampler {
    query: Tensor,
    pos_embed: Tensor,
    kv_proj: Linear,
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj: Linear,
    ln_q: LayerNorm,
    ln_kv: LayerNorm,
    ln_post: LayerNorm,
    proj: Tensor,
    heads: i64,
}

/// Qwen-VL's `norm_layer`.
const EPS: f64 = 1e-6;

impl Connector {
    pub fn new(store: &ParamStore, spec: &Spec) -> Result<Connector> {
        Ok(match spec {
            Spec::Mlp { layers } => Connector::Mlp(
                (0..*layers)
                    .map(|i| Linear::load(store, &format!("connector.{}", 2 * i)))
                    .collect::<Result<_>>()?,
            ),
            Spec::Resampler { num_heads, .. } => {
                let norm = |n: &str| LayerNorm::load(store, &format!("connector.{n}"), EPS);
                Connector::Resampler(Box::new(Resampler {
                    query: store.get("connector.query")?,
                    pos_embed: store.get("connector.pos_embed")?,
                    kv_proj: Linear::load(store, "connector.kv_proj")?,
                    in_proj_weight: store.get("connector.attn.in_proj_weight")?,
                    in_proj_bias: store.get("connector.attn.in_proj_bias")?,
                    out_proj: Linear::load(store, "connector.attn.out_proj")?,
                    ln_q: norm("ln_q")?,
                    ln_kv: norm("ln_kv")?,
                    ln_post: norm("ln_post")?,
                    proj: store.get("connector.proj")?,
                    heads: *num_heads as i64,
                }))
            }
        })
    }

    /// Visual tokens `[B, n, decoder width]` from patch states `[B, patches, vision width]`.
    pub fn forward(&self, patches: &Tensor, train: bool) -> Tensor {
        match self {
            Connector::Mlp(layers) => {
                let mut x = patches.shallow_clone();
                for (i, layer) in layers.iter().enumerate() {
                    if i > 0 {
                        x = x.gelu("none");
                    }
                    x = layer.forward(&x, train);
                }
                x
            }
            Connector::Resampler(r) => r.forward(patches, train),
        }
    }
}

/// The 2-D sin-cos table `[grid², dim]` of Qwen-VL's `get_2d_sincos_pos_embed`: the first half
/// of each row encodes the column, the second the row, each as `[sin(p·ω), cos(p·ω)]` with
/// `ω_i = 10000^(-i / (dim/4))`.
pub fn sincos_2d(dim: i64, grid: i64) -> Tensor {
    let quarter = dim / 4;
    let omega: Vec<f64> = (0..quarter)
        .map(|i| 1.0 / 10000f64.powf(i as f64 / quarter as f64))
        .collect();
    let mut rows = Vec::with_capacity((grid * grid * dim) as usize);
    for r in 0..grid {
        for c in 0..grid {
            for p in [c as f64, r as f64] {
                rows.extend(omega.iter().map(|w| (p * w).sin() as f32));
                rows.extend(omega.iter().map(|w| (p * w).cos() as f32));
            }
        }
    }
    Tensor::from_slice(&rows).view([grid * grid, dim])
}

impl Resampler {
    fn forward(&self, patches: &Tensor, train: bool) -> Tensor {
        let kind = patches.kind();
        let (b, p, _) = patches.size3().expect("[B, patches, width]");
        let (n, h) = self.query.size2().expect("[queries, width]");
        let pos = self.pos_embed.to_kind(kind);
        let key_pos = resized_positions(&pos, p);
        let x = self.ln_kv.forward(&self.kv_proj.forward(patches, train));
        let q = (self.ln_q.forward(&self.query.to_kind(kind)) + &pos).expand([b, n, h], false);
        let k = &x + key_pos;
        // nn.MultiheadAttention: one packed input projection, heads, softmax(q·kᵀ/√d)·v.
        let w = self.in_proj_weight.to_kind(kind).chunk(3, 0);
        let bias = self.in_proj_bias.to_kind(kind).chunk(3, 0);
        let d = h / self.heads;
        let heads = |t: Tensor, len: i64| t.view([b, len, self.heads, d]).transpose(1, 2);
        let q = heads(q.linear(&w[0], Some(&bias[0])), n);
        let k = heads(k.linear(&w[1], Some(&bias[1])), p);
        let v = heads(x.linear(&w[2], Some(&bias[2])), p);
        let out = attend(&q, &k, &v, &Mask::All, (d as f64).powf(-0.5))
            .transpose(1, 2)
            .reshape([b, n, h]);
        let out = self.out_proj.forward(&out, train);
        self.ln_post.forward(&out).matmul(&self.proj.to_kind(kind))
    }
}

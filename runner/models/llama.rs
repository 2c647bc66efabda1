//! The Llama family (Llama, Mistral, Qwen2) as `*ForCausalLM`: pre-norm decoder layers of
//! grouped-query self-attention with rotary positions and a SwiGLU MLP, RMS norms.
//! Qwen2 adds q/k/v biases, Mistral a sliding attention window. Qwen-7B's own layout (the
//! language model of Qwen-VL) is the same computation under other names, with q, k and v
//! fused into one projection (`attn.c_attn`) and the MLP's gate named `w2`, its up
//! projection `w1`. Training may use LongLoRA's shifted sparse attention; evaluation and
//! generation always attend fully.

use std::rc::Rc;

use anyhow::Result;
use tch::{Kind, Tensor};

use super::attention::{attend, decoder_mask, repeat_kv, shifted_sparse, KvCache, Mask};
use super::checkpoint::Tape;
use super::layers::{embed, Linear, RmsNorm};
use super::loss::{self, TokenLosses};
use super::rope::{self, Rotary};
use super::store::ParamStore;
use crate::plan::arch::{DecoderArch, Family};

/// transformers' default `initializer_range`.
pub const INIT_STD: f64 = 0.02;

/// Choices the plan makes on top of the checkpoint's architecture.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecoderOptions {
    /// Linear RoPE position interpolation (1 = none).
    pub rope_factor: f64,
    /// S²-Attn groups while training (LongLoRA: 4, i.e. group = length / 4); None = full attention.
    pub shifted_sparse_groups: Option<i64>,
}

impl Default for DecoderOptions {
    fn default() -> Self {
        DecoderOptions {
            rope_factor: 1.0,
            shifted_sparse_groups: None,
        }
    }
}

pub struct Llama {
    pub arch: DecoderArch,
    pub options: DecoderOptions,
    kind: Kind,
    embed_tokens: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Tensor,
    rotary: Rotary,
}

/// The q, k and v projections: three modules, or Qwen-7B's one (`c_attn`, rows q | k | v).
enum Qkv {
    Separate(Box<[Linear; 3]>),
    Fused(Linear),
}

/// Where a layout keeps its weights.
struct Names {
    embed: &'static str,
    layer: &'static str,
    input_norm: &'static str,
    post_norm: &'static str,
    o: &'static str,
    gate: &'static str,
    up: &'static str,
    down: &'static str,
    norm: &'static str,
}

const HF_NAMES: Names = Names {
    embed: "model.embed_tokens.weight",
    layer: "model.layers",
    input_norm: "input_layernorm",
    post_norm: "post_attention_layernorm",
    o: "self_attn.o_proj",
    gate: "mlp.gate_proj",
    up: "mlp.up_proj",
    down: "mlp.down_proj",
    norm: "model.norm",
};

/// Qwen-7B's `QWenBlock`: `c_proj(w1(x) · silu(w2(x)))`, so w2 is the gate.
const QWEN_NAMES: Names = Names {
    embed: "transformer.wte.weight",
    layer: "transformer.h",
    input_norm: "ln_1",
    post_norm: "ln_2",
    o: "attn.c_proj",
    gate: "mlp.w2",
    up: "mlp.w1",
    down: "mlp.c_proj",
    norm: "transformer.ln_f",
};

struct Layer {
    /// Every weight the layer reads (ZeRO-3 gathers them around its segment).
    weights: Vec<Tensor>,
    input_norm: RmsNorm,
    qkv: Qkv,
    o: Linear,
    post_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

/// What every layer of one forward pass shares: rotary angles and how to attend.
struct Context {
    cos: Tensor,
    sin: Tensor,
    attention: How,
}

enum How {
    Full(Mask),
    ShiftedSparse {
        groups: i64,
        key_padding: Option<Tensor>,
    },
}

/// Cached keys and values of every layer.
pub struct DecoderCache {
    layers: Vec<KvCache>,
}

impl DecoderCache {
    pub fn len(&self) -> i64 {
        self.layers.first().map_or(0, KvCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Llama {
    pub fn new(
        store: &ParamStore,
        arch: &DecoderArch,
        options: DecoderOptions,
        kind: Kind,
    ) -> Result<Llama> {
        let names = match arch.family {
            Family::Qwen => &QWEN_NAMES,
            _ => &HF_NAMES,
        };
        let heads = arch.num_attention_heads as i64;
        let head_dim = arch.hidden_size as i64 / heads;
        let eps = arch.rms_norm_eps;
        let layers = (0..arch.num_hidden_layers)
            .map(|i| {
                let (layer, weights) = store.block(|| -> Result<Layer> {
                    let p = format!("{}.{i}", names.layer);
                    let l = |name: &str| Linear::load(store, &format!("{p}.{name}"));
                    let qkv = match arch.family {
                        Family::Qwen => Qkv::Fused(l("attn.c_attn")?),
                        _ => Qkv::Separate(Box::new([
                            l("self_attn.q_proj")?,
                            l("self_attn.k_proj")?,
                            l("self_attn.v_proj")?,
                        ])),
                    };
                    Ok(Layer {
                        weights: Vec::new(),
                        input_norm: RmsNorm::load(
                            store,
                            &format!("{p}.{}", names.input_norm),
                            eps,
                        )?,
                        qkv,
                        o: l(names.o)?,
                        post_norm: RmsNorm::load(store, &format!("{p}.{}", names.post_norm), eps)?,
                        gate: l(names.gate)?,
                        up: l(names.up)?,
                        down: l(names.down)?,
                        heads,
                        kv_heads: arch.kv_heads() as i64,
                        head_dim,
                    })
                });
                Ok(Layer { weights, ..layer? })
            })
            .collect::<Result<_>>()?;
        let embed_tokens = store.get(names.embed)?;
        let lm_head = match arch.tie_word_embeddings {
            true => embed_tokens.shallow_clone(),
            false => store.get("lm_head.weight")?,
        };
        Ok(Llama {
            arch: arch.clone(),
            options,
            kind,
            rotary: Rotary::new(head_dim, arch.rope_theta, options.rope_factor, store.device),
            embed_tokens,
            layers,
            norm: RmsNorm::load(store, names.norm, eps)?,
            lm_head,
        })
    }

    /// Logits `[B, T, vocab]` (fp32) of `ids` `[B, T]`; `mask` is 1 for real tokens.
    pub fn forward<'a>(
        &'a self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        tape: &Tape<'a>,
        train: bool,
    ) -> Tensor {
        self.forward_embeds(&self.embed(ids), mask, tape, train)
    }

    /// The input embeddings `[B, T, d]` of `ids`, in the compute kind.
    pub fn embed(&self, ids: &Tensor) -> Tensor {
        embed(&self.embed_tokens, ids, self.kind)
    }

    /// `forward` from input embeddings `[B, T, d]` (a vision-language model's, with image
    /// features in place of image tokens).
    pub fn forward_embeds<'a>(
        &'a self,
        embeds: &Tensor,
        mask: Option<&Tensor>,
        tape: &Tape<'a>,
        train: bool,
    ) -> Tensor {
        self.logits(&self.hidden_states(embeds, mask, tape, train))
    }

    /// The loss of input embeddings `[B, T, d]` against `labels` `[B, T]` (the inputs, -100
    /// where no loss is wanted), from the hidden states without `[B, T, vocab]` logits
    /// ([`loss::causal_lm_head_loss`]): training's, and evaluation's under `no_grad`.
    pub fn causal_lm_loss<'a>(
        &'a self,
        embeds: &Tensor,
        mask: Option<&Tensor>,
        labels: &Tensor,
        tape: &Tape<'a>,
        train: bool,
    ) -> TokenLosses {
        let hidden = self.hidden_states(embeds, mask, tape, train);
        loss::causal_lm_head_loss(&hidden, &self.lm_head, labels)
    }

    /// The last layer's output, normalised: what the output projection reads, `[B, T, d]`.
    fn hidden_states<'a>(
        &'a self,
        embeds: &Tensor,
        mask: Option<&Tensor>,
        tape: &Tape<'a>,
        train: bool,
    ) -> Tensor {
        let (b, t, _) = embeds.size3().expect("embeddings are [B, T, d]");
        let attention = match self.options.shifted_sparse_groups {
            Some(groups) if train => How::ShiftedSparse {
                groups,
                key_padding: mask.map(Tensor::shallow_clone),
            },
            _ => How::Full(decoder_mask(t, 0, self.window(), mask, embeds.device())),
        };
        let context = Rc::new(self.context((b, t, embeds.device()), mask, 0, attention, false));
        let mut x = tape.boundary(embeds);
        for layer in &self.layers {
            let context = Rc::clone(&context);
            x = tape.segment(&layer.weights, &[&x], move |xs| {
                layer.forward(&xs[0], &context, train, None)
            });
        }
        self.norm.forward(&x)
    }

    /// Logits of the new tokens `ids` `[B, T]` after the cached ones (no gradients).
    /// `mask` `[B, cached + T]` covers cached and new tokens (left padding of prompts).
    pub fn forward_cached(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut DecoderCache,
    ) -> Tensor {
        self.forward_cached_embeds(&self.embed(ids), mask, cache)
    }

    /// `forward_cached` from input embeddings `[B, T, d]`.
    pub fn forward_cached_embeds(
        &self,
        embeds: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut DecoderCache,
    ) -> Tensor {
        let (b, t, _) = embeds.size3().expect("embeddings are [B, T, d]");
        let past = cache.len();
        let device = embeds.device();
        let attention = How::Full(decoder_mask(t, past, self.window(), mask, device));
        let context = self.context((b, t, device), mask, past, attention, true);
        let mut x = embeds.shallow_clone();
        for (layer, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.forward(&x, &context, false, Some(kv));
        }
        self.logits(&self.norm.forward(&x))
    }

    pub fn device(&self) -> tch::Device {
        self.embed_tokens.device()
    }

    pub fn new_cache(&self) -> DecoderCache {
        DecoderCache {
            layers: self.layers.iter().map(|_| KvCache::default()).collect(),
        }
    }

    fn window(&self) -> Option<i64> {
        self.arch.sliding_window.map(|w| w as i64)
    }

    /// Rotary angles for the new tokens. `count_real`: positions count real tokens only, so a
    /// left-padded prompt starts at 0, as transformers' `generate` does; its forward pass
    /// (and so training) numbers positions 0, 1, … whatever the padding.
    fn context(
        &self,
        (b, t, device): (i64, i64, tch::Device),
        mask: Option<&Tensor>,
        past: i64,
        attention: How,
        count_real: bool,
    ) -> Context {
        let positions = match mask.filter(|_| count_real) {
            Some(m) => (m.cumsum(1, Kind::Int64) - 1)
                .clamp_min(0)
                .narrow(1, past, t),
            None => Tensor::arange_start(past, past + t, (Kind::Int64, device))
                .view([1, t])
                .expand([b, t], false),
        };
        let (cos, sin) = self.rotary.cos_sin(&positions, self.kind);
        Context {
            cos,
            sin,
            attention,
        }
    }

    /// fp32 logits of normalised hidden states.
    fn logits(&self, hidden: &Tensor) -> Tensor {
        hidden
            .linear::<Tensor>(&self.lm_head.to_kind(hidden.kind()), None)
            .to_kind(Kind::Float)
    }
}

impl Layer {
    /// `x + Attn(norm x)`, then `+ MLP(norm x)`.
    fn forward(
        &self,
        x: &Tensor,
        context: &Context,
        train: bool,
        cache: Option<&mut KvCache>,
    ) -> Tensor {
        let (b, t, _) = x.size3().expect("[B, T, d]");
        let heads = |y: Tensor, n: i64| y.view([b, t, n, self.head_dim]).transpose(1, 2);
        let h = self.input_norm.forward(x);
        // [B, T, d] → [B, H, T, head_dim], rotated.
        let (q, k, v) = match &self.qkv {
            Qkv::Separate(qkv) => {
                let [q, k, v] = qkv.as_ref();
                (
                    q.forward(&h, train),
                    k.forward(&h, train),
                    v.forward(&h, train),
                )
            }
            Qkv::Fused(c_attn) => {
                let (q_width, kv_width) =
                    (self.heads * self.head_dim, self.kv_heads * self.head_dim);
                let parts = c_attn
                    .forward(&h, train)
                    .split_with_sizes([q_width, kv_width, kv_width], -1);
                let [q, k, v]: [Tensor; 3] = parts.try_into().expect("three parts");
                (q, k, v)
            }
        };
        let q = heads(q, self.heads);
        let k = heads(k, self.kv_heads);
        let v = heads(v, self.kv_heads);
        let q = rope::apply(&q, &context.cos, &context.sin);
        let k = rope::apply(&k, &context.cos, &context.sin);
        let (k, v) = match cache {
            Some(c) => c.append(k, v),
            None => (k, v),
        };
        let n_rep = self.heads / self.kv_heads;
        let (k, v) = (repeat_kv(&k, n_rep), repeat_kv(&v, n_rep));
        let scale = (self.head_dim as f64).powf(-0.5);
        let out = match &context.attention {
            How::Full(mask) => attend(&q, &k, &v, mask, scale),
            How::ShiftedSparse {
                groups,
                key_padding,
            } => shifted_sparse(&q, &k, &v, *groups, key_padding.as_ref(), scale),
        };
        let out = out
            .transpose(1, 2)
            .reshape([b, t, self.heads * self.head_dim]);
        let x = x + self.o.forward(&out, train);
        let h = self.post_norm.forward(&x);
        let mlp = self.gate.forward(&h, train).silu() * self.up.forward(&h, train);
        x + self.down.forward(&mlp, train)
    }
}

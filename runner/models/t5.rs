//! T5 (Raffel et al.) as `T5ForConditionalGeneration`: pre-norm encoder and decoder stacks of
//! self-attention (+ cross-attention in the decoder) and a feed-forward block, RMS norms,
//! relative position buckets shared by all layers of a stack, no attention scaling.
//! v1.0 uses a ReLU feed-forward and ties the output head to the embedding (rescaling the
//! decoder output by d_model^-½); v1.1 uses gated GELU and an untied head.

use anyhow::Result;
use tch::{Kind, Tensor};

use super::attention::KvCache;
use super::checkpoint::Tape;
use super::layers::{embed, Linear, RmsNorm};
use super::store::ParamStore;
use crate::plan::arch::{FeedForward as FeedForwardKind, T5Arch};
use crate::plan::inventory::Param;

/// An additive mask value that drives a softmax weight to exactly 0 without overflowing.
const MASKED: f64 = -1e9;

pub struct T5 {
    pub arch: T5Arch,
    /// Activation kind.
    kind: Kind,
    shared: Tensor,
    encoder: Stack,
    decoder: Stack,
    /// The output head: `shared` itself when tied.
    lm_head: Tensor,
}

/// What transformers returns with `output_hidden_states` and `output_attentions` for one stack:
/// the states entering each block plus the stack's final (normed) output, and each block's
/// self-attention probabilities `[B, heads, T, T]` (after dropout, as transformers returns
/// them).
#[derive(Default)]
pub struct Trace {
    pub hidden: Vec<Tensor>,
    pub attention: Vec<Tensor>,
}

struct Stack {
    blocks: Vec<Block>,
    final_norm: RmsNorm,
    /// `[buckets, heads]`, owned by the stack's first self-attention and used by every layer.
    relative_bias: Tensor,
    is_decoder: bool,
    max_distance: i64,
    dropout: f64,
}

struct Block {
    /// Every weight the block reads (ZeRO-3 gathers them around its segment).
    weights: Vec<Tensor>,
    self_norm: RmsNorm,
    self_attn: Attention,
    /// Decoder blocks only.
    cross: Option<(RmsNorm, Attention)>,
    ff_norm: RmsNorm,
    ff: FeedForward,
    dropout: f64,
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: i64,
    d_kv: i64,
    dropout: f64,
}

/// v1.0: `wo(relu(wi x))`; v1.1: `wo(gelu(wi_0 x) · wi_1 x)` (GELU's tanh form, `gelu_new`).
struct FeedForward {
    /// `wi` (v1.0) or `wi_1` (v1.1).
    wi: Linear,
    /// `wi_0`, the gate of v1.1.
    gate: Option<Linear>,
    wo: Linear,
    dropout: f64,
}

impl FeedForward {
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = match &self.gate {
            None => self.wi.forward(x, train).relu(),
            Some(gate) => gate.forward(x, train).gelu("tanh") * self.wi.forward(x, train),
        };
        self.wo.forward(&h.dropout(self.dropout, train), train)
    }
}

/// The initial standard deviations transformers' `T5PreTrainedModel._init_weights` uses.
pub fn init_std(arch: &T5Arch, p: &Param) -> f64 {
    let (d, kv, ff) = (arch.d_model as f64, arch.d_kv as f64, arch.d_ff as f64);
    let heads = arch.num_heads as f64;
    let module = p.name.trim_end_matches(".weight");
    match module.rsplit('.').next().unwrap_or("") {
        "q" => (d * kv).powf(-0.5),
        "k" | "v" | "relative_attention_bias" | "wi" | "wi_0" | "wi_1" => d.powf(-0.5),
        "o" => (heads * kv).powf(-0.5),
        "wo" => ff.powf(-0.5),
        _ => 1.0,
    }
}

impl T5 {
    pub fn new(store: &ParamStore, arch: &T5Arch, kind: Kind) -> Result<T5> {
        let shared = store.get("shared.weight")?;
        let lm_head = match arch.tie_word_embeddings {
            true => shared.shallow_clone(),
            false => store.get("lm_head.weight")?,
        };
        Ok(T5 {
            arch: arch.clone(),
            kind,
            encoder: Stack::load(store, arch, false)?,
            decoder: Stack::load(store, arch, true)?,
            shared,
            lm_head,
        })
    }

    /// Encoder states `[B, T, d_model]` of `ids` `[B, T]`; `mask` is 1 for real tokens.
    pub fn encode<'a>(
        &'a self,
        ids: &Tensor,
        mask: &Tensor,
        tape: &Tape<'a>,
        train: bool,
    ) -> Tensor {
        let (x, bias) = self.encoder_inputs(ids, mask, train);
        self.encoder.run(x, &bias, None, tape, train)
    }

    /// `encode`, also returning every layer's states and attention (no checkpointing).
    pub fn encode_traced(&self, ids: &Tensor, mask: &Tensor, train: bool) -> (Tensor, Trace) {
        let (x, bias) = self.encoder_inputs(ids, mask, train);
        self.encoder.run_traced(x, &bias, None, train)
    }

    fn encoder_inputs(&self, ids: &Tensor, mask: &Tensor, train: bool) -> (Tensor, Tensor) {
        let x = embed(&self.shared, ids, self.kind).dropout(self.encoder.dropout, train);
        let t = ids.size()[1];
        let bias = self.encoder.position_bias(t, t, 0, self.kind) + padding_bias(mask, self.kind);
        (x, bias)
    }

    /// Logits `[B, T_dec, vocab]` (fp32) of the decoder reading `encoded` `[B, S, d]`.
    pub fn decode<'a>(
        &'a self,
        decoder_ids: &Tensor,
        encoded: &Tensor,
        encoder_mask: &Tensor,
        tape: &Tape<'a>,
        train: bool,
    ) -> Tensor {
        let (x, bias) = self.decoder_inputs(decoder_ids, train);
        let cross = (
            tape.boundary(encoded),
            padding_bias(encoder_mask, self.kind),
        );
        let y = self.decoder.run(x, &bias, Some(&cross), tape, train);
        self.head(&y)
    }

    /// `decode`, also returning every layer's states and self-attention (no checkpointing).
    pub fn decode_traced(
        &self,
        decoder_ids: &Tensor,
        encoded: &Tensor,
        encoder_mask: &Tensor,
        train: bool,
    ) -> (Tensor, Trace) {
        let (x, bias) = self.decoder_inputs(decoder_ids, train);
        let cross = (encoded, &padding_bias(encoder_mask, self.kind));
        let (y, trace) = self.decoder.run_traced(x, &bias, Some(cross), train);
        (self.head(&y), trace)
    }

    /// Embedded decoder input and its causal self-attention bias.
    fn decoder_inputs(&self, decoder_ids: &Tensor, train: bool) -> (Tensor, Tensor) {
        let x = embed(&self.shared, decoder_ids, self.kind).dropout(self.decoder.dropout, train);
        let t = decoder_ids.size()[1];
        let causal = Tensor::ones([t, t], (Kind::Bool, x.device())).tril(0);
        let bias = self.decoder.position_bias(t, t, 0, self.kind)
            + Tensor::zeros([t, t], (self.kind, x.device()))
                .masked_fill(&causal.logical_not(), MASKED);
        (x, bias)
    }

    /// Logits for `decoder_ids` given encoder input `ids`: one teacher-forced pass.
    pub fn forward<'a>(
        &'a self,
        ids: &Tensor,
        mask: &Tensor,
        decoder_ids: &Tensor,
        tape: &Tape<'a>,
        train: bool,
    ) -> Tensor {
        let encoded = self.encode(ids, mask, tape, train);
        self.decode(decoder_ids, &encoded, mask, tape, train)
    }

    /// Logits `[B, T_new, vocab]` of the new decoder tokens, reading and extending `cache`.
    pub fn decode_cached(
        &self,
        decoder_ids: &Tensor,
        encoded: &Tensor,
        encoder_mask: &Tensor,
        cache: &mut T5Cache,
    ) -> Tensor {
        let x = embed(&self.shared, decoder_ids, self.kind);
        let (t, past) = (decoder_ids.size()[1], cache.len());
        let i = Tensor::arange_start(past, past + t, (Kind::Int64, x.device())).view([-1, 1]);
        let j = Tensor::arange(past + t, (Kind::Int64, x.device())).view([1, -1]);
        let bias = self.decoder.position_bias(t, past + t, past, self.kind)
            + Tensor::zeros([t, past + t], (self.kind, x.device()))
                .masked_fill(&j.gt_tensor(&i), MASKED);
        let cross_bias = padding_bias(encoder_mask, self.kind);
        let mut x = x;
        for (block, layer_cache) in self.decoder.blocks.iter().zip(cache.layers.iter_mut()) {
            x = block.forward(
                &x,
                &bias,
                Some((encoded, &cross_bias)),
                false,
                Some(layer_cache),
                None,
            );
        }
        self.head(&self.decoder.final_norm.forward(&x))
    }

    fn head(&self, y: &Tensor) -> Tensor {
        let y = match self.arch.tie_word_embeddings {
            // The tied head sees the output rescaled, as in Mesh TensorFlow.
            true => y * (self.arch.d_model as f64).powf(-0.5),
            false => y.shallow_clone(),
        };
        y.linear::<Tensor>(&self.lm_head.to_kind(y.kind()), None)
            .to_kind(Kind::Float)
    }

    pub fn new_cache(&self) -> T5Cache {
        T5Cache {
            layers: (0..self.decoder.blocks.len())
                .map(|_| LayerCache::default())
                .collect(),
        }
    }
}

/// The decoder's cached self-attention keys/values and cross-attention keys/values, per layer.
pub struct T5Cache {
    layers: Vec<LayerCache>,
}

impl T5Cache {
    pub fn len(&self) -> i64 {
        self.layers.first().map_or(0, |l| l.self_kv.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Default)]
struct LayerCache {
    self_kv: KvCache,
    cross_kv: KvCache,
}

/// The decoder input for teacher forcing: labels shifted right behind the start token (0),
/// ignored positions (-100) replaced by padding (0).
pub fn shift_right(labels: &Tensor) -> Tensor {
    let start = labels.zeros_like().narrow(1, 0, 1);
    let body = labels.narrow(1, 0, labels.size()[1] - 1);
    Tensor::cat(&[start, body], 1).clamp_min(0)
}

/// `[B, 1, 1, S]`: 0 for real keys, a large negative number for padding.
fn padding_bias(mask: &Tensor, kind: Kind) -> Tensor {
    let b = mask.size()[0];
    Tensor::zeros(mask.size(), (kind, mask.device()))
        .masked_fill(&mask.eq(0), MASKED)
        .view([b, 1, 1, -1])
}

impl Stack {
    fn load(store: &ParamStore, arch: &T5Arch, is_decoder: bool) -> Result<Stack> {
        let (name, layers) = match is_decoder {
            false => ("encoder", arch.num_layers),
            true => ("decoder", arch.decoder_layers()),
        };
        let eps = arch.layer_norm_epsilon;
        let blocks = (0..layers)
            .map(|i| {
                let (block, weights) = store.block(|| {
                    Block::load(store, arch, &format!("{name}.block.{i}.layer"), is_decoder)
                });
                Ok(Block { weights, ..block? })
            })
            .collect::<Result<_>>()?;
        Ok(Stack {
            blocks,
            final_norm: RmsNorm::load(store, &format!("{name}.final_layer_norm"), eps)?,
            relative_bias: store.get(&format!(
                "{name}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
            ))?,
            is_decoder,
            max_distance: arch.relative_attention_max_distance as i64,
            dropout: arch.dropout_rate,
        })
    }

    /// Runs the blocks (each a checkpoint segment) and the final norm and dropout.
    fn run<'a>(
        &'a self,
        x: Tensor,
        self_bias: &Tensor,
        cross: Option<&(Tensor, Tensor)>,
        tape: &Tape<'a>,
        train: bool,
    ) -> Tensor {
        let mut x = tape.boundary(&x);
        let bias = tape.boundary(self_bias);
        for block in &self.blocks {
            x = match cross {
                None => tape.segment(&block.weights, &[&x, &bias], move |xs| {
                    block.forward(&xs[0], &xs[1], None, train, None, None)
                }),
                Some((encoded, cross_bias)) => tape.segment(
                    &block.weights,
                    &[&x, &bias, encoded, cross_bias],
                    move |xs| {
                        block.forward(&xs[0], &xs[1], Some((&xs[2], &xs[3])), train, None, None)
                    },
                ),
            };
        }
        self.final_norm.forward(&x).dropout(self.dropout, train)
    }

    /// `run` without a tape, recording what enters each block, the output and each
    /// self-attention's probabilities.
    fn run_traced(
        &self,
        x: Tensor,
        self_bias: &Tensor,
        cross: Option<(&Tensor, &Tensor)>,
        train: bool,
    ) -> (Tensor, Trace) {
        let mut trace = Trace::default();
        let mut x = x;
        for block in &self.blocks {
            trace.hidden.push(x.shallow_clone());
            x = block.forward(
                &x,
                self_bias,
                cross,
                train,
                None,
                Some(&mut trace.attention),
            );
        }
        let y = self.final_norm.forward(&x).dropout(self.dropout, train);
        trace.hidden.push(y.shallow_clone());
        (y, trace)
    }

    /// `[1, heads, Q, K]`: the learned bias of each query–key offset's bucket; queries start at
    /// position `offset` (cached decoding).
    fn position_bias(&self, q_len: i64, k_len: i64, offset: i64, kind: Kind) -> Tensor {
        let device = self.relative_bias.device();
        let context =
            Tensor::arange_start(offset, offset + q_len, (Kind::Int64, device)).view([-1, 1]);
        let memory = Tensor::arange(k_len, (Kind::Int64, device)).view([1, -1]);
        let (buckets, heads) = self.relative_bias.size2().expect("[buckets, heads]");
        let bucket = relative_position_bucket(
            &(memory - context),
            !self.is_decoder,
            buckets,
            self.max_distance,
        );
        embed(&self.relative_bias, &bucket, kind)
            .permute([2, 0, 1])
            .view([1, heads, q_len, k_len])
    }
}

/// T5's bucketing of relative positions (key − query): exact buckets for small offsets,
/// logarithmic ones up to `max_distance`, one bucket beyond; bidirectional stacks give
/// half the buckets to each sign.
pub fn relative_position_bucket(
    relative: &Tensor,
    bidirectional: bool,
    num_buckets: i64,
    max_distance: i64,
) -> Tensor {
    let mut n = num_buckets;
    let mut buckets = relative.zeros_like();
    let distance = if bidirectional {
        n /= 2;
        buckets += relative.gt(0).to_kind(Kind::Int64) * n;
        relative.abs()
    } else {
        -relative.clamp_max(0)
    };
    let max_exact = n / 2;
    let is_small = distance.lt(max_exact);
    let large = ((distance.to_kind(Kind::Float) / max_exact as f64).log()
        / (max_distance as f64 / max_exact as f64).ln()
        * (n - max_exact) as f64)
        .to_kind(Kind::Int64)
        + max_exact;
    let large = large.clamp_max(n - 1);
    buckets + distance.where_self(&is_small, &large)
}

impl Block {
    fn load(store: &ParamStore, arch: &T5Arch, prefix: &str, is_decoder: bool) -> Result<Block> {
        let eps = arch.layer_norm_epsilon;
        let cross = match is_decoder {
            true => Some((
                RmsNorm::load(store, &format!("{prefix}.1.layer_norm"), eps)?,
                Attention::load(store, arch, &format!("{prefix}.1.EncDecAttention"))?,
            )),
            false => None,
        };
        let ff = if is_decoder { 2 } else { 1 };
        let dense = format!("{prefix}.{ff}.DenseReluDense");
        let (wi, gate) = match arch.feed_forward_proj {
            FeedForwardKind::Relu => (Linear::load(store, &format!("{dense}.wi"))?, None),
            FeedForwardKind::GatedGelu => (
                Linear::load(store, &format!("{dense}.wi_1"))?,
                Some(Linear::load(store, &format!("{dense}.wi_0"))?),
            ),
        };
        Ok(Block {
            weights: Vec::new(),
            self_norm: RmsNorm::load(store, &format!("{prefix}.0.layer_norm"), eps)?,
            self_attn: Attention::load(store, arch, &format!("{prefix}.0.SelfAttention"))?,
            cross,
            ff_norm: RmsNorm::load(store, &format!("{prefix}.{ff}.layer_norm"), eps)?,
            ff: FeedForward {
                wi,
                gate,
                wo: Linear::load(store, &format!("{dense}.wo"))?,
                dropout: arch.dropout_rate,
            },
            dropout: arch.dropout_rate,
        })
    }

    /// One block: `x + SelfAttn(norm x)`, `+ CrossAttn(norm x, encoded)`, `+ FF(norm x)`;
    /// `record` receives the self-attention probabilities.
    fn forward(
        &self,
        x: &Tensor,
        self_bias: &Tensor,
        cross: Option<(&Tensor, &Tensor)>,
        train: bool,
        cache: Option<&mut LayerCache>,
        record: Option<&mut Vec<Tensor>>,
    ) -> Tensor {
        let h = self.self_norm.forward(x);
        let (k, v) = self.self_attn.keys_values(&h, train);
        let (mut cross_cache, (k, v)) = match cache {
            Some(c) => {
                let kv = c.self_kv.append(k, v);
                (Some(&mut c.cross_kv), kv)
            }
            None => (None, (k, v)),
        };
        let a = self.self_attn.attend(&h, &k, &v, self_bias, train, record);
        let x = x + a.dropout(self.dropout, train);
        let x = match (&self.cross, cross) {
            (Some((norm, attn)), Some((encoded, bias))) => {
                let h = norm.forward(&x);
                let (k, v) = match cross_cache.take() {
                    Some(c) => c.get_or_insert(|| attn.keys_values(encoded, train)),
                    None => attn.keys_values(encoded, train),
                };
                let a = attn.attend(&h, &k, &v, bias, train, None);
                x + a.dropout(self.dropout, train)
            }
            _ => x,
        };
        let y = self.ff.forward(&self.ff_norm.forward(&x), train);
        x + y.dropout(self.dropout, train)
    }
}

impl Attention {
    fn load(store: &ParamStore, arch: &T5Arch, prefix: &str) -> Result<Attention> {
        let l = |p: &str| Linear::load(store, &format!("{prefix}.{p}"));
        Ok(Attention {
            q: l("q")?,
            k: l("k")?,
            v: l("v")?,
            o: l("o")?,
            heads: arch.num_heads as i64,
            d_kv: arch.d_kv as i64,
            dropout: arch.dropout_rate,
        })
    }

    /// `[B, T, d]` → `[B, heads, T, d_kv]`.
    fn heads(&self, x: &Tensor) -> Tensor {
        let (b, t, _) = x.size3().expect("[B, T, d]");
        x.view([b, t, self.heads, self.d_kv]).transpose(1, 2)
    }

    fn keys_values(&self, source: &Tensor, train: bool) -> (Tensor, Tensor) {
        (
            self.heads(&self.k.forward(source, train)),
            self.heads(&self.v.forward(source, train)),
        )
    }

    /// Attention of `x`'s queries over `k`, `v`, unscaled (T5 folds the scale into its init),
    /// with the additive `bias`; `record` receives the probabilities.
    fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: &Tensor,
        train: bool,
        record: Option<&mut Vec<Tensor>>,
    ) -> Tensor {
        let q = self.heads(&self.q.forward(x, train));
        let (b, h, t, d) = q.size4().expect("[B, H, T, d]");
        let bias = bias.to_kind(q.kind());
        let out = if (train && self.dropout > 0.0) || record.is_some() {
            // Written out, as transformers' eager T5: SDPA picks its kernel (and so how it
            // draws the dropout mask) by grad mode, and a recomputed segment must draw the
            // mask its forward pass drew. SDPA does not return the probabilities either.
            let scores = q.matmul(&k.transpose(-2, -1)) + bias;
            let weights = scores
                .softmax(-1, Kind::Float)
                .to_kind(q.kind())
                .dropout(self.dropout, train);
            if let Some(r) = record {
                r.push(weights.shallow_clone());
            }
            weights.matmul(v)
        } else {
            Tensor::scaled_dot_product_attention(&q, k, v, Some(&bias), 0.0, false, 1.0, false)
        };
        self.o
            .forward(&out.transpose(1, 2).reshape([b, t, h * d]), train)
    }
}

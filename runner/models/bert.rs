//! A BERT-family sentence encoder (transformers' `BertModel`, as sentence-transformers' MiniLM
//! models are), for CoE's exemplar retrieval: word, position and token-type embeddings, a
//! norm, post-LN layers of self-attention and a GELU MLP, then mean pooling over real tokens.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use super::adapters::whitening::mean_pool;
use super::attention::{attend, Mask};
use super::layers::{embed, LayerNorm, Linear};
use super::store::ParamStore;
use crate::files::read_json;
use crate::plan::inventory::{Group, Param};

pub struct Bert {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
    layers: Vec<Layer>,
    heads: i64,
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// The weights `BertModel` saves (without its pooler), by name.
fn params(config: &Value, path: &Path) -> Result<(Vec<Param>, usize, i64, f64)> {
    let uint = |key: &str| {
        config.get(key).and_then(Value::as_u64).with_context(|| {
            format!(
                "{}: key `{key}` is missing or not an integer",
                path.display()
            )
        })
    };
    if config.get("model_type").and_then(Value::as_str) != Some("bert") {
        bail!("{}: not a BERT model (model_type bert)\n  hint: runner's sentence encoder is BERT-family (e.g. all-MiniLM-L6-v2)", path.display());
    }
    let (h, ff, layers) = (
        uint("hidden_size")?,
        uint("intermediate_size")?,
        uint("num_hidden_layers")?,
    );
    let mut p = vec![
        Param::new(
            "embeddings.word_embeddings.weight".into(),
            &[uint("vocab_size")?, h],
            Group::Embeddings,
        ),
        Param::new(
            "embeddings.position_embeddings.weight".into(),
            &[uint("max_position_embeddings")?, h],
            Group::Embeddings,
        ),
        Param::new(
            "embeddings.token_type_embeddings.weight".into(),
            &[uint("type_vocab_size")?, h],
            Group::Embeddings,
        ),
        Param::new("embeddings.LayerNorm.weight".into(), &[h], Group::Norms),
        Param::new("embeddings.LayerNorm.bias".into(), &[h], Group::Norms),
    ];
    for i in 0..layers {
        let l = format!("encoder.layer.{i}");
        let mut linear = |name: String, input: u64, output: u64| {
            p.push(Param::new(
                format!("{name}.weight"),
                &[output, input],
                Group::Attention,
            ));
            p.push(Param::new(
                format!("{name}.bias"),
                &[output],
                Group::Attention,
            ));
        };
        for x in ["query", "key", "value"] {
            linear(format!("{l}.attention.self.{x}"), h, h);
        }
        linear(format!("{l}.attention.output.dense"), h, h);
        linear(format!("{l}.intermediate.dense"), h, ff);
        linear(format!("{l}.output.dense"), ff, h);
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            p.push(Param::new(format!("{l}.{norm}.weight"), &[h], Group::Norms));
            p.push(Param::new(format!("{l}.{norm}.bias"), &[h], Group::Norms));
        }
    }
    let eps = config
        .get("layer_norm_eps")
        .and_then(Value::as_f64)
        .unwrap_or(1e-12);
    Ok((p, layers as usize, uint("num_attention_heads")? as i64, eps))
}

impl Bert {
    /// An HF BERT folder (config.json + safetensors), frozen, in fp32.
    pub fn load(dir: &Path, device: Device) -> Result<Bert> {
        let path = dir.join("config.json");
        let config = read_json(&path, "a sentence-encoder folder has config.json")?;
        let (params, layers, heads, eps) = params(&config, &path)?;
        let aliases: Vec<(String, String)> = params
            .iter()
            .map(|p| (format!("bert.{}", p.name), p.name.clone()))
            .collect();
        let mut store = ParamStore::zeros(&params, device, Kind::Float);
        let ignored = [
            "embeddings.position_ids",
            "pooler.dense.weight",
            "pooler.dense.bias",
        ];
        store.load_hf(dir, &aliases, &ignored)?;
        store.set_trainable(|_, _| false);
        let norm = |n: &str| LayerNorm::load(&store, n, eps);
        let layers = (0..layers)
            .map(|i| {
                let l = format!("encoder.layer.{i}");
                let linear = |n: &str| Linear::load(&store, &format!("{l}.{n}"));
                Ok(Layer {
                    q: linear("attention.self.query")?,
                    k: linear("attention.self.key")?,
                    v: linear("attention.self.value")?,
                    attention_out: linear("attention.output.dense")?,
                    attention_norm: norm(&format!("{l}.attention.output.LayerNorm"))?,
                    intermediate: linear("intermediate.dense")?,
                    output: linear("output.dense")?,
                    output_norm: norm(&format!("{l}.output.LayerNorm"))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Bert {
            word: store.get("embeddings.word_embeddings.weight")?,
            position: store.get("embeddings.position_embeddings.weight")?,
            token_type: store.get("embeddings.token_type_embeddings.weight")?,
            norm: norm("embeddings.LayerNorm")?,
            layers,
            heads,
        })
    }

    /// The last layer's states `[B, T, d]` of `ids` `[B, T]` (one segment); `mask` is 1 for
    /// real tokens.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Tensor {
        let (b, t) = ids.size2().expect("ids are [B, T]");
        let positions = Tensor::arange(t, (Kind::Int64, ids.device())).view([1, t]);
        let x = embed(&self.word, ids, Kind::Float)
            + embed(&self.position, &positions, Kind::Float)
            + embed(&self.token_type, &ids.zeros_like(), Kind::Float);
        let mut x = self.norm.forward(&x);
        let allowed = Mask::Allowed(mask.ne(0).view([b, 1, 1, t]));
        for layer in &self.layers {
            x = layer.forward(&x, &allowed, self.heads);
        }
        x
    }

    pub fn device(&self) -> Device {
        self.word.device()
    }

    /// Mean-pooled sentence embeddings `[B, d]` (sentence-transformers' default pooling).
    pub fn embed_sentences(&self, ids: &Tensor, mask: &Tensor) -> Tensor {
        tch::no_grad(|| mean_pool(&self.forward(ids, mask), mask))
    }
}

impl Layer {
    fn forward(&self, x: &Tensor, mask: &Mask, heads: i64) -> Tensor {
        let (b, t, d) = x.size3().expect("[B, T, d]");
        let dh = d / heads;
        let split = |y: Tensor| y.view([b, t, heads, dh]).transpose(1, 2);
        let (q, k, v) = (
            split(self.q.forward(x, false)),
            split(self.k.forward(x, false)),
            split(self.v.forward(x, false)),
        );
        let a = attend(&q, &k, &v, mask, (dh as f64).powf(-0.5))
            .transpose(1, 2)
            .reshape([b, t, d]);
        let x = self
            .attention_norm
            .forward(&(self.attention_out.forward(&a, false) + x));
        let h = self.intermediate.forward(&x, false).gelu("none");
        self.output_norm
            .forward(&(self.output.forward(&h, false) + x))
    }
}

//! The CLIP vision tower (Radford et al.; transformers' `CLIPVisionModel`): non-overlapping
//! patches embedded by a strided convolution, a class token and learned positions, a
//! pre-norm, pre-LN transformer layers (quick-GELU MLP), and a post-norm on the class token.
//! A vision-language model reads the patch states of the last layer.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use super::attention::{attend, Mask};
use super::hf_folder::read_json;
use super::layers::{LayerNorm, Linear};
use super::store::ParamStore;
use crate::plan::arch::VisionArch;
use crate::plan::inventory;

pub struct Vit {
    pub arch: VisionArch,
    kind: Kind,
    class_embedding: Tensor,
    patch_embedding: Tensor,
    position_embedding: Tensor,
    pre_norm: LayerNorm,
    layers: Vec<Layer>,
    post_norm: LayerNorm,
}

struct Layer {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: i64,
}

/// CLIP's activation: `x·σ(1.702·x)`.
fn quick_gelu(x: &Tensor) -> Tensor {
    x * (x * 1.702).sigmoid()
}

impl Vit {
    pub fn new(store: &ParamStore, arch: &VisionArch, kind: Kind) -> Result<Vit> {
        let eps = arch.layer_norm_eps;
        let e = "vision_model.embeddings";
        let layers = (0..arch.num_hidden_layers)
            .map(|i| {
                let l = format!("vision_model.encoder.layers.{i}");
                let linear = |name: &str| Linear::load(store, &format!("{l}.{name}"));
                Ok(Layer {
                    norm1: LayerNorm::load(store, &format!("{l}.layer_norm1"), eps)?,
                    q: linear("self_attn.q_proj")?,
                    k: linear("self_attn.k_proj")?,
                    v: linear("self_attn.v_proj")?,
                    out: linear("self_attn.out_proj")?,
                    norm2: LayerNorm::load(store, &format!("{l}.layer_norm2"), eps)?,
                    fc1: linear("mlp.fc1")?,
                    fc2: linear("mlp.fc2")?,
                    heads: arch.num_attention_heads as i64,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Vit {
            arch: arch.clone(),
            kind,
            class_embedding: store.get(&format!("{e}.class_embedding"))?,
            patch_embedding: store.get(&format!("{e}.patch_embedding.weight"))?,
            position_embedding: store.get(&format!("{e}.position_embedding.weight"))?,
            pre_norm: LayerNorm::load(store, "vision_model.pre_layrnorm", eps)?,
            layers,
            post_norm: LayerNorm::load(store, "vision_model.post_layernorm", eps)?,
        })
    }

    /// The last layer's states `[B, 1 + patches, d]` (class token first) of `pixels`
    /// `[B, channels, image_size, image_size]`, normalised as the processor does.
    pub fn forward(&self, pixels: &Tensor, train: bool) -> Tensor {
        let mut x = self.embed(pixels);
        for layer in &self.layers {
            x = layer.forward(&x, train);
        }
        x
    }

    /// transformers' `pooler_output`: the class token's final state after the post-norm.
    pub fn pooled(&self, states: &Tensor) -> Tensor {
        self.post_norm.forward(&states.select(1, 0))
    }

    fn embed(&self, pixels: &Tensor) -> Tensor {
        let kind = self.kind;
        let p = self.arch.patch_size as i64;
        let patches = pixels
            .to_kind(kind)
            .conv2d::<Tensor>(
                &self.patch_embedding.to_kind(kind),
                None,
                [p, p],
                [0, 0],
                [1, 1],
                1,
            )
            .flatten(2, -1)
            .transpose(1, 2);
        let (b, _, d) = patches.size3().expect("[B, patches, d]");
        let class = self
            .class_embedding
            .to_kind(kind)
            .view([1, 1, d])
            .expand([b, 1, d], false);
        let x =
            Tensor::cat(&[class, patches], 1) + self.position_embedding.to_kind(kind).unsqueeze(0);
        self.pre_norm.forward(&x)
    }
}

impl Layer {
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let (b, t, d) = x.size3().expect("[B, T, d]");
        let head_dim = d / self.heads;
        let h = self.norm1.forward(x);
        let heads = |y: Tensor| y.view([b, t, self.heads, head_dim]).transpose(1, 2);
        let (q, k, v) = (
            heads(self.q.forward(&h, train)),
            heads(self.k.forward(&h, train)),
            heads(self.v.forward(&h, train)),
        );
        let a = attend(&q, &k, &v, &Mask::All, (head_dim as f64).powf(-0.5));
        let x = x + self
            .out
            .forward(&a.transpose(1, 2).reshape([b, t, d]), train);
        let h = self.fc2.forward(
            &quick_gelu(&self.fc1.forward(&self.norm2.forward(&x), train)),
            train,
        );
        x + h
    }
}

/// The vision settings of an HF CLIP `config.json` (a `CLIPVisionModel`'s, or a whole CLIP's
/// `vision_config`).
pub fn arch_of(config: &Value, path: &Path) -> Result<VisionArch> {
    let v = match config.get("model_type").and_then(Value::as_str) {
        Some("clip") => config.get("vision_config").unwrap_or(config),
        _ => config,
    };
    if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
        if act != "quick_gelu" {
            bail!(
                "{}: hidden_act `{act}`: runner's CLIP tower uses quick_gelu",
                path.display()
            );
        }
    }
    let uint = |key: &str| {
        v.get(key).and_then(Value::as_u64).with_context(|| {
            format!(
                "{}: key `{key}` is missing or not an integer",
                path.display()
            )
        })
    };
    Ok(VisionArch {
        hidden_size: uint("hidden_size")?,
        intermediate_size: uint("intermediate_size")?,
        num_hidden_layers: uint("num_hidden_layers")?,
        num_attention_heads: uint("num_attention_heads")?,
        image_size: uint("image_size")?,
        patch_size: uint("patch_size")?,
        num_channels: v.get("num_channels").and_then(Value::as_u64).unwrap_or(3),
        layer_norm_eps: v
            .get("layer_norm_eps")
            .and_then(Value::as_f64)
            .unwrap_or(1e-5),
    })
}

/// A `CLIPVisionModel` folder (config.json + safetensors): its architecture and weights.
/// transformers 4 saves the names under `vision_model.`, transformers 5 without it; both load.
pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<(VisionArch, ParamStore)> {
    let config = read_json(
        &dir.join("config.json"),
        "an HF CLIP vision folder has config.json",
    )?;
    let arch = arch_of(&config, &dir.join("config.json"))?;
    let params = inventory::vision(&arch);
    let aliases: Vec<(String, String)> = params
        .iter()
        .filter_map(|p| {
            let short = p.name.strip_prefix("vision_model.")?;
            Some((short.to_string(), p.name.clone()))
        })
        .collect();
    let mut store = ParamStore::zeros(&params, device, kind);
    store.load_hf(
        dir,
        &aliases,
        &[
            "vision_model.embeddings.position_ids",
            "embeddings.position_ids",
        ],
    )?;
    Ok((arch, store))
}

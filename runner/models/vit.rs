//! The ViT vision towers: CLIP's (Radford et al.; transformers' `CLIPVisionModel`) and
//! Qwen-VL's (`visual.py`, OpenCLIP's ViT-bigG layout). Both embed non-overlapping patches by a
//! strided convolution, add learned positions, pre-norm, and run pre-LN transformer layers.
//! CLIP adds a class token (with a post-norm for its pooled output) and uses quick-GELU; Qwen-VL
//! has no class token, resizes a 16×16 position table (bicubic) to the patch grid, fuses q, k
//! and v per head in one projection, and uses exact GELU. A vision-language model reads the
//! patch states of the last layer.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use super::attention::{attend, Mask};
use super::layers::{LayerNorm, Linear};
use super::store::ParamStore;
use crate::files::read_json;
use crate::plan::arch::{VisionArch, VisionFamily};
use crate::plan::inventory;

pub struct Vit {
    pub arch: VisionArch,
    kind: Kind,
    /// CLIP's class token and the post-norm of its pooled output; None in Qwen-VL's tower.
    class: Option<(Tensor, LayerNorm)>,
    patch_embedding: Tensor,
    position_embedding: Tensor,
    pre_norm: LayerNorm,
    layers: Vec<Layer>,
}

struct Layer {
    norm1: LayerNorm,
    qkv: Qkv,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    activation: fn(&Tensor) -> Tensor,
    heads: i64,
}

/// CLIP's three projections, or Qwen-VL's one whose output holds, per head, that head's q, k
/// and v (`VisualAttention`: `view(…, heads, 3·head_dim).split(head_dim)`).
enum Qkv {
    Separate(Box<[Linear; 3]>),
    PerHead(Linear),
}

/// CLIP's activation: `x·σ(1.702·x)`.
fn quick_gelu(x: &Tensor) -> Tensor {
    x * (x * 1.702).sigmoid()
}

/// Qwen-VL's `nn.GELU()`: the exact, erf-based GELU.
fn gelu(x: &Tensor) -> Tensor {
    x.gelu("none")
}

impl Vit {
    pub fn new(store: &ParamStore, arch: &VisionArch, kind: Kind) -> Result<Vit> {
        match arch.family {
            VisionFamily::Clip => Vit::clip(store, arch, kind),
            VisionFamily::QwenVl => Vit::qwen_vl(store, arch, kind),
        }
    }

    fn clip(store: &ParamStore, arch: &VisionArch, kind: Kind) -> Result<Vit> {
        let eps = arch.layer_norm_eps;
        let e = "vision_model.embeddings";
        let layers = (0..arch.num_hidden_layers)
            .map(|i| {
                let l = format!("vision_model.encoder.layers.{i}");
                let linear = |name: &str| Linear::load(store, &format!("{l}.{name}"));
                Ok(Layer {
                    norm1: LayerNorm::load(store, &format!("{l}.layer_norm1"), eps)?,
                    qkv: Qkv::Separate(Box::new([
                        linear("self_attn.q_proj")?,
                        linear("self_attn.k_proj")?,
                        linear("self_attn.v_proj")?,
                    ])),
                    out: linear("self_attn.out_proj")?,
                    norm2: LayerNorm::load(store, &format!("{l}.layer_norm2"), eps)?,
                    fc1: linear("mlp.fc1")?,
                    fc2: linear("mlp.fc2")?,
                    activation: quick_gelu,
                    heads: arch.num_attention_heads as i64,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Vit {
            arch: arch.clone(),
            kind,
            class: Some((
                store.get(&format!("{e}.class_embedding"))?,
                LayerNorm::load(store, "vision_model.post_layernorm", eps)?,
            )),
            patch_embedding: store.get(&format!("{e}.patch_embedding.weight"))?,
            position_embedding: store.get(&format!("{e}.position_embedding.weight"))?,
            pre_norm: LayerNorm::load(store, "vision_model.pre_layrnorm", eps)?,
            layers,
        })
    }

    fn qwen_vl(store: &ParamStore, arch: &VisionArch, kind: Kind) -> Result<Vit> {
        let eps = arch.layer_norm_eps;
        let layers = (0..arch.num_hidden_layers)
            .map(|i| {
                let l = format!("transformer.resblocks.{i}");
                let linear = |name: &str| Linear::load(store, &format!("{l}.{name}"));
                Ok(Layer {
                    norm1: LayerNorm::load(store, &format!("{l}.ln_1"), eps)?,
                    qkv: Qkv::PerHead(linear("attn.in_proj")?),
                    out: linear("attn.out_proj")?,
                    norm2: LayerNorm::load(store, &format!("{l}.ln_2"), eps)?,
                    fc1: linear("mlp.c_fc")?,
                    fc2: linear("mlp.c_proj")?,
                    activation: gelu,
                    heads: arch.num_attention_heads as i64,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Vit {
            arch: arch.clone(),
            kind,
            class: None,
            patch_embedding: store.get("conv1.weight")?,
            position_embedding: store.get("positional_embedding")?,
            pre_norm: LayerNorm::load(store, "ln_pre", eps)?,
            layers,
        })
    }

    /// The last layer's states `[B, positions, d]` of `pixels` `[B, channels, image_size,
    /// image_size]`, normalised as the processor does: CLIP's class token first, then the
    /// patches.
    pub fn forward(&self, pixels: &Tensor, train: bool) -> Tensor {
        let mut x = self.embed(pixels);
        for layer in &self.layers {
            x = layer.forward(&x, train);
        }
        x
    }

    /// The patch states of `forward`'s output (without CLIP's class token).
    pub fn patches(&self, states: &Tensor) -> Tensor {
        match self.class {
            Some(_) => states.narrow(1, 1, states.size()[1] - 1),
            None => states.shallow_clone(),
        }
    }

    /// transformers' `pooler_output`: the class token's final state after the post-norm
    /// (CLIP only).
    pub fn pooled(&self, states: &Tensor) -> Option<Tensor> {
        let (_, post_norm) = self.class.as_ref()?;
        Some(post_norm.forward(&states.select(1, 0)))
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
        let (b, n, d) = patches.size3().expect("[B, patches, d]");
        let x = match &self.class {
            Some((class, _)) => {
                let class = class.to_kind(kind).view([1, 1, d]).expand([b, 1, d], false);
                Tensor::cat(&[class, patches], 1)
                    + self.position_embedding.to_kind(kind).unsqueeze(0)
            }
            None => patches + resized_positions(&self.position_embedding, n).to_kind(kind),
        };
        self.pre_norm.forward(&x)
    }
}

/// Qwen-VL's `get_abs_pos`: a square table of positions `[s², d]` resized (bicubic, corners
/// not aligned, in fp32) to `n` = t² positions; the table itself when s = t.
pub fn resized_positions(table: &Tensor, n: i64) -> Tensor {
    let (rows, d) = table.size2().expect("[positions, d]");
    let source = (rows as f64).sqrt() as i64;
    let target = (n as f64).sqrt() as i64;
    if source == target {
        return table.shallow_clone();
    }
    table
        .to_kind(Kind::Float)
        .reshape([1, source, source, d])
        .permute([0, 3, 1, 2])
        .upsample_bicubic2d([target, target], false, None, None)
        .permute([0, 2, 3, 1])
        .flatten(0, 2)
        .to_kind(table.kind())
}

impl Layer {
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let (b, t, d) = x.size3().expect("[B, T, d]");
        let head_dim = d / self.heads;
        let h = self.norm1.forward(x);
        let heads = |y: Tensor| y.view([b, t, self.heads, head_dim]).transpose(1, 2);
        let (q, k, v) = match &self.qkv {
            Qkv::Separate(qkv) => (
                heads(qkv[0].forward(&h, train)),
                heads(qkv[1].forward(&h, train)),
                heads(qkv[2].forward(&h, train)),
            ),
            Qkv::PerHead(in_proj) => {
                let parts = in_proj
                    .forward(&h, train)
                    .view([b, t, self.heads, 3 * head_dim])
                    .transpose(1, 2)
                    .split(head_dim, -1);
                (
                    parts[0].shallow_clone(),
                    parts[1].shallow_clone(),
                    parts[2].shallow_clone(),
                )
            }
        };
        let a = attend(&q, &k, &v, &Mask::All, (head_dim as f64).powf(-0.5));
        let x = x + self
            .out
            .forward(&a.transpose(1, 2).reshape([b, t, d]), train);
        let h = self.fc2.forward(
            &(self.activation)(&self.fc1.forward(&self.norm2.forward(&x), train)),
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
        family: VisionFamily::Clip,
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

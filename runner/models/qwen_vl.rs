//! A whole Qwen-VL(-Chat) folder: `config.json` (`model_type: qwen`, the vision tower under
//! `visual`) and one checkpoint that holds the three parts `coe_multitask` builds separately:
//! the tower (`transformer.visual.*`), the resampler with its `ln_post` and `proj`
//! (`transformer.visual.attn_pool.*`, `…ln_post`, `…proj`, as `connector.*`), and the Qwen-7B
//! decoder (everything else). Qwen's `use_dynamic_ntk` and `use_logn_attn` change nothing up to
//! `seq_length` (2,048) tokens, so they need no counterpart here.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use super::hf_folder::{bool_or, float_or, read_tensors, uint};
use super::store::ParamStore;
use crate::files::read_json;
use crate::plan::arch::{Connector, DecoderArch, Family, VisionArch, VisionFamily};
use crate::plan::inventory;

/// The three parts' architectures.
#[derive(Clone, Debug, PartialEq)]
pub struct Parts {
    pub vision: VisionArch,
    pub connector: Connector,
    pub decoder: DecoderArch,
}

/// The parts' architectures as `dir/config.json` describes them.
pub fn parts_of(dir: &Path) -> Result<Parts> {
    let path = dir.join("config.json");
    let v = read_json(&path, "a Qwen-VL folder has config.json")?;
    let at = |e: anyhow::Error| anyhow!("{}: {e}", path.display());
    if v["model_type"].as_str() != Some("qwen") || !v["visual"].is_object() {
        bail!(
            "{}: expected Qwen-VL's config (model_type \"qwen\" with a `visual` section), found model_type {}\n  hint: model.path is for Qwen-VL(-Chat) folders; build other models from model.vision, model.connector and model.decoder",
            path.display(),
            v["model_type"]
        );
    }
    let hidden = uint(&v, "hidden_size").map_err(at)?;
    let heads = uint(&v, "num_attention_heads").map_err(at)?;
    if float_or(&v, "rotary_pct", 1.0).map_err(at)? != 1.0 {
        bail!(
            "{}: key `rotary_pct`: runner rotates every dimension of a head (1.0)",
            path.display()
        );
    }
    if v["kv_channels"]
        .as_u64()
        .is_some_and(|k| k * heads != hidden)
    {
        bail!(
            "{}: key `kv_channels`: runner needs kv_channels × num_attention_heads = hidden_size",
            path.display()
        );
    }
    let decoder = DecoderArch {
        family: Family::Qwen,
        vocab_size: uint(&v, "vocab_size").map_err(at)?,
        hidden_size: hidden,
        intermediate_size: uint(&v, "intermediate_size").map_err(at)?,
        num_hidden_layers: uint(&v, "num_hidden_layers").map_err(at)?,
        num_attention_heads: heads,
        num_key_value_heads: None,
        max_position_embeddings: uint(&v, "max_position_embeddings").map_err(at)?,
        rope_theta: float_or(&v, "rotary_emb_base", 10000.0).map_err(at)?,
        rms_norm_eps: float_or(&v, "layer_norm_epsilon", 1e-6).map_err(at)?,
        attention_bias: true,
        sliding_window: None,
        tie_word_embeddings: bool_or(&v, "tie_word_embeddings", false).map_err(at)?,
    };
    let visual = &v["visual"];
    let at = |e: anyhow::Error| anyhow!("{} (visual): {e}", path.display());
    let width = uint(visual, "width").map_err(at)?;
    let mlp_ratio = float_or(visual, "mlp_ratio", 4.0).map_err(at)?;
    let output_dim = uint(visual, "output_dim").map_err(at)?;
    let vision = VisionArch {
        family: VisionFamily::QwenVl,
        hidden_size: width,
        // visual.py: `int(width * mlp_ratio)`, truncated.
        intermediate_size: (width as f64 * mlp_ratio) as u64,
        num_hidden_layers: uint(visual, "layers").map_err(at)?,
        num_attention_heads: uint(visual, "heads").map_err(at)?,
        image_size: uint(visual, "image_size").map_err(at)?,
        patch_size: uint(visual, "patch_size").map_err(at)?,
        num_channels: 3,
        layer_norm_eps: 1e-6,
    };
    if output_dim % 128 != 0 {
        bail!("{}: key `visual.output_dim` ({output_dim}): Qwen-VL's resampler has output_dim / 128 heads, so it must be a multiple of 128", path.display());
    }
    if output_dim != hidden {
        bail!("{}: key `visual.output_dim` ({output_dim}) must equal hidden_size ({hidden}): the resampler's tokens are the decoder's inputs", path.display());
    }
    // visual.py's default; Qwen-VL's config does not set it.
    let num_queries = match &visual["n_queries"] {
        Value::Null => 256,
        v => v
            .as_u64()
            .filter(|n| (*n as f64).sqrt().fract() == 0.0)
            .ok_or_else(|| {
                anyhow!(
                    "{}: key `visual.n_queries`: expected a square number of queries, found {v}",
                    path.display()
                )
            })?,
    };
    let connector = Connector::Resampler {
        num_queries,
        // visual.py: `num_heads=output_dim // 128`.
        num_heads: output_dim / 128,
    };
    Ok(Parts {
        vision,
        connector,
        decoder,
    })
}

fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Which part a checkpoint name belongs to, and its name in that part's store.
enum Part {
    Vision(String),
    Connector(String),
    Decoder(String),
}

fn part_of(name: &str) -> Part {
    let Some(visual) = name.strip_prefix("transformer.visual.") else {
        return Part::Decoder(name.to_string());
    };
    match visual.strip_prefix("attn_pool.") {
        Some(rest) => Part::Connector(format!("connector.{rest}")),
        None if visual == "proj" || visual.starts_with("ln_post.") => {
            Part::Connector(format!("connector.{visual}"))
        }
        None => Part::Vision(visual.to_string()),
    }
}

/// The three stores (vision, connector, decoder) of `parts`, filled from `dir`'s checkpoint.
/// `parts` must be what the folder's config.json says (the recipe spells it out).
pub fn load(
    dir: &Path,
    parts: &Parts,
    device: Device,
    kind: Kind,
) -> Result<(ParamStore, ParamStore, ParamStore)> {
    let found = parts_of(dir)?;
    let differences = [
        (
            "model.vision.arch",
            json(&found.vision),
            json(&parts.vision),
        ),
        (
            "model.connector",
            json(&found.connector),
            json(&parts.connector),
        ),
        (
            "model.decoder",
            json(&found.decoder.normalized()),
            json(&parts.decoder.normalized()),
        ),
    ]
    .into_iter()
    .flat_map(|(key, config, recipe)| {
        let keys: Vec<String> = recipe
            .as_object()
            .map_or(Vec::new(), |o| o.keys().cloned().collect());
        keys.into_iter()
            .filter(|k| config[k.as_str()] != recipe[k.as_str()])
            .map(|k| {
                format!(
                    "{key}.{k} is {} in the recipe, {} in config.json",
                    recipe[k.as_str()],
                    config[k.as_str()]
                )
            })
            .collect::<Vec<_>>()
    })
    .collect::<Vec<_>>();
    if !differences.is_empty() {
        bail!(
            "{}: the checkpoint is not the recipe's architecture: {}\n  hint: make the recipe's architecture match the folder's config.json",
            dir.display(),
            differences.join("; ")
        );
    }
    let mut vision = ParamStore::zeros(&inventory::vision(&parts.vision), device, kind);
    let mut connector = ParamStore::zeros(
        &inventory::connector(&parts.connector, &parts.vision, &parts.decoder),
        device,
        kind,
    );
    let mut decoder = ParamStore::zeros(&inventory::decoder(&parts.decoder), device, kind);
    type Tensors = Vec<(PathBuf, String, Tensor)>;
    let (mut v, mut c, mut d): (Tensors, Tensors, Tensors) = Default::default();
    for (file, name, tensor) in read_tensors(dir)? {
        match part_of(&name) {
            Part::Vision(n) => v.push((file, n, tensor)),
            Part::Connector(n) => c.push((file, n, tensor)),
            Part::Decoder(n) => d.push((file, n, tensor)),
        }
    }
    vision.load_tensors(dir, &v, &[], &[])?;
    connector.load_tensors(dir, &c, &[], &[])?;
    decoder.load_tensors(dir, &d, &[], &[])?;
    Ok((vision, connector, decoder))
}

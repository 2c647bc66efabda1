//! HF model folders: `config.json` plus `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`. Reading maps config.json onto the plan's architecture
//! types; writing produces the same layout, each file written atomically.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tch::Tensor;

use crate::files::{read_json, write_atomic};
use crate::plan::arch::{ArchProblem, DecoderArch, Family, FeedForward, T5Arch};

pub const CONFIG: &str = "config.json";
pub const SINGLE: &str = "model.safetensors";
pub const INDEX: &str = "model.safetensors.index.json";

/// What an HF `config.json` describes.
#[derive(Clone, Debug, PartialEq)]
pub enum HfConfig {
    T5(T5Arch),
    Decoder {
        arch: DecoderArch,
        /// Linear RoPE position-interpolation factor (1 without `rope_scaling`).
        rope_factor: f64,
    },
}

/// Reads `dir/config.json`.
pub fn read_config(dir: &Path) -> Result<HfConfig> {
    let path = dir.join(CONFIG);
    let v = read_json(
        &path,
        "model.path must be an HF model folder (config.json + *.safetensors)",
    )?;
    let at = |e: anyhow::Error| anyhow!("{}: {e}", path.display());
    match v["model_type"].as_str() {
        Some("t5") => t5_config(&v).map(HfConfig::T5).map_err(at),
        Some(t @ ("llama" | "mistral" | "qwen2")) => decoder_config(&v, t).map_err(at),
        other => bail!(
            "{}: model_type {:?} is not one runner implements\n  hint: use a t5, llama, mistral or qwen2 checkpoint",
            path.display(),
            other.unwrap_or("(missing)")
        ),
    }
}

pub(crate) fn uint(v: &Value, key: &str) -> Result<u64> {
    v[key].as_u64().ok_or_else(|| {
        anyhow!(
            "key `{key}`: expected a non-negative integer, found {}",
            v[key]
        )
    })
}

pub(crate) fn float_or(v: &Value, key: &str, default: f64) -> Result<f64> {
    match &v[key] {
        Value::Null => Ok(default),
        x => x
            .as_f64()
            .ok_or_else(|| anyhow!("key `{key}`: expected a number, found {x}")),
    }
}

pub(crate) fn bool_or(v: &Value, key: &str, default: bool) -> Result<bool> {
    match &v[key] {
        Value::Null => Ok(default),
        x => x
            .as_bool()
            .ok_or_else(|| anyhow!("key `{key}`: expected true or false, found {x}")),
    }
}

fn t5_config(v: &Value) -> Result<T5Arch> {
    let feed_forward_proj = match v["feed_forward_proj"].as_str().unwrap_or("relu") {
        "relu" => FeedForward::Relu,
        "gated-gelu" => FeedForward::GatedGelu,
        other => bail!("key `feed_forward_proj`: expected relu or gated-gelu, found {other:?}"),
    };
    let arch = T5Arch {
        vocab_size: uint(v, "vocab_size")?,
        d_model: uint(v, "d_model")?,
        d_kv: uint(v, "d_kv")?,
        d_ff: uint(v, "d_ff")?,
        num_layers: uint(v, "num_layers")?,
        num_decoder_layers: v["num_decoder_layers"].as_u64(),
        num_heads: uint(v, "num_heads")?,
        relative_attention_num_buckets: uint(v, "relative_attention_num_buckets")?,
        relative_attention_max_distance: v["relative_attention_max_distance"]
            .as_u64()
            .unwrap_or(128),
        dropout_rate: float_or(v, "dropout_rate", 0.1)?,
        layer_norm_epsilon: float_or(v, "layer_norm_epsilon", 1e-6)?,
        feed_forward_proj,
        // transformers 5 always ties in the config and says with `scale_decoder_outputs`
        // whether the head is v1.0's (tied, rescaled); earlier configs say it with
        // `tie_word_embeddings` (false for v1.1).
        tie_word_embeddings: match &v["scale_decoder_outputs"] {
            Value::Bool(scale) => *scale,
            _ => bool_or(v, "tie_word_embeddings", true)?,
        },
    };
    refuse_problems(arch.problems())?;
    Ok(arch)
}

fn decoder_config(v: &Value, model_type: &str) -> Result<HfConfig> {
    let family = match model_type {
        "llama" => Family::Llama,
        "mistral" => Family::Mistral,
        _ => Family::Qwen2,
    };
    let hidden_size = uint(v, "hidden_size")?;
    let heads = uint(v, "num_attention_heads")?;
    if let Some(head_dim) = v["head_dim"].as_u64() {
        if head_dim * heads != hidden_size {
            bail!("key `head_dim`: {head_dim} × {heads} heads (num_attention_heads) ≠ hidden_size {hidden_size}\n  hint: runner needs head_dim = hidden_size / num_attention_heads");
        }
    }
    // transformers 5 writes `rope_parameters`; earlier versions `rope_scaling` and `rope_theta`.
    let rope = match (&v["rope_parameters"], &v["rope_scaling"]) {
        (Value::Object(_), _) => v["rope_parameters"].clone(),
        (_, Value::Object(_)) => v["rope_scaling"].clone(),
        _ => Value::Null,
    };
    let rope_type = rope["rope_type"]
        .as_str()
        .or(rope["type"].as_str())
        .unwrap_or("default");
    let rope_factor = match rope_type {
        "default" => 1.0,
        "linear" => float_or(&rope, "factor", 1.0)?,
        other => bail!("key `rope_scaling`: rope type {other:?} is not implemented; runner supports default and linear"),
    };
    let sliding_window = match family {
        Family::Qwen2 if bool_or(v, "use_sliding_window", false)? => bail!(
            "key `use_sliding_window`: Qwen2's window applies to layers from max_window_layers on, which runner does not implement\n  hint: set use_sliding_window: false (Qwen2 checkpoints are trained without it)"
        ),
        Family::Qwen2 => None,
        // transformers' MistralConfig default when the key is absent.
        Family::Mistral if v.get("sliding_window").is_none() => Some(4096),
        _ => v["sliding_window"].as_u64(),
    };
    let arch = DecoderArch {
        family,
        vocab_size: uint(v, "vocab_size")?,
        hidden_size,
        intermediate_size: uint(v, "intermediate_size")?,
        num_hidden_layers: uint(v, "num_hidden_layers")?,
        num_attention_heads: heads,
        num_key_value_heads: v["num_key_value_heads"].as_u64(),
        max_position_embeddings: uint(v, "max_position_embeddings")?,
        rope_theta: float_or(&rope, "rope_theta", float_or(v, "rope_theta", 10000.0)?)?,
        rms_norm_eps: float_or(v, "rms_norm_eps", 1e-6)?,
        // Qwen2 always has q/k/v biases, Mistral never; Llama says so in its config.
        attention_bias: match family {
            Family::Qwen2 => true,
            Family::Mistral => false,
            _ => bool_or(v, "attention_bias", false)?,
        },
        sliding_window,
        tie_word_embeddings: bool_or(v, "tie_word_embeddings", false)?,
    };
    refuse_problems(arch.problems())?;
    Ok(HfConfig::Decoder { arch, rope_factor })
}

/// Turns an architecture's problems into an error naming the config keys.
fn refuse_problems(problems: Vec<ArchProblem>) -> Result<()> {
    match problems.first() {
        None => Ok(()),
        Some(p) => bail!(
            "key `{}`: {}\n  hint: {}",
            p.keys.join("`, `"),
            p.message,
            p.hint
        ),
    }
}

/// The `config.json` transformers writes for this architecture.
pub fn config_json(config: &HfConfig) -> Value {
    match config {
        HfConfig::T5(a) => json!({
            "architectures": ["T5ForConditionalGeneration"],
            "model_type": "t5",
            "vocab_size": a.vocab_size,
            "d_model": a.d_model,
            "d_kv": a.d_kv,
            "d_ff": a.d_ff,
            "num_layers": a.num_layers,
            "num_decoder_layers": a.decoder_layers(),
            "num_heads": a.num_heads,
            "relative_attention_num_buckets": a.relative_attention_num_buckets,
            "relative_attention_max_distance": a.relative_attention_max_distance,
            "dropout_rate": a.dropout_rate,
            "layer_norm_epsilon": a.layer_norm_epsilon,
            "feed_forward_proj": match a.feed_forward_proj {
                FeedForward::Relu => "relu",
                FeedForward::GatedGelu => "gated-gelu",
            },
            "is_gated_act": a.feed_forward_proj == FeedForward::GatedGelu,
            "tie_word_embeddings": a.tie_word_embeddings,
            "scale_decoder_outputs": a.tie_word_embeddings,
            "decoder_start_token_id": 0,
            "pad_token_id": 0,
            "eos_token_id": 1,
            "is_encoder_decoder": true,
        }),
        HfConfig::Decoder {
            arch: a,
            rope_factor,
        } => {
            let (model_type, architecture) = match a.family {
                Family::Llama => ("llama", "LlamaForCausalLM"),
                Family::Mistral => ("mistral", "MistralForCausalLM"),
                Family::Qwen2 | Family::Qwen => ("qwen2", "Qwen2ForCausalLM"),
            };
            let mut rope = json!({ "rope_type": "default", "rope_theta": a.rope_theta });
            if *rope_factor != 1.0 {
                rope = json!({ "rope_type": "linear", "factor": rope_factor, "rope_theta": a.rope_theta });
            }
            json!({
                "architectures": [architecture],
                "model_type": model_type,
                "vocab_size": a.vocab_size,
                "hidden_size": a.hidden_size,
                "intermediate_size": a.intermediate_size,
                "num_hidden_layers": a.num_hidden_layers,
                "num_attention_heads": a.num_attention_heads,
                "num_key_value_heads": a.kv_heads(),
                "max_position_embeddings": a.max_position_embeddings,
                "rms_norm_eps": a.rms_norm_eps,
                "rope_theta": a.rope_theta,
                "rope_parameters": rope,
                "rope_scaling": if *rope_factor != 1.0 { json!({"type": "linear", "rope_type": "linear", "factor": rope_factor}) } else { Value::Null },
                "attention_bias": a.attention_bias,
                "sliding_window": a.sliding_window,
                "use_sliding_window": a.sliding_window.is_some(),
                "hidden_act": "silu",
                "tie_word_embeddings": a.tie_word_embeddings,
            })
        }
    }
}

/// Every tensor of the folder's safetensors file(s), with the file it came from.
pub fn read_tensors(dir: &Path) -> Result<Vec<(PathBuf, String, Tensor)>> {
    let files = weight_files(dir)?;
    let mut out = Vec::new();
    for file in files {
        let tensors = Tensor::read_safetensors(&file)
            .with_context(|| format!("{}: not a readable safetensors file", file.display()))?;
        out.extend(tensors.into_iter().map(|(n, t)| (file.clone(), n, t)));
    }
    Ok(out)
}

/// The safetensors files of a folder: the shards its index names, or the single file.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(INDEX);
    if index.is_file() {
        let text = fs::read_to_string(&index)?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", index.display()))?;
        let map = v["weight_map"].as_object().ok_or_else(|| {
            anyhow!(
                "{}: key `weight_map`: expected an object of tensor → file",
                index.display()
            )
        })?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(Value::as_str)
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        if let Some(absent) = files.iter().find(|f| !f.is_file()) {
            bail!(
                "{}: names shard {} which does not exist\n  hint: the download is incomplete",
                index.display(),
                absent.display()
            );
        }
        return Ok(files);
    }
    let single = dir.join(SINGLE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    bail!(
        "{}: no {SINGLE} and no {INDEX}\n  hint: runner reads safetensors weights only; convert .bin checkpoints with transformers' save_pretrained(safe_serialization=True)",
        dir.display()
    )
}

/// Writes `config.json` and the tensors, in shards of at most `max_shard_bytes` (with an
/// index) when they do not fit in one file.
pub fn write_folder(
    dir: &Path,
    config: &Value,
    tensors: &[(String, Tensor)],
    max_shard_bytes: usize,
) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomic(
        &dir.join(CONFIG),
        serde_json::to_string_pretty(config)?.as_bytes(),
    )?;
    let mut shards: Vec<Vec<&(String, Tensor)>> = vec![Vec::new()];
    let mut bytes = 0;
    for entry in tensors {
        let size = entry.1.numel() * entry.1.kind().elt_size_in_bytes();
        if bytes > 0 && bytes + size > max_shard_bytes {
            shards.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        shards.last_mut().expect("one shard").push(entry);
    }
    // A layout left from an earlier save would shadow this one (the index wins on reading).
    for stale in [INDEX, SINGLE] {
        let path = dir.join(stale);
        if path.is_file() {
            fs::remove_file(&path).with_context(|| format!("cannot replace {}", path.display()))?;
        }
    }
    if shards.len() == 1 {
        write_safetensors(&dir.join(SINGLE), &shards[0])?;
        return Ok(());
    }
    let mut weight_map = BTreeMap::new();
    let total: usize = tensors
        .iter()
        .map(|(_, t)| t.numel() * t.kind().elt_size_in_bytes())
        .sum();
    for (i, shard) in shards.iter().enumerate() {
        let name = format!("model-{:05}-of-{:05}.safetensors", i + 1, shards.len());
        write_safetensors(&dir.join(&name), shard)?;
        for (tensor, _) in shard.iter().map(|e| (&e.0, &e.1)) {
            weight_map.insert(tensor.clone(), name.clone());
        }
    }
    let index = json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    write_atomic(
        &dir.join(INDEX),
        serde_json::to_string_pretty(&index)?.as_bytes(),
    )
}

/// Writes tensors to a safetensors file through a temporary file and a rename.
pub fn write_safetensors(path: &Path, tensors: &[&(String, Tensor)]) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    let contiguous: Vec<(&str, Tensor)> = tensors
        .iter()
        .map(|(n, t)| {
            (
                n.as_str(),
                t.detach().to_device(tch::Device::Cpu).contiguous(),
            )
        })
        .collect();
    Tensor::write_safetensors(&contiguous, &tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

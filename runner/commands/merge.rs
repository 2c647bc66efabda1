//! `runner merge BASE ADAPTER OUT`: folds a PEFT LoRA adapter into its base model and saves
//! an HF folder that needs neither PEFT nor runner to load.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::models::adapters::lora;
use crate::models::hf_folder::{self, CONFIG};
use crate::models::hf_model;

/// `runner merge BASE ADAPTER OUT`.
#[derive(clap::Args)]
pub struct Args {
    /// The base model's HF folder (config.json + safetensors).
    base: PathBuf,
    /// The adapter folder (adapter_config.json + adapter_model.safetensors).
    adapter: PathBuf,
    /// Where to write the merged HF folder.
    out: PathBuf,
}

impl Args {
    pub fn run(&self, out: &mut dyn Write) -> std::io::Result<i32> {
        run(&self.base, &self.adapter, &self.out, out)
    }
}

/// Files of the base folder the merged folder keeps as they are (config.json is kept too).
const CARRIED: [&str; 6] = [
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "spiece.model",
];

pub fn run(
    base: &Path,
    adapter: &Path,
    out_dir: &Path,
    out: &mut dyn Write,
) -> std::io::Result<i32> {
    super::finish(merge(base, adapter, out_dir), out)
}

fn merge(base: &Path, adapter: &Path, out_dir: &Path) -> Result<String> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(out_dir, base) || same(out_dir, adapter) {
        bail!(
            "{}: the output folder is an input folder\n  hint: write the merged model to a new folder",
            out_dir.display()
        );
    }
    // Merge in fp32; save in the kind the base checkpoint has (a bf16 model stays bf16). A
    // base saved in 4 bits is dequantised first (into the kind it was quantised from), as
    // QA-Expert's merge_weight.py merges into the bf16 base.
    let (_, mut store) = hf_model::load(base, Device::Cpu, Kind::Float)?;
    store.dequantize_all()?;
    let spec = lora::load_peft(adapter, &mut store)?;
    let merged = lora::merge(&mut store)?;
    let kind = store.checkpoint_kind.unwrap_or(Kind::Float);
    let tensors: Vec<(String, Tensor)> = store
        .base_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.to_kind(kind)))
        .collect();
    let mut config =
        crate::files::read_json(&base.join(CONFIG), "the base must be an HF model folder")?;
    if let Some(fields) = config.as_object_mut() {
        fields.remove("quantization_config");
    }
    hf_folder::write_folder(out_dir, &config, &tensors, hf_model::MAX_SHARD_BYTES)?;
    for name in CARRIED {
        let from = base.join(name);
        if from.is_file() {
            fs::copy(&from, out_dir.join(name)).with_context(|| {
                format!("cannot copy {} to {}", from.display(), out_dir.display())
            })?;
        }
    }
    Ok(format!(
        "merged {merged} LoRA adapters (rank {}, alpha {}) into the weights of {}\nwrote {} ({kind:?})",
        spec.rank,
        spec.alpha,
        base.display(),
        out_dir.display()
    ))
}

//! `runner merge BASE ADAPTER OUT`: folds a PEFT LoRA adapter into its base model and saves
//! an HF folder that needs neither PEFT nor runner to load.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use tch::{Device, Kind};

use crate::models::hf_folder::{self, CONFIG};
use crate::models::{hf_model, lora};

/// Files of the base folder the merged folder keeps as they are.
const CARRIED: [&str; 7] = [
    CONFIG,
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
    let (config, mut store) = hf_model::load(base, Device::Cpu, Kind::Float)?;
    let spec = lora::load_peft(adapter, &mut store)?;
    let merged = lora::merge(&mut store)?;
    hf_folder::write_folder(
        out_dir,
        &hf_folder::config_json(&config),
        &store.base_tensors(),
        hf_model::MAX_SHARD_BYTES,
    )?;
    for name in CARRIED {
        let from = base.join(name);
        if from.is_file() {
            fs::copy(&from, out_dir.join(name)).with_context(|| {
                format!("cannot copy {} to {}", from.display(), out_dir.display())
            })?;
        }
    }
    Ok(format!(
        "merged {merged} LoRA adapters (rank {}, alpha {}) into {}\nwrote {}",
        spec.rank,
        spec.alpha,
        base.display(),
        out_dir.display()
    ))
}

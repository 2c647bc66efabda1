//! What is specific to one paper: how its recipe kind builds a model, data and loss for the
//! generic trainer (`train::Task`).

pub mod alignment;
pub mod coe;
pub mod iag;
pub mod longlora;

use std::path::Path;

use anyhow::{Context, Result};

use crate::models::adapters::lora::{self, LoraSpec};
use crate::models::hf_folder::HfConfig;
use crate::models::{hf_model, ParamStore};

/// Saves a trained model as its result: the PEFT adapter in `dir/adapter` when LoRA trained
/// (`base` names the base model), else the whole model as an HF folder in `dir/model`.
pub fn save_result(
    dir: &Path,
    store: &ParamStore,
    config: &HfConfig,
    lora: Option<&LoraSpec>,
    base: Option<&str>,
    task_type: &str,
) -> Result<()> {
    match lora {
        Some(spec) => {
            let base = base.unwrap_or("(randomly initialised)");
            lora::save_peft(&dir.join("adapter"), store, spec, base, task_type)
        }
        None => hf_model::save(&dir.join("model"), config, store),
    }
    .context("saving the trained model")
}

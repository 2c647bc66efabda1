//! What is specific to one paper: how its recipe kind builds a model, data and loss for the
//! generic trainer (`train::Task`).

pub mod alignment;
pub mod coe;
pub mod iag;
pub mod inputs;
pub mod longlora;

use std::path::Path;

use anyhow::{Context, Result};
use tch::Device;

use crate::distributed::world::World;
use crate::models::adapters::lora::{self, LoraSpec};
use crate::models::hf_folder::HfConfig;
use crate::models::{hf_model, ParamStore};
use crate::plan::training::Adapter;
use crate::plan::{Plan, Recipe};
use crate::train::parallel::DataParallel;
use crate::train::task::Task;
use crate::train::trainer::{self, RunOptions, Summary};
use inputs::{InputRuns, Inputs};

/// Trains `plan` on `device` as one of `dp`'s ranks, its input runs first where they are
/// missing.
pub fn train(
    plan: &Plan,
    device: Device,
    options: &RunOptions,
    dp: &DataParallel,
) -> Result<Summary> {
    train_for(plan, device, options, &[], dp)
}

/// Trains `plan`, whose run the recipes in `waiting` (outermost first) need as an input. An
/// input recipe's run is trained by one process: under several ranks rank 0 trains a missing
/// one while the others wait, then every rank reads it.
fn train_for(
    plan: &Plan,
    device: Device,
    options: &RunOptions,
    waiting: &[String],
    dp: &DataParallel,
) -> Result<Summary> {
    let waiting = [waiting, &[plan.recipe.name().to_string()]].concat();
    let train_input = |input: &Plan, waiting: &[String]| {
        let options = RunOptions {
            out: None,
            force: false,
            stop_after: None,
        };
        let distributed = &input.recipe.training().distributed;
        let alone = DataParallel::join(World::single(), device, distributed).with_context(|| {
            format!(
                "input recipe {} cannot be trained here\n  hint: train it first with its own launch",
                input.source.display()
            )
        })?;
        train_for(input, device, &options, waiting, &alone).map(|_| ())
    };
    let runs = match dp.is_main() {
        true => InputRuns::Train {
            train: &train_input,
            waiting: &waiting,
        },
        false => InputRuns::Existing,
    };
    if !dp.is_main() {
        dp.barrier()?;
    }
    let inputs = inputs::gather(plan, runs);
    if dp.is_main() {
        dp.barrier()?;
    }
    let inputs = inputs?;
    let known = [inputs.hashes.clone(), inputs::file_digests(plan)?].concat();
    let dir = options
        .out
        .clone()
        .unwrap_or_else(|| trainer::default_dir(plan));
    if let Some(summary) = (!options.force)
        .then(|| trainer::finished_run(plan, &dir, &known))
        .flatten()
    {
        return Ok(summary);
    }
    let task = build(plan, &inputs, device)?;
    if let Some(run) = inputs.run("model.continue_from") {
        inputs::start_from(task.as_ref(), run)?;
    }
    let recorded = [known, task.input_hashes()].concat();
    trainer::train(plan, task.as_ref(), options, &recorded, dp)
}

/// The task of `plan`'s kind on `device`, built from the plan and its input runs: the one
/// place the execution side tells the kinds apart.
pub fn build(plan: &Plan, inputs: &Inputs, device: Device) -> Result<Box<dyn Task>> {
    Ok(match &plan.recipe {
        Recipe::LongloraSft(r) => Box::new(longlora::build(r, device)?),
        Recipe::IagDistill(r) => Box::new(iag::build(r, inputs, device)?),
        Recipe::CoeMultitask(r) => Box::new(coe::build(r, inputs, device)?),
    })
}

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

/// Readies a decoder's weights for the plan's adapter: full fine-tuning trains every weight,
/// LoRA attaches its factors (returned). HyperLoRA is IAG's T5 adapter: the plan refuses it
/// for decoders.
pub fn adapt_decoder(
    store: &mut ParamStore,
    adapter: &Adapter,
    seed: i64,
) -> Result<Option<LoraSpec>> {
    match (adapter, LoraSpec::of(adapter)) {
        (Adapter::Full, _) => {
            store.set_trainable(|_, _| true);
            Ok(None)
        }
        (_, Some(spec)) => {
            lora::attach(store, &spec, seed)?;
            Ok(Some(spec))
        }
        (_, None) => anyhow::bail!("training.adapter: hyperlora adapts T5 (the plan checks this)"),
    }
}

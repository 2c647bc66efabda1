//! `coe_multitask` (Chain-of-Exemplar, ACL 2024): a vision-language model trained on question,
//! rationale and distractor generation from ScienceQA-style items, each prompt carrying the
//! best retrieved exemplar; evaluated by generating each task (and CoE's chain: question, then
//! rationale from it, then distractors from both) and scoring with BLEU-4, ROUGE-L and METEOR.
//! Optionally also multiple-choice answering, whose per-category error rates drive the
//! MLLM-DataEngine loop: `error_rates.json` from one run weights the categories of the next.
//!
//! Read top-down: `model` (tower, connector, decoder), `retrieval` (exemplars),
//! `conversations` (prompts, the task mixture, batches), `evaluation`.

mod conversations;
mod evaluation;
mod model;
mod retrieval;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use super::inputs::Inputs;
use crate::data::batch::Batch;
use crate::data::categories;
use crate::data::chatml::Specials;
use crate::data::loader::{Loader, MakeBatch};
use crate::data::mixture::Mixture;
use crate::data::scienceqa::{Item, Task as CoeTask};
use crate::data::tokenizer::Tokenizer;
use crate::eval::text_metrics::TextScorer;
use crate::models::hf_folder::write_safetensors;
use crate::models::loss::TokenLosses;
use crate::models::{ParamStore, Tape};
use crate::plan::common::is_recipe;
use crate::plan::kinds::coe::{Data, TextMetric};
use crate::plan::recipe::CoeRecipe;
use crate::train::task::{EvalShare, Evaluation, Task};
use conversations::{batches, Items, Prompts};
use model::Model;
use retrieval::Retrieval;

pub struct CoeMultitask {
    model: Model,
    tokenizer: Tokenizer,
    specials: Specials,
    loader: Loader,
    make: MakeBatch,
    /// Validation items, each with its exemplar (an index into `train`).
    validation: Vec<(Item, Option<usize>)>,
    validation_conversations: usize,
    /// The answering task's option conversations (`(A) …`, `(B) …` per validation item, in
    /// item order) and how many options each item has.
    make_options: MakeBatch,
    options_per_item: Vec<usize>,
    category_field: String,
    scorer: TextScorer,
    /// Per task, the summed token losses and tokens of the current step's micro-batches.
    step_losses: Mutex<Vec<(f64, i64)>>,
    train: Arc<Vec<Item>>,
    /// Retrieval over the training items, for items met later (`runner generate`).
    retrieval: Retrieval,
    tasks: Vec<CoeTask>,
    system: String,
    image_tokens: usize,
    max_length: usize,
    max_new_tokens: i64,
    /// Item fields the text metrics are also broken down by.
    subgroups: Vec<String>,
    best: TextMetric,
    chain: bool,
    images: Arc<HashMap<String, Vec<f32>>>,
    image_root: PathBuf,
    image_size: i64,
    /// The category weights' content hash, recorded as an input of the run.
    input_hashes: Vec<(String, String)>,
    device: Device,
}

/// CoE's setup: the model, the items with their retrieved exemplars, each trained task's
/// conversations mixed into one training order, and what evaluation needs.
pub fn build(recipe: &CoeRecipe, inputs: &Inputs, device: Device) -> Result<CoeMultitask> {
    let (d, m, ev) = (&recipe.data, &recipe.model, &recipe.evaluation);
    // First what fails fastest: METEOR's data (WordNet, Punkt) before any weights load.
    let scorer = TextScorer::new(&ev.metrics)?;
    let (tokenizer, specials) = model::tokenizer(m)?;
    let model = model::build(recipe, specials.img_pad, device)?;
    let size = m.vision.arch.image_size;
    let items = Items::read(d, size as u32)?;
    let (retrieval, (train_exemplars, validation_exemplars)) = Retrieval::build(
        &recipe.method.retrieval,
        &items.train,
        &items.validation,
        device,
    )?;

    let t = &recipe.method.tasks;
    let (tasks, task_weights): (Vec<CoeTask>, Vec<f64>) =
        conversations::tasks(t).into_iter().unzip();
    let prompts = Prompts {
        tokenizer: &tokenizer,
        specials: &specials,
        system: &d.system_prompt,
        image_tokens: m.connector.tokens_per_image(&m.vision.arch) as usize,
        max_length: d.max_length as usize,
        tasks: &tasks,
    };
    prompts.check_answers(&items.train, &d.train)?;
    prompts.check_answers(&items.validation, &d.validation)?;
    let mut mixture = Mixture::new(&task_weights, t.mixing, t.temperature, recipe.seed);
    let (groups, input_hash) = category_groups(d, &items.train, inputs)?;
    let (train, valid) = (&items.train, &items.validation);
    let training = prompts.training(train, &train_exemplars, &mut mixture, &groups, recipe.seed)?;
    let validation = prompts.validation(valid, &validation_exemplars, train)?;
    let (options, options_per_item) =
        prompts.options(valid, &validation_exemplars, train, &d.validation)?;

    let pad = tokenizer.id("<|endoftext|>")?;
    let make_of = |list| batches(list, &items.images, pad, size as i64);
    let loader = Loader {
        len: training.len(),
        batch_size: recipe.training.micro_batch_size as usize,
        seed: recipe.seed,
        lengths: None,
        make: make_of(training),
    };
    Ok(CoeMultitask {
        image_tokens: prompts.image_tokens,
        max_length: prompts.max_length,
        validation_conversations: validation.len(),
        make: make_of(validation),
        make_options: make_of(options),
        options_per_item,
        model,
        tokenizer,
        specials,
        loader,
        category_field: d.category_field.clone(),
        scorer,
        step_losses: Mutex::new(vec![(0.0, 0); tasks.len()]),
        validation: items
            .validation
            .into_iter()
            .zip(validation_exemplars)
            .collect(),
        train: Arc::new(items.train),
        retrieval,
        tasks,
        system: d.system_prompt.clone(),
        max_new_tokens: ev.max_new_tokens as i64,
        subgroups: ev.subgroups.clone(),
        best: ev.best_metric,
        chain: ev.chain,
        images: items.images,
        image_root: items.root,
        image_size: size as i64,
        input_hashes: input_hash.into_iter().collect(),
        device,
    })
}

/// A weight and the indices of the training items it draws among.
type Group = (f64, Vec<usize>);
/// What the run read, by name, and its content hash.
type InputHash = (String, String);

/// How training draws items within a task: category by category when the plan weights
/// categories (the DataEngine loop), else all from one group; and the weights' content hash.
fn category_groups(
    d: &Data,
    train: &[Item],
    inputs: &Inputs,
) -> Result<(Vec<Group>, Option<InputHash>)> {
    let Some(weights) = &d.category_weights else {
        return Ok((vec![(1.0, (0..train.len()).collect())], None));
    };
    let file = weights_file(weights, inputs)?;
    let bytes = std::fs::read(&file).with_context(|| {
        format!("data.category_weights: reading {}\n  hint: a run writes error_rates.json when it trains the answering task (method.tasks.answer > 0)", file.display())
    })?;
    let hash = blake3::hash(&bytes).to_hex().to_string();
    let groups = categories::weighted_groups(
        train,
        &d.category_field,
        &categories::read_weights(&file.display().to_string())?,
        &d.train,
    )?;
    Ok((groups, Some(("category_weights".to_string(), hash))))
}

/// The category weights a plan names: a file, or an earlier round's recipe, whose run's
/// `error_rates.json` it means.
fn weights_file(weights: &str, inputs: &Inputs) -> Result<PathBuf> {
    if !is_recipe(weights) {
        return Ok(PathBuf::from(weights));
    }
    let run = inputs.run("data.category_weights").with_context(|| {
        format!("data.category_weights: {weights} has no finished run\n  hint: train it first: runner run {weights}")
    })?;
    Ok(run.join("error_rates.json"))
}

impl CoeMultitask {
    /// The tasks the plan trains, in CoE's order.
    pub fn tasks(&self) -> &[CoeTask] {
        &self.tasks
    }

    /// The best training item to show as the exemplar of a new item.
    pub fn exemplar(&self, item: &Item) -> Option<&Item> {
        self.retrieval.exemplar(item).map(|i| &self.train[i])
    }

    /// The model's reply to `task` on `item`, given the item's own question.
    pub fn reply(&self, task: CoeTask, item: &Item) -> Result<String> {
        self.generate(task, item, self.exemplar(item), None, None)
    }

    /// CoE's chain on `item`: its question, a rationale from that question, and distractors
    /// from both.
    pub fn chain(&self, item: &Item) -> Result<[String; 3]> {
        let exemplar = self.exemplar(item);
        let question = self.generate(CoeTask::Question, item, exemplar, None, None)?;
        let rationale = self.generate(CoeTask::Rationale, item, exemplar, Some(&question), None)?;
        let distractors = self.generate(
            CoeTask::Distractor,
            item,
            exemplar,
            Some(&question),
            Some(&rationale),
        )?;
        Ok([question, rationale, distractors])
    }
}

impl Task for CoeMultitask {
    fn stores(&self) -> Vec<(&'static str, &ParamStore)> {
        vec![
            ("", &self.model.decoder),
            ("vision.", &self.model.vision),
            ("connector.", &self.model.connector),
        ]
    }

    fn device(&self) -> Device {
        self.device
    }

    fn input_hashes(&self) -> Vec<(String, String)> {
        self.input_hashes.clone()
    }

    fn loader(&self) -> &Loader {
        &self.loader
    }

    fn pytorch_reference(&self) -> std::result::Result<serde_json::Value, String> {
        self.model.pytorch_reference()
    }

    fn loss<'a>(&'a self, batch: &Batch, tape: &Tape<'a>, _step: u64) -> Tensor {
        let losses = self
            .model
            .vlm
            .causal_lm_loss(
                &batch.input_ids,
                Some(&batch.attention_mask),
                self.pixels(batch).as_ref(),
                &batch.labels,
                tape,
            )
            .expect("image placeholders match the images");
        let TokenLosses { mean, sums, counts } = losses;
        // Each task's share of the step, for its own loss curve.
        let cpu = |t: &Tensor, kind: Kind| t.detach().to_device(Device::Cpu).to_kind(kind);
        let values = Vec::<f64>::try_from(cpu(&sums, Kind::Double)).expect("a CPU vector");
        let tokens = Vec::<i64>::try_from(cpu(&counts, Kind::Int64)).expect("a CPU vector");
        let tasks =
            Vec::<i64>::try_from(cpu(batch.extra("task"), Kind::Int64)).expect("a CPU vector");
        let mut step = self.step_losses.lock().unwrap_or_else(|e| e.into_inner());
        for ((v, n), k) in values.iter().zip(&tokens).zip(&tasks) {
            step[*k as usize].0 += v;
            step[*k as usize].1 += n;
        }
        mean
    }

    /// Each task's token-weighted loss over the step's micro-batches (tasks the step did not
    /// draw are left out of it).
    fn step_metrics(&self) -> Vec<(String, f64)> {
        let mut step = self.step_losses.lock().unwrap_or_else(|e| e.into_inner());
        let metrics = self
            .tasks
            .iter()
            .zip(step.iter())
            .filter(|(_, (_, n))| *n > 0)
            .map(|(t, (sum, n))| (format!("{}_loss", t.name()), sum / *n as f64))
            .collect();
        step.iter_mut().for_each(|s| *s = (0.0, 0));
        metrics
    }

    /// Validation loss (overall and per task); each generation task's text metrics (×100) over
    /// greedy generations, overall and by subgroup; the answering task's accuracy by its
    /// likeliest option, with `error_rates.json` per category; CoE's chain on the first item.
    /// CoE evaluates on one rank (its chain, per-category rates and files are whole-data).
    fn evaluate(&self, _: EvalShare) -> Result<Evaluation> {
        self.evaluation()
    }

    fn best_metric(&self) -> (&'static str, bool) {
        match self.best {
            TextMetric::Bleu4 => ("question_bleu4", true),
            TextMetric::RougeL => ("question_rouge_l", true),
            TextMetric::Meteor => ("question_meteor", true),
            TextMetric::Loss => ("loss", false),
        }
    }

    /// Every weight of the three parts in `model/model.safetensors` (HF names).
    fn save(&self, dir: &Path) -> Result<()> {
        let dir = dir.join("model");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tensors: Vec<(String, Tensor)> = [
            &self.model.decoder,
            &self.model.vision,
            &self.model.connector,
        ]
        .iter()
        .flat_map(|s| {
            s.iter()
                .map(|(n, t, _)| (n.to_string(), t.detach()))
                .collect::<Vec<_>>()
        })
        .collect();
        let refs: Vec<&(String, Tensor)> = tensors.iter().collect();
        write_safetensors(&dir.join("model.safetensors"), &refs)
    }
}

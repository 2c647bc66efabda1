//! `longlora_sft` (LongLoRA, arXiv 2309.12307): a Llama-family decoder fine-tuned on
//! instruction data at a longer context, with RoPE position interpolation, S²-Attn in training,
//! and LoRA plus trainable embeddings and norms (or full fine-tuning).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::data::batch::{collate, Batch, Example};
use crate::data::loader::Loader;
use crate::data::tokenizer::Tokenizer;
use crate::data::{instruction, packing, qa_expert};
use crate::eval::{passkey, perplexity};
use crate::models::adapters::lora::LoraSpec;
use crate::models::generate::{self, GenerateOptions, Strategy};
use crate::models::hf_folder::{config_json, HfConfig};
use crate::models::llama::{self, DecoderOptions, Llama};
use crate::models::loss::IGNORE;
use crate::models::{hf_model, Compute, ParamStore, Tape};
use crate::plan::common::tokenizer_file;
use crate::plan::kinds::longlora::{DataFormat, Metric, Passkey, Perplexity, Side, Template};
use crate::plan::recipe::LongloraRecipe;
use crate::train::task::{EvalShare, Evaluation, Partial, Reading, Task};

pub struct LongloraTask {
    store: ParamStore,
    config: HfConfig,
    model: Llama,
    lora: Option<LoraSpec>,
    base: Option<String>,
    tokenizer: Tokenizer,
    template: Template,
    eos: i64,
    pad: i64,
    side: Side,
    loader: Loader,
    /// Validation examples, with their instruction item when the data has them.
    validation: Vec<(Option<instruction::Item>, Example)>,
    eval_batch: usize,
    best: Metric,
    passkey: Option<Passkey>,
    /// Token stream and settings of the sliding-window perplexity.
    perplexity: Option<(Vec<i64>, Perplexity)>,
    /// The plan's recipe, for `runner bench`'s random batch and its PyTorch reference.
    recipe: LongloraRecipe,
    seed: u64,
    device: Device,
}

/// Builds the model, tokenizer and data of a `longlora_sft` plan.
pub fn build(recipe: &LongloraRecipe, device: Device) -> Result<LongloraTask> {
    let m = &recipe.model;
    let compute = Compute::of(recipe.training.precision);
    let rope_factor = m.rope_factor(recipe.data.max_length);
    let mut store = match &m.path {
        Some(path) => {
            let (found, store) = hf_model::load(Path::new(path), device, compute.weights)?;
            if let HfConfig::Decoder { arch, .. } = &found {
                if arch.normalized() != m.arch.normalized() {
                    bail!(
                        "{path}/config.json describes another architecture than model.arch\n  hint: make model.arch match the checkpoint (runner plan shows the plan's)"
                    );
                }
            }
            store
        }
        None => {
            let config = HfConfig::Decoder {
                arch: m.arch.clone(),
                rope_factor,
            };
            hf_model::random(&config, recipe.seed as i64, device, compute.weights)
        }
    };
    let tokenizer_path = tokenizer_file(m.tokenizer.as_deref(), m.path.as_deref())
        .context("model.tokenizer: none given (the plan checks this)")?;
    let mut tokenizer = Tokenizer::load(&tokenizer_path)?;
    // LongLoRA adds the pad token when the tokenizer lacks it, and gives its new embedding
    // rows (input and output) the mean of the others.
    let pad = tokenizer.id_or_add(&recipe.data.pad_token);
    let mut arch = m.arch.clone();
    if pad as u64 >= arch.vocab_size {
        let added = pad + 1 - arch.vocab_size as i64;
        store.grow_rows_with_mean("model.embed_tokens.weight", added)?;
        if !arch.tie_word_embeddings {
            store.grow_rows_with_mean("lm_head.weight", added)?;
        }
        arch.vocab_size = (pad + 1) as u64;
    }
    if recipe.data.format == DataFormat::QaExpert {
        // QA-Expert adds its three markers to the tokenizer when it lacks them and resizes the
        // embeddings (transformers 4.34: new rows drawn N(0, initializer_range²)).
        for marker in qa_expert::MARKERS {
            tokenizer.id_or_add(marker);
        }
        let added = tokenizer.vocab_size() as i64 - arch.vocab_size as i64;
        if added > 0 {
            tch::manual_seed(recipe.seed as i64);
            store.grow_rows_normal("model.embed_tokens.weight", added, llama::INIT_STD)?;
            if !arch.tie_word_embeddings {
                store.grow_rows_normal("lm_head.weight", added, llama::INIT_STD)?;
            }
            arch.vocab_size = tokenizer.vocab_size() as u64;
        }
    }
    if tokenizer.vocab_size() as u64 > arch.vocab_size {
        bail!(
            "{}: {} tokens, more than model.arch.vocab_size {}\n  hint: use the model's own tokenizer",
            tokenizer_path.display(),
            tokenizer.vocab_size(),
            arch.vocab_size
        );
    }
    let lora = super::adapt_decoder(&mut store, &recipe.training.adapter, recipe.seed as i64)?;
    let groups = recipe
        .method
        .shifted_sparse_attention
        .then(|| (1.0 / recipe.method.group_fraction).round() as i64);
    let options = DecoderOptions {
        rope_factor,
        shifted_sparse_groups: groups,
    };
    let model = Llama::new(&store, &arch, options, compute.activations)?;

    let eos = tokenizer.id("</s>")?;
    let max_length = recipe.data.max_length as usize;
    let template = recipe.data.template;
    let encode_all = |path: &str| -> Result<Vec<(Option<instruction::Item>, Example)>> {
        let path = Path::new(path);
        match recipe.data.format {
            DataFormat::Instruction => instruction::read(path)?
                .into_iter()
                .map(|item| {
                    let e = instruction::encode(&tokenizer, template, &item, eos, max_length)?;
                    Ok((Some(item), e))
                })
                .collect(),
            DataFormat::QaExpert => qa_expert::read(path)?
                .iter()
                .map(|item| Ok((None, qa_expert::encode(&tokenizer, item, max_length)?)))
                .collect(),
            DataFormat::PretrainText => {
                let texts = packing::read_texts(path)?;
                let blocks = packing::pack(&tokenizer, &texts, eos, max_length)?;
                Ok(blocks.into_iter().map(|e| (None, e)).collect())
            }
        }
    };
    let train: Vec<Example> = with_targets(
        &recipe.data.train,
        encode_all(&recipe.data.train)?,
        max_length,
    )
    .into_iter()
    .map(|(_, e)| e)
    .collect();
    if train.is_empty() {
        bail!(
            "{}: no training examples with a target (pretrain_text needs at least data.max_length tokens)",
            recipe.data.train
        );
    }
    let validation = match &recipe.data.validation {
        Some(path) => with_targets(path, encode_all(path)?, max_length),
        None => Vec::new(),
    };
    let micro = recipe.training.micro_batch_size as usize;
    let loader = Loader::causal(
        train,
        micro,
        pad,
        recipe.data.padding_side,
        groups.unwrap_or(1) as usize,
        recipe.seed,
        recipe.data.group_by_length,
    );
    let perplexity = match &recipe.evaluation.perplexity {
        Some(p) => {
            let mut stream = Vec::new();
            for text in packing::read_texts(Path::new(&p.data))? {
                stream.extend(tokenizer.encode(&text, true)?);
                stream.push(eos);
            }
            Some((stream, p.clone()))
        }
        None => None,
    };
    Ok(LongloraTask {
        passkey: recipe.evaluation.passkey.clone(),
        perplexity,
        seed: recipe.seed,
        store,
        config: HfConfig::Decoder { arch, rope_factor },
        model,
        lora,
        base: m.path.clone(),
        tokenizer,
        template,
        eos,
        pad,
        side: recipe.data.padding_side,
        loader,
        validation,
        eval_batch: micro,
        best: recipe.evaluation.best_metric,
        recipe: recipe.clone(),
        device,
    })
}

/// Drops examples whose prompt fills `max_length`, leaving no token for the loss (their mean
/// loss would be 0/0), and says how many.
fn with_targets<T>(
    path: &str,
    examples: Vec<(T, Example)>,
    max_length: usize,
) -> Vec<(T, Example)> {
    let before = examples.len();
    let kept: Vec<(T, Example)> = examples
        .into_iter()
        .filter(|(_, e)| e.labels.iter().any(|&l| l != IGNORE))
        .collect();
    if kept.len() < before {
        eprintln!(
            "warning: {path}: {} of {before} examples have no target token within data.max_length {max_length} and are left out",
            before - kept.len()
        );
    }
    kept
}

impl LongloraTask {
    /// LongLoRA's sliding-window perplexity of the texts in `data` (joined with EOS) at each
    /// context length.
    pub fn perplexity_of(
        &self,
        data: &Path,
        lengths: &[usize],
        stride: usize,
    ) -> Result<Vec<(usize, Option<f64>)>> {
        let mut stream = Vec::new();
        for text in packing::read_texts(data)? {
            stream.extend(self.tokenizer.encode(&text, true)?);
            stream.push(self.eos);
        }
        Ok(lengths
            .iter()
            .map(|&l| {
                (
                    l,
                    perplexity::sliding_window(&self.model, &stream, l, stride),
                )
            })
            .collect())
    }

    /// Summed loss over the validation target tokens of `share`'s examples, and their count
    /// (token-weighted across batches).
    fn validation_loss(&self, share: EvalShare) -> (f64, f64) {
        let (mut total, mut tokens) = (0.0, 0i64);
        let mine: Vec<&Example> = (self.validation.iter().enumerate())
            .filter(|(i, _)| share.takes(*i))
            .map(|(_, (_, e))| e)
            .collect();
        tch::no_grad(|| {
            for members in mine.chunks(self.eval_batch.max(1)) {
                let batch = collate(members, self.pad, self.side, 1).to_device(self.device);
                let losses = self.model.causal_lm_loss(
                    &self.model.embed(&batch.input_ids),
                    Some(&batch.attention_mask),
                    &batch.labels,
                    &Tape::plain(),
                    false,
                );
                total += losses.sums.sum(Kind::Double).double_value(&[]);
                tokens += losses.counts.sum(Kind::Int64).int64_value(&[]);
            }
        });
        (total, tokens as f64)
    }

    /// The model's greedy answer to an item, next to the expected one.
    fn answer(&self, item: &instruction::Item) -> Result<String> {
        let prompt = self
            .tokenizer
            .encode(&instruction::prompt(self.template, item), true)?;
        let ids = Tensor::from_slice(&prompt)
            .view([1, -1])
            .to_device(self.device);
        let options = GenerateOptions {
            max_new_tokens: 24,
            strategy: Strategy::Greedy,
            eos: Some(self.eos),
            pad: self.pad,
            seed: 0,
        };
        let out = generate::decoder_only(&self.model, &ids, None, &options);
        let out = Vec::<i64>::try_from(out.view([-1]).to_device(Device::Cpu))
            .map_err(|e| anyhow!("reading generated tokens: {e}"))?;
        let answer = self.tokenizer.decode(&out, true)?;
        Ok(format!(
            "{}\n\n→ {answer}\n\n(expected: {})",
            item.instruction, item.output
        ))
    }
}

impl Task for LongloraTask {
    fn stores(&self) -> Vec<(&'static str, &ParamStore)> {
        vec![("", &self.store)]
    }

    fn device(&self) -> Device {
        self.device
    }

    /// Random tokens filling `micro_batch_size × max_length`, the batch the PyTorch script
    /// draws too.
    fn bench_batch(&self) -> Batch {
        let r = &self.recipe;
        let (b, t) = (r.training.micro_batch_size as i64, r.data.max_length as i64);
        tch::manual_seed(r.seed as i64);
        let ids = Tensor::randint(
            r.model.arch.vocab_size as i64,
            [b, t],
            (Kind::Int64, self.device),
        );
        Batch {
            attention_mask: ids.ones_like(),
            labels: ids.shallow_clone(),
            input_ids: ids,
            extra: Vec::new(),
        }
    }

    /// The decoder as transformers builds it from the config.json runner would save.
    fn pytorch_reference(&self) -> std::result::Result<serde_json::Value, String> {
        let r = &self.recipe;
        let config = HfConfig::Decoder {
            arch: r.model.arch.clone(),
            rope_factor: r.model.rope_factor(r.data.max_length),
        };
        Ok(serde_json::json!({
            "task": "causal_lm",
            "model": { "config": config_json(&config) },
        }))
    }

    fn loader(&self) -> &Loader {
        &self.loader
    }

    fn loss<'a>(&'a self, batch: &Batch, tape: &Tape<'a>, _step: u64) -> Tensor {
        let embeds = self.model.embed(&batch.input_ids);
        self.model
            .causal_lm_loss(
                &embeds,
                Some(&batch.attention_mask),
                &batch.labels,
                tape,
                true,
            )
            .mean
    }

    /// Validation loss (token-weighted over every example) and its perplexity, LongLoRA's
    /// sliding-window perplexity and passkey accuracy when the plan asks, and one greedy
    /// answer to look at.
    fn evaluate(&self, share: EvalShare) -> Result<Evaluation> {
        let mut partials = Vec::new();
        let mut samples = Vec::new();
        if !self.validation.is_empty() {
            let (total, tokens) = self.validation_loss(share);
            partials.push(Partial::new("loss", total, tokens, Reading::Mean));
            partials.push(Partial::new(
                "perplexity",
                total,
                tokens,
                Reading::ExpOfMean,
            ));
        }
        if let (Some((Some(item), _)), true) = (self.validation.first(), share.takes(0)) {
            samples.push(("generation".to_string(), self.answer(item)?));
        }
        if let Some((stream, p)) = &self.perplexity {
            for &length in &p.context_lengths {
                let (length, stride) = (length as usize, p.stride as usize);
                let sums = perplexity::window_losses(&self.model, stream, length, stride, |i| {
                    share.takes(i)
                });
                if let Some((total, count)) = sums {
                    let name = format!("perplexity_{length}");
                    partials.push(Partial::new(name, total, count, Reading::ExpOfMean));
                }
            }
        }
        if let Some(p) = &self.passkey {
            let (mut correct, mut trials) = (0.0, 0.0);
            for &length in &p.context_lengths {
                let (c, t) = passkey::correct(
                    &self.model,
                    &self.tokenizer,
                    length as usize,
                    p.trials,
                    self.seed,
                    |i| share.takes(i),
                )?;
                let name = format!("passkey_accuracy_{length}");
                partials.push(Partial::new(name, c, t, Reading::Mean));
                (correct, trials) = (correct + c, trials + t);
            }
            // Every length has the same number of trials: the mean of the lengths' accuracies.
            partials.push(Partial::new(
                "passkey_accuracy",
                correct,
                trials,
                Reading::Mean,
            ));
        }
        Ok(Evaluation {
            partials,
            samples,
            ..Evaluation::default()
        })
    }

    fn shares_evaluation(&self) -> bool {
        true
    }

    fn best_metric(&self) -> (&'static str, bool) {
        match self.best {
            Metric::Loss => ("loss", false),
            Metric::Perplexity => ("perplexity", false),
            Metric::PasskeyAccuracy => ("passkey_accuracy", true),
        }
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let (lora, base) = (self.lora.as_ref(), self.base.as_deref());
        super::save_result(dir, &self.store, &self.config, lora, base, "CAUSAL_LM")
    }
}

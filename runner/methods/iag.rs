//! `iag_distill` (IAG / IMcQA, arXiv 2403.15268): a T5 student that answers from the question
//! and an imagined context, distilled from a Fusion-in-Decoder T5 teacher that reads retrieved
//! passages. Loss, as IAG's code: `α·KD + (1−α)·CE`, KD = KL(teacher ‖ student) on decoder
//! logits at an annealed temperature, averaged over every target position.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::alignment::{self, Traces};
use super::inputs::Inputs;
use crate::data::batch::Batch;
use crate::data::loader::{Loader, MakeBatch};
use crate::data::qa::{self, QaItem};
use crate::data::tokenizer::Tokenizer;
use crate::eval::metrics::{exact_match, f1};
use crate::models::adapters::attached::Features;
use crate::models::adapters::hyperlora;
use crate::models::adapters::lora::{self, LoraSpec};
use crate::models::adapters::whitening::{mean_pool, Whitening};
use crate::models::generate::{self, GenerateOptions, Strategy};
use crate::models::hf_folder::{config_json, HfConfig};
use crate::models::loss::{cross_entropy, IGNORE};
use crate::models::t5::{shift_right, T5};
use crate::models::{fid, hf_model, Compute, ParamStore, Tape};
use crate::plan::common::tokenizer_file;
use crate::plan::kinds::iag::{AlphaOn, Method, Metric};
use crate::plan::recipe::IagRecipe;
use crate::plan::training::Adapter;
use crate::train::task::{EvalShare, Evaluation, Partial, Reading, Task};

/// One tokenized question: the teacher's passages, the student's input and the target.
struct QaExample {
    /// `n_context` rows of exactly `passage_max_length` ids (pad 0), and their lengths.
    passages: Vec<Vec<i64>>,
    passage_lengths: Vec<usize>,
    student: Vec<i64>,
    target: Vec<i64>,
    /// HyperLoRA's whitened question features, when the student has hypernetworks.
    features: Option<Vec<f32>>,
}

pub struct IagTask {
    student_store: ParamStore,
    student: T5,
    teacher_store: ParamStore,
    teacher: T5,
    teacher_trains: bool,
    student_config: HfConfig,
    teacher_config: HfConfig,
    lora: Option<LoraSpec>,
    hyper: Option<Hyper>,
    base: Option<String>,
    tokenizer: Tokenizer,
    eos: i64,
    loader: Loader,
    /// Training batches with student inputs padded to `model.student.max_length`: what
    /// `runner bench` times, a step of the plan's full size.
    full_length: MakeBatch,
    make: MakeBatch,
    validation: Vec<QaItem>,
    eval_batch: usize,
    max_new_tokens: i64,
    best: Metric,
    method: Method,
    device: Device,
}

/// A HyperLoRA student's per-batch features and the whitening that made them.
struct Hyper {
    features: Features,
    whitening: Whitening,
    adapter: Adapter,
}

/// `text` as ids ending in EOS, at most `max` of them (the tokenizer's truncation keeps EOS).
fn ids_with_eos(tokenizer: &Tokenizer, text: &str, eos: i64, max: usize) -> Result<Vec<i64>> {
    let mut ids = tokenizer.encode(text, false)?;
    ids.truncate(max.saturating_sub(1));
    ids.push(eos);
    Ok(ids)
}

/// Builds the teacher, the student and the data of an `iag_distill` plan. `teacher_dir` is
/// the trained teacher's folder when the plan names a teacher recipe.
pub fn build(recipe: &IagRecipe, inputs: &Inputs, device: Device) -> Result<IagTask> {
    let teacher_dir = match inputs.run("model.teacher.recipe") {
        Some(run) => {
            let dir = run.join("teacher");
            if !dir.join("config.json").is_file() {
                bail!(
                    "{}: the teacher recipe's run has no trained teacher\n  hint: a teacher recipe trains its teacher (model.teacher.train: true)",
                    run.display()
                );
            }
            Some(dir)
        }
        None => None,
    };
    let (t, s) = (&recipe.model.teacher, &recipe.model.student);
    let compute = Compute::of(recipe.training.precision);
    let seed = recipe.seed as i64;
    let load_or_init = |path: Option<&Path>,
                        arch: &crate::plan::arch::T5Arch,
                        seed: i64|
     -> Result<(HfConfig, ParamStore)> {
        let config = HfConfig::T5(arch.clone());
        match path {
            Some(p) => {
                let (found, store) = hf_model::load(p, device, compute.weights)?;
                let same = matches!(&found, HfConfig::T5(a) if a.normalized() == arch.normalized());
                if !same {
                    bail!("{}/config.json describes another T5 than the plan's arch\n  hint: make the plan's arch match the checkpoint", p.display());
                }
                Ok((config, store))
            }
            None => Ok((
                config.clone(),
                hf_model::random(&config, seed, device, compute.weights),
            )),
        }
    };
    let teacher_path = t.path.as_deref().map(Path::new).or(teacher_dir.as_deref());
    let (teacher_config, teacher_store) = load_or_init(teacher_path, &t.arch, seed + 1)?;
    teacher_store.set_trainable(|_, _| t.train);
    let (student_config, mut student_store) =
        load_or_init(s.path.as_deref().map(Path::new), &s.arch, seed)?;
    let teacher = T5::new(&teacher_store, &t.arch, compute.activations)?;

    let tokenizer = s.tokenizer.as_deref().or(t.tokenizer.as_deref());
    let tokenizer_path = tokenizer_file(tokenizer, s.path.as_deref())
        .context("model.student.tokenizer: none given (the plan checks this)")?;
    let tokenizer = Tokenizer::load(&tokenizer_path)?;
    let eos = tokenizer.id("</s>")?;
    let pad = tokenizer.id("<pad>")?;
    let encode = |item: &QaItem| -> Result<QaExample> {
        let length = t.passage_max_length as usize;
        let mut passages = Vec::new();
        let mut passage_lengths = Vec::new();
        for text in item.passages(t.n_context as usize, recipe.data.sort_by_score) {
            let mut ids = ids_with_eos(&tokenizer, &text, eos, length)?;
            passage_lengths.push(ids.len());
            ids.resize(length, pad);
            passages.push(ids);
        }
        let input =
            item.student_input(s.context_field.as_deref(), s.context_skip_chars as usize)?;
        Ok(QaExample {
            passages,
            passage_lengths,
            student: ids_with_eos(&tokenizer, &input, eos, s.max_length as usize)?,
            target: ids_with_eos(
                &tokenizer,
                item.target(),
                eos,
                recipe.data.answer_max_length as usize,
            )?,
            features: None,
        })
    };
    let train_items = qa::read(Path::new(&recipe.data.train))?;
    if train_items.is_empty() {
        bail!("{}: no training questions", recipe.data.train);
    }
    let mut train: Vec<QaExample> = train_items.iter().map(encode).collect::<Result<_>>()?;
    let validation = qa::read(Path::new(&recipe.data.validation))?;
    let mut validation_examples: Vec<QaExample> =
        validation.iter().map(encode).collect::<Result<_>>()?;

    let adapter = &recipe.training.adapter;
    let lora = LoraSpec::of(adapter);
    let mut hyper = None;
    match (adapter, &lora) {
        (Adapter::Full, _) => student_store.set_trainable(|_, _| true),
        (_, Some(spec)) => {
            lora::attach(&mut student_store, spec, seed)?;
        }
        (Adapter::Hyperlora { whiten_dim, .. }, None) => {
            // Features come from the student's initial encoder (IAG: a frozen pretrained
            // t5-base, which is the student's start in the paper's setting).
            let initial = T5::new(&student_store, &s.arch, compute.activations)?;
            let question = |item: &QaItem| -> Result<Vec<i64>> {
                let text = format!("Question: {}\nAnswer:", item.question);
                ids_with_eos(&tokenizer, &text, eos, s.max_length as usize)
            };
            let pooled = |items: &[QaItem]| -> Result<Tensor> {
                let ids: Vec<Vec<i64>> = items.iter().map(question).collect::<Result<_>>()?;
                pooled_encodings(&initial, &ids, pad, device)
            };
            let train_pooled = pooled(&train_items)?;
            let whitening = Whitening::fit(&train_pooled, i64::from(*whiten_dim))
                .context("training.adapter.whiten_dim: whitening the question features")?;
            attach_features(&mut train, &whitening.transform(&train_pooled))?;
            attach_features(
                &mut validation_examples,
                &whitening.transform(&pooled(&validation)?),
            )?;
            let features = hyperlora::attach(&mut student_store, adapter, seed)?;
            hyper = Some(Hyper {
                features,
                whitening,
                adapter: adapter.clone(),
            });
        }
        (Adapter::Lora { .. }, None) => unreachable!("LoraSpec::of reads every lora adapter"),
    }
    let student = T5::new(&student_store, &s.arch, compute.activations)?;
    let shape = Shape {
        n_context: t.n_context as usize,
        passage_length: t.passage_max_length as usize,
        answer_length: recipe.data.answer_max_length as usize,
        // Alignment pairs student and teacher encoder positions one to one (IAG pads both).
        student_length: recipe
            .method
            .alignment
            .is_some()
            .then_some(s.max_length as usize),
        pad,
    };
    let train = Arc::new(train);
    let loader = Loader {
        len: train.len(),
        batch_size: recipe.training.micro_batch_size as usize,
        seed: recipe.seed,
        lengths: None,
        make: batches_of(train.clone(), shape),
    };
    let full_length = batches_of(
        train,
        Shape {
            student_length: Some(s.max_length as usize),
            ..shape
        },
    );
    let eval_make = batches_of(Arc::new(validation_examples), shape);
    Ok(IagTask {
        student_store,
        student,
        teacher_store,
        teacher,
        teacher_trains: t.train,
        student_config,
        teacher_config,
        lora,
        hyper,
        base: s.path.clone(),
        tokenizer,
        eos,
        loader,
        full_length,
        make: eval_make,
        validation,
        eval_batch: recipe.evaluation.batch_size as usize,
        max_new_tokens: recipe.evaluation.max_new_tokens as i64,
        best: recipe.evaluation.best_metric,
        method: recipe.method.clone(),
        device,
    })
}

/// Batches of the given examples, collated to `shape`.
fn batches_of(examples: Arc<Vec<QaExample>>, shape: Shape) -> MakeBatch {
    Arc::new(move |indices: &[usize]| {
        let members: Vec<&QaExample> = indices.iter().map(|&i| &examples[i]).collect();
        collate(&members, shape)
    })
}

/// Mean-pooled final encoder states `[N, d]` of `inputs` (in batches, without gradients).
fn pooled_encodings(t5: &T5, inputs: &[Vec<i64>], pad: i64, device: Device) -> Result<Tensor> {
    let mut pooled = Vec::new();
    for chunk in inputs.chunks(64) {
        let longest = chunk.iter().map(Vec::len).max().unwrap_or(1);
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for x in chunk {
            ids.extend(
                x.iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad, longest - x.len())),
            );
            mask.extend((0..longest).map(|i| i64::from(i < x.len())));
        }
        let shape = [chunk.len() as i64, longest as i64];
        let ids = Tensor::from_slice(&ids).view(shape).to_device(device);
        let mask = Tensor::from_slice(&mask).view(shape).to_device(device);
        let states = tch::no_grad(|| t5.encode(&ids, &mask, &Tape::plain(), false));
        pooled.push(mean_pool(&states, &mask).to_device(Device::Cpu));
    }
    Ok(Tensor::cat(&pooled, 0))
}

/// Stores row i of `features` `[N, k]` in example i.
fn attach_features(examples: &mut [QaExample], features: &Tensor) -> Result<()> {
    for (i, e) in examples.iter_mut().enumerate() {
        let row = features.get(i as i64).to_kind(Kind::Float);
        e.features = Some(Vec::<f32>::try_from(row).map_err(|e| anyhow!("{e}"))?);
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Shape {
    n_context: usize,
    passage_length: usize,
    answer_length: usize,
    /// Pad student inputs to this length instead of the batch's longest.
    student_length: Option<usize>,
    pad: i64,
}

/// Student inputs padded right to the longest; labels padded to `answer_length` with -100 (as
/// FiD's collator); passages `[B, n_context, passage_length]` with their masks, absent passages
/// fully masked.
fn collate(members: &[&QaExample], shape: Shape) -> Batch {
    let b = members.len() as i64;
    let longest = shape
        .student_length
        .unwrap_or_else(|| members.iter().map(|e| e.student.len()).max().unwrap_or(1));
    let (mut ids, mut mask, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    let (mut passages, mut passage_mask) = (Vec::new(), Vec::new());
    for e in members {
        ids.extend(
            e.student
                .iter()
                .copied()
                .chain(std::iter::repeat_n(shape.pad, longest - e.student.len())),
        );
        mask.extend((0..longest).map(|i| i64::from(i < e.student.len())));
        labels.extend(e.target.iter().copied().chain(std::iter::repeat_n(
            IGNORE,
            shape.answer_length - e.target.len(),
        )));
        for k in 0..shape.n_context {
            match (e.passages.get(k), e.passage_lengths.get(k)) {
                (Some(p), Some(&n)) => {
                    passages.extend(p);
                    passage_mask.extend((0..shape.passage_length).map(|i| i64::from(i < n)));
                }
                _ => {
                    passages.extend(std::iter::repeat_n(shape.pad, shape.passage_length));
                    passage_mask.extend(std::iter::repeat_n(0, shape.passage_length));
                }
            }
        }
    }
    let (n, l) = (shape.n_context as i64, shape.passage_length as i64);
    let mut extra = vec![
        ("passage_ids", Tensor::from_slice(&passages).view([b, n, l])),
        (
            "passage_mask",
            Tensor::from_slice(&passage_mask).view([b, n, l]),
        ),
    ];
    let features: Vec<f32> = members
        .iter()
        .filter_map(|e| e.features.as_deref())
        .flatten()
        .copied()
        .collect();
    if !features.is_empty() {
        extra.push(("features", Tensor::from_slice(&features).view([b, -1])));
    }
    Batch {
        input_ids: Tensor::from_slice(&ids).view([b, longest as i64]),
        attention_mask: Tensor::from_slice(&mask).view([b, longest as i64]),
        labels: Tensor::from_slice(&labels).view([b, shape.answer_length as i64]),
        extra,
    }
}

/// IAG's annealed temperature: `T / (1 + ln(step // every + 1))`.
pub fn annealed_temperature(temperature: f64, step: u64, every: u64) -> f64 {
    temperature / (1.0 + ((step / every.max(1)) as f64 + 1.0).ln())
}

/// IAG's `cal_loss`: the mean over every (example, target position) of
/// Σ_v p_t·(log p_t − log p_s), with p = softmax(logits / T) in fp32 and no T² factor;
/// padded positions count, as in the code.
pub fn distillation_kl(student: &Tensor, teacher: &Tensor, temperature: f64) -> Tensor {
    let s = (student.to_kind(Kind::Float) / temperature).log_softmax(-1, Kind::Float);
    let t = (teacher.to_kind(Kind::Float) / temperature).log_softmax(-1, Kind::Float);
    (t.exp() * (&t - s))
        .sum_dim_intlist(-1, false, Kind::Float)
        .mean(Kind::Float)
}

/// The code's extra term (`--use_kl`): `kl = KLDiv(log softmax(s/τ), softmax(t/τ), batchmean) / scale`,
/// added as `sigmoid(kl)·kl`.
pub fn extra_kl(student: &Tensor, teacher: &Tensor, temperature: f64, scale: f64) -> Tensor {
    let batch = student.size()[0] as f64;
    let s = (student.to_kind(Kind::Float) / temperature).log_softmax(-1, Kind::Float);
    let t = (teacher.to_kind(Kind::Float) / temperature).log_softmax(-1, Kind::Float);
    let kl = (t.exp() * (&t - s)).sum(Kind::Float) / batch / scale;
    kl.sigmoid() * &kl
}

impl IagTask {
    /// Points the student's hypernetworks at this batch's question features.
    fn condition(&self, batch: &Batch) {
        if let Some(h) = &self.hyper {
            h.features.set(batch.extra("features"));
        }
    }

    /// Greedy answers of the student (reading its inputs) or the teacher (reading passages).
    fn answers(&self, batch: &Batch, teacher: bool) -> Result<Vec<String>> {
        let options = GenerateOptions {
            max_new_tokens: self.max_new_tokens,
            strategy: Strategy::Greedy,
            eos: Some(self.eos),
            pad: 0,
            seed: 0,
        };
        self.condition(batch);
        let out = tch::no_grad(|| match teacher {
            true => {
                let (encoded, mask) = fid::encode(
                    &self.teacher,
                    batch.extra("passage_ids"),
                    batch.extra("passage_mask"),
                    &Tape::plain(),
                    false,
                );
                generate::encoder_decoder(&self.teacher, &encoded, &mask, &options)
            }
            false => {
                let encoded = self.student.encode(
                    &batch.input_ids,
                    &batch.attention_mask,
                    &Tape::plain(),
                    false,
                );
                generate::encoder_decoder(&self.student, &encoded, &batch.attention_mask, &options)
            }
        });
        let out = out.to_device(Device::Cpu);
        (0..out.size()[0])
            .map(|r| {
                let ids = Vec::<i64>::try_from(out.get(r))
                    .map_err(|e| anyhow!("reading generated tokens: {e}"))?;
                self.tokenizer.decode(&ids, true)
            })
            .collect()
    }
}

impl Task for IagTask {
    fn stores(&self) -> Vec<(&'static str, &ParamStore)> {
        vec![("", &self.student_store), ("teacher.", &self.teacher_store)]
    }

    fn device(&self) -> Device {
        self.device
    }

    fn loader(&self) -> &Loader {
        &self.loader
    }

    /// The first training micro-batch, student inputs padded to their maximum length.
    fn bench_batch(&self) -> Batch {
        (self.full_length)(&self.loader.first_batch()).to_device(self.device)
    }

    /// Both T5s as transformers builds them from the config.json runner would save, and IAG's
    /// loss at the first step's temperature.
    fn pytorch_reference(&self) -> std::result::Result<serde_json::Value, String> {
        if self.hyper.is_some() {
            return Err("HyperLoRA has no PEFT counterpart".to_string());
        }
        let m = &self.method;
        if m.alignment.is_some() {
            return Err("IAG's alignment losses are not in scripts/bench_pytorch.py".to_string());
        }
        Ok(serde_json::json!({
            "task": "fid_distill",
            "model": {
                "student": config_json(&self.student_config),
                "teacher": config_json(&self.teacher_config),
                "teacher_trains": self.teacher_trains,
                "alpha_kd": m.alpha_kd,
                "alpha_on": match m.alpha_on {
                    AlphaOn::Kd => "kd",
                    AlphaOn::Ce => "ce",
                },
                "temperature": annealed_temperature(m.temperature, 0, m.anneal_every_steps),
                "extra_kl": m.extra_kl.as_ref().map(|e| serde_json::json!({
                    "temperature": e.temperature,
                    "scale": e.scale,
                })),
            },
        }))
    }

    fn loss<'a>(&'a self, batch: &Batch, tape: &Tape<'a>, step: u64) -> Tensor {
        self.condition(batch);
        let decoder_ids = shift_right(&batch.labels);
        let (passages, mask) = (batch.extra("passage_ids"), batch.extra("passage_mask"));
        let trains = self.teacher_trains;
        // A trained teacher learns from its own cross-entropy only (its logits are detached
        // below); a frozen one runs without dropout or gradients.
        let (student, student_traces, teacher, teacher_traces) = match &self.method.alignment {
            None => {
                let student = self.student.forward(
                    &batch.input_ids,
                    &batch.attention_mask,
                    &decoder_ids,
                    tape,
                    true,
                );
                let teacher = match trains {
                    true => fid::forward(&self.teacher, passages, mask, &decoder_ids, tape, true),
                    false => tch::no_grad(|| {
                        let plain = Tape::plain();
                        fid::forward(&self.teacher, passages, mask, &decoder_ids, &plain, false)
                    }),
                };
                (student, None, teacher, None)
            }
            Some(_) => {
                let (ids, input_mask) = (&batch.input_ids, &batch.attention_mask);
                let (encoded, encoder) = self.student.encode_traced(ids, input_mask, true);
                let (student, decoder) =
                    self.student
                        .decode_traced(&decoder_ids, &encoded, input_mask, true);
                let traced =
                    || fid::forward_traced(&self.teacher, passages, mask, &decoder_ids, trains);
                let (teacher, t_encoder, t_decoder) = match trains {
                    true => traced(),
                    false => tch::no_grad(traced),
                };
                (
                    student,
                    Some(Traces { encoder, decoder }),
                    teacher,
                    Some(Traces {
                        encoder: t_encoder,
                        decoder: t_decoder,
                    }),
                )
            }
        };
        let ce = cross_entropy(&student, &batch.labels);
        let teacher_ce = trains.then(|| cross_entropy(&teacher, &batch.labels));
        let teacher = teacher.detach();
        let m = &self.method;
        let temperature = annealed_temperature(m.temperature, step, m.anneal_every_steps);
        let kd = distillation_kl(&student, &teacher, temperature);
        let mut loss = match m.alpha_on {
            AlphaOn::Kd => kd * m.alpha_kd + ce * (1.0 - m.alpha_kd),
            AlphaOn::Ce => ce * m.alpha_kd + kd * (1.0 - m.alpha_kd),
        };
        if let Some(extra) = &m.extra_kl {
            loss += extra_kl(&student, &teacher, extra.temperature, extra.scale);
        }
        if let (Some(weights), Some(s), Some(t)) = (&m.alignment, &student_traces, &teacher_traces)
        {
            let n = passages.size()[1];
            let targets = batch.labels.ne(IGNORE);
            loss += alignment::loss(s, t, n, &batch.attention_mask, &targets, weights);
        }
        if let Some(teacher_ce) = teacher_ce {
            loss += teacher_ce;
        }
        loss
    }

    /// Student and teacher exact match and F1 (SQuAD/DPR normalisation, ×100) of greedy
    /// answers, the student's validation loss, and one question to look at.
    fn evaluate(&self, share: EvalShare) -> Result<Evaluation> {
        // Whole batches are shared out, so that each batch's mean loss is the one rank's.
        let n = self.validation.len();
        let size = self.eval_batch.max(1);
        let batches: Vec<Vec<usize>> = (0..n.div_ceil(size))
            .filter(|&k| share.takes(k))
            .map(|k| (k * size..((k + 1) * size).min(n)).collect())
            .collect();
        let (mut em, mut f, mut tem, mut tf) = (0.0, 0.0, 0.0, 0.0);
        let (mut loss, mut tloss) = (0.0, 0.0);
        let mut sample = String::new();
        for indices in &batches {
            let batch = (self.make)(indices).to_device(self.device);
            let student = self.answers(&batch, false)?;
            let teacher = self.answers(&batch, true)?;
            self.condition(&batch);
            let (student_loss, teacher_loss) = tch::no_grad(|| {
                let decoder_ids = shift_right(&batch.labels);
                let plain = Tape::plain();
                let student = self.student.forward(
                    &batch.input_ids,
                    &batch.attention_mask,
                    &decoder_ids,
                    &plain,
                    false,
                );
                let teacher = fid::forward(
                    &self.teacher,
                    batch.extra("passage_ids"),
                    batch.extra("passage_mask"),
                    &decoder_ids,
                    &plain,
                    false,
                );
                (
                    cross_entropy(&student, &batch.labels).double_value(&[]),
                    cross_entropy(&teacher, &batch.labels).double_value(&[]),
                )
            });
            loss += student_loss * indices.len() as f64;
            tloss += teacher_loss * indices.len() as f64;
            for (k, &i) in indices.iter().enumerate() {
                let golds = self.validation[i].golds();
                em += exact_match(&student[k], &golds);
                f += f1(&student[k], &golds);
                tem += exact_match(&teacher[k], &golds);
                tf += f1(&teacher[k], &golds);
                if i == 0 {
                    sample = format!(
                        "{}\n\nstudent → {}\n\nteacher → {}\n\n(gold: {})",
                        self.validation[i].question,
                        student[k],
                        teacher[k],
                        golds.join(" | ")
                    );
                }
            }
        }
        let n = batches.iter().map(Vec::len).sum::<usize>() as f64;
        let samples = match share.takes(0) {
            true => vec![("answers".into(), sample)],
            false => Vec::new(),
        };
        Ok(Evaluation {
            partials: vec![
                Partial::new("exact_match", em, n, Reading::Percent),
                Partial::new("f1", f, n, Reading::Percent),
                Partial::new("teacher_exact_match", tem, n, Reading::Percent),
                Partial::new("teacher_f1", tf, n, Reading::Percent),
                Partial::new("loss", loss, n, Reading::Mean),
                Partial::new("teacher_loss", tloss, n, Reading::Mean),
            ],
            samples,
            ..Evaluation::default()
        })
    }

    fn shares_evaluation(&self) -> bool {
        true
    }

    fn best_metric(&self) -> (&'static str, bool) {
        match self.best {
            Metric::ExactMatch => ("exact_match", true),
            Metric::F1 => ("f1", true),
            Metric::Loss => ("loss", false),
        }
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let (lora, base) = (self.lora.as_ref(), self.base.as_deref());
        super::save_result(
            dir,
            &self.student_store,
            &self.student_config,
            lora,
            base,
            "SEQ_2_SEQ_LM",
        )?;
        if let Some(h) = &self.hyper {
            hyperlora::save(
                &dir.join("hyperlora"),
                &self.student_store,
                &h.adapter,
                &h.whitening,
            )
            .context("saving the hypernetworks")?;
        }
        if self.teacher_trains {
            hf_model::save(
                &dir.join("teacher"),
                &self.teacher_config,
                &self.teacher_store,
            )
            .context("saving the trained teacher")?;
        }
        Ok(())
    }
}

//! `iag_distill` (IAG / IMcQA, arXiv 2403.15268): a T5 student that answers from the question
//! and an imagined context, distilled from a Fusion-in-Decoder T5 teacher that reads retrieved
//! passages. Loss, as IAG's code: `α·KD + (1−α)·CE`, KD = KL(teacher ‖ student) on decoder
//! logits at an annealed temperature, averaged over every target position.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::data::batch::Batch;
use crate::data::loader::{Loader, MakeBatch};
use crate::data::qa::{self, QaItem};
use crate::data::tokenizer::Tokenizer;
use crate::eval::metrics::{exact_match, f1};
use crate::models::generate::{self, GenerateOptions, Strategy};
use crate::models::hf_folder::HfConfig;
use crate::models::lora::{self, LoraSpec};
use crate::models::loss::{cross_entropy, IGNORE};
use crate::models::t5::{shift_right, T5};
use crate::models::{fid, hf_model, Compute, ParamStore, Tape};
use crate::plan::kinds::iag::{AlphaOn, Method, Metric};
use crate::plan::recipe::IagRecipe;
use crate::plan::training::Adapter;
use crate::train::task::{Evaluation, Task};

/// One tokenized question: the teacher's passages, the student's input and the target.
struct QaExample {
    /// `n_context` rows of exactly `passage_max_length` ids (pad 0), and their lengths.
    passages: Vec<Vec<i64>>,
    passage_lengths: Vec<usize>,
    student: Vec<i64>,
    target: Vec<i64>,
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
    base: Option<String>,
    tokenizer: Tokenizer,
    eos: i64,
    loader: Loader,
    make: MakeBatch,
    validation: Vec<QaItem>,
    eval_batch: usize,
    max_new_tokens: i64,
    best: Metric,
    method: Method,
    device: Device,
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
pub fn build(recipe: &IagRecipe, teacher_dir: Option<&Path>, device: Device) -> Result<IagTask> {
    let (t, s) = (&recipe.model.teacher, &recipe.model.student);
    if recipe.method.alignment.is_some() {
        bail!("method.alignment: hidden and attention alignment is not implemented yet; remove it");
    }
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
    let teacher_path = t.path.as_deref().map(Path::new).or(teacher_dir);
    let (teacher_config, teacher_store) = load_or_init(teacher_path, &t.arch, seed + 1)?;
    teacher_store.set_trainable(|_, _| t.train);
    let (student_config, mut student_store) =
        load_or_init(s.path.as_deref().map(Path::new), &s.arch, seed)?;
    let lora = LoraSpec::of(&recipe.training.adapter);
    match (&recipe.training.adapter, &lora) {
        (Adapter::Full, _) => student_store.set_trainable(|_, _| true),
        (_, Some(spec)) => {
            lora::attach(&mut student_store, spec, seed)?;
        }
        (_, None) => bail!("training.adapter: hyperlora is not implemented yet; use lora or full"),
    }
    let teacher = T5::new(&teacher_store, &t.arch, compute.activations)?;
    let student = T5::new(&student_store, &s.arch, compute.activations)?;

    let tokenizer_path = s
        .tokenizer
        .as_deref()
        .or(t.tokenizer.as_deref())
        .map(Path::new)
        .map(Path::to_path_buf)
        .or_else(|| s.path.as_ref().map(|p| Path::new(p).join("tokenizer.json")))
        .ok_or_else(|| {
            anyhow!(
                "model.student.tokenizer: a randomly initialised student needs a tokenizer.json"
            )
        })?;
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
        })
    };
    let train_items = qa::read(Path::new(&recipe.data.train))?;
    if train_items.is_empty() {
        bail!("{}: no training questions", recipe.data.train);
    }
    let train: Vec<QaExample> = train_items.iter().map(encode).collect::<Result<_>>()?;
    let validation = qa::read(Path::new(&recipe.data.validation))?;
    let validation_examples: Vec<QaExample> =
        validation.iter().map(encode).collect::<Result<_>>()?;
    let shape = Shape {
        n_context: t.n_context as usize,
        passage_length: t.passage_max_length as usize,
        answer_length: recipe.data.answer_max_length as usize,
        pad,
    };
    let train = Arc::new(train);
    let loader = Loader {
        len: train.len(),
        batch_size: recipe.training.micro_batch_size as usize,
        seed: recipe.seed,
        lengths: None,
        make: batches_of(train, shape),
    };
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
        base: s.path.clone(),
        tokenizer,
        eos,
        loader,
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

#[derive(Clone, Copy)]
struct Shape {
    n_context: usize,
    passage_length: usize,
    answer_length: usize,
    pad: i64,
}

/// Student inputs padded right to the longest; labels padded to `answer_length` with -100 (as
/// FiD's collator); passages `[B, n_context, passage_length]` with their masks, absent passages
/// fully masked.
fn collate(members: &[&QaExample], shape: Shape) -> Batch {
    let b = members.len() as i64;
    let longest = members.iter().map(|e| e.student.len()).max().unwrap_or(1);
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
    Batch {
        input_ids: Tensor::from_slice(&ids).view([b, longest as i64]),
        attention_mask: Tensor::from_slice(&mask).view([b, longest as i64]),
        labels: Tensor::from_slice(&labels).view([b, shape.answer_length as i64]),
        extra: vec![
            ("passage_ids", Tensor::from_slice(&passages).view([b, n, l])),
            (
                "passage_mask",
                Tensor::from_slice(&passage_mask).view([b, n, l]),
            ),
        ],
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
    /// Greedy answers of the student (reading its inputs) or the teacher (reading passages).
    fn answers(&self, batch: &Batch, teacher: bool) -> Result<Vec<String>> {
        let options = GenerateOptions {
            max_new_tokens: self.max_new_tokens,
            strategy: Strategy::Greedy,
            eos: Some(self.eos),
            pad: 0,
            seed: 0,
        };
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

    fn loss<'a>(&'a self, batch: &Batch, tape: &Tape<'a>, step: u64) -> Tensor {
        let decoder_ids = shift_right(&batch.labels);
        let student = self.student.forward(
            &batch.input_ids,
            &batch.attention_mask,
            &decoder_ids,
            tape,
            true,
        );
        let ce = cross_entropy(&student, &batch.labels);
        let (passages, mask) = (batch.extra("passage_ids"), batch.extra("passage_mask"));
        let (teacher, teacher_ce) = match self.teacher_trains {
            true => {
                let logits = fid::forward(&self.teacher, passages, mask, &decoder_ids, tape, true);
                let ce = cross_entropy(&logits, &batch.labels);
                (logits.detach(), Some(ce))
            }
            false => (
                tch::no_grad(|| {
                    fid::forward(
                        &self.teacher,
                        passages,
                        mask,
                        &decoder_ids,
                        &Tape::plain(),
                        false,
                    )
                }),
                None,
            ),
        };
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
        if let Some(teacher_ce) = teacher_ce {
            loss += teacher_ce;
        }
        loss
    }

    /// Student and teacher exact match and F1 (SQuAD/DPR normalisation, ×100) of greedy
    /// answers, the student's validation loss, and one question to look at.
    fn evaluate(&self) -> Result<Evaluation> {
        let n = self.validation.len();
        let (mut em, mut f, mut tem, mut tf, mut loss) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let mut sample = String::new();
        for start in (0..n).step_by(self.eval_batch.max(1)) {
            let indices: Vec<usize> = (start..(start + self.eval_batch).min(n)).collect();
            let batch = (self.make)(&indices).to_device(self.device);
            let student = self.answers(&batch, false)?;
            let teacher = self.answers(&batch, true)?;
            loss += tch::no_grad(|| {
                let logits = self.student.forward(
                    &batch.input_ids,
                    &batch.attention_mask,
                    &shift_right(&batch.labels),
                    &Tape::plain(),
                    false,
                );
                cross_entropy(&logits, &batch.labels).double_value(&[])
            }) * indices.len() as f64;
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
        let pct = |x: f64| 100.0 * x / n.max(1) as f64;
        Ok(Evaluation {
            metrics: vec![
                ("exact_match".into(), pct(em)),
                ("f1".into(), pct(f)),
                ("teacher_exact_match".into(), pct(tem)),
                ("teacher_f1".into(), pct(tf)),
                ("loss".into(), loss / n.max(1) as f64),
            ],
            samples: vec![("answers".into(), sample)],
        })
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

//! `kind: iag_distill`: Imagination-Augmented Generation (IAG / IMcQA, arXiv 2403.15268).
//! A Fusion-in-Decoder T5 teacher reads retrieved passages; a T5 student answers from the
//! question and an imagined context, trained by distillation from the teacher.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::plan::arch::T5Arch;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "IagDistill")]
pub enum Kind {
    IagDistill,
}

/// The teacher and the student.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "IagModels")]
pub struct Models {
    pub teacher: Teacher,
    pub student: Student,
}

/// The FiD reader: each of `n_context` passages encoded on its own, the encoder outputs
/// concatenated for the decoder's cross-attention.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Teacher {
    /// An HF folder (config.json + safetensors) of a trained FiD reader. Set this or `recipe`.
    #[serde(default)]
    pub path: Option<String>,
    /// A recipe (path from the project root, like data paths) whose finished run supplies the
    /// teacher; it is trained first if needed.
    #[serde(default)]
    pub recipe: Option<String>,
    /// tokenizer.json to use; null means the one in `path`.
    #[serde(default)]
    pub tokenizer: Option<String>,
    pub arch: T5Arch,
    /// Passages per question, the highest-scored first.
    #[serde(default = "n_context")]
    #[schemars(range(min = 1))]
    pub n_context: u32,
    /// Tokens per passage (`question: … title: … context: …`), padded to this length.
    #[serde(default = "max_len")]
    #[schemars(range(min = 1))]
    pub passage_max_length: u64,
    /// Train the teacher with the student (IAG's --train_teacher), from `path`, `recipe`'s
    /// result, or from scratch when neither is given; frozen otherwise.
    #[serde(default)]
    pub train: bool,
}

/// The T5 student that reads `question \n context` without retrieved passages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Student {
    /// An HF folder to start from; null initialises randomly from `arch`.
    #[serde(default)]
    pub path: Option<String>,
    /// tokenizer.json to use; null means the one in `path`.
    #[serde(default)]
    pub tokenizer: Option<String>,
    pub arch: T5Arch,
    /// The data field holding the imagined context (`pred`, or `compressed_ctxs_N`); null is closed-book.
    #[serde(default = "pred")]
    pub context_field: Option<String>,
    /// Characters cut from the front of the context (IAG cuts the 194-character instruction of compressed prompts).
    #[serde(default)]
    pub context_skip_chars: u64,
    /// Tokens of `question \n context`, truncated to this length.
    #[serde(default = "max_len")]
    #[schemars(range(min = 1))]
    pub max_length: u64,
}

fn n_context() -> u32 {
    10
}
fn max_len() -> u64 {
    256
}
fn pred() -> Option<String> {
    Some("pred".into())
}

/// FiD/DPR JSON: `{question, answers, target?, ctxs: [{title, text, score}]}` plus `pred`
/// and `compressed_ctxs_N` for the imagined contexts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "IagData")]
pub struct Data {
    pub train: String,
    pub validation: String,
    #[serde(default)]
    pub test: Option<String>,
    /// Target tokens; padded positions are ignored by the loss.
    #[serde(default = "max_len")]
    #[schemars(range(min = 1))]
    pub answer_max_length: u64,
    /// Sort passages by `score`, highest first, before taking n_context.
    #[serde(default = "yes")]
    pub sort_by_score: bool,
}

fn yes() -> bool {
    true
}

/// When and how the student is evaluated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "IagEvaluation")]
pub struct Evaluation {
    /// Evaluate every this many optimizer steps.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub every_steps: Option<u64>,
    /// Evaluate every this fraction of an epoch (IAG's val_check_interval 0.5).
    #[serde(default)]
    pub every_epochs: Option<f64>,
    #[serde(default = "eval_batch")]
    #[schemars(range(min = 1))]
    pub batch_size: u32,
    /// Greedy decoding length.
    #[serde(default = "fifty")]
    #[schemars(range(min = 1))]
    pub max_new_tokens: u64,
    /// The metric that picks the best checkpoint.
    #[serde(default)]
    pub best_metric: Metric,
    /// Also evaluate the untrained model before the first step (step 0), as the baseline.
    #[serde(default)]
    pub at_start: bool,
}

impl Default for Evaluation {
    fn default() -> Self {
        Evaluation {
            every_steps: None,
            every_epochs: None,
            batch_size: eval_batch(),
            max_new_tokens: fifty(),
            best_metric: Metric::default(),
            at_start: false,
        }
    }
}

fn eval_batch() -> u32 {
    8
}
fn fifty() -> u64 {
    50
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "IagMetric")]
pub enum Metric {
    /// Exact match after SQuAD/DPR normalisation (higher is better).
    #[default]
    ExactMatch,
    /// Token F1 (higher is better).
    F1,
    /// Validation loss (lower is better).
    Loss,
}

/// The distillation loss: α·KD + (1−α)·CE, KD = KL(teacher ‖ student) on decoder logits at an
/// annealed temperature T/(1 + ln(step // anneal_every_steps + 1)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "IagMethod")]
pub struct Method {
    /// The weight α of the two loss terms.
    #[serde(default = "alpha_kd")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub alpha_kd: f64,
    /// Which term α weighs: `kd` as IAG's code does (default), or `ce` as the paper's Eq. 6 writes.
    #[serde(default)]
    pub alpha_on: AlphaOn,
    /// Starting distillation temperature.
    #[serde(default = "temperature")]
    pub temperature: f64,
    /// The temperature steps down every this many optimizer steps.
    #[serde(default = "anneal")]
    #[schemars(range(min = 1))]
    pub anneal_every_steps: u64,
    /// The code's extra KL term (`--use_kl`): kl = KL(softmax(t/τ) ‖ softmax(s/τ))/scale, loss += sigmoid(kl)·kl.
    #[serde(default)]
    pub extra_kl: Option<ExtraKl>,
    /// Hidden-state and attention alignment between teacher and student (`--use_attn --use_hidden`).
    #[serde(default)]
    pub alignment: Option<Alignment>,
}

impl Default for Method {
    fn default() -> Self {
        Method {
            alpha_kd: alpha_kd(),
            alpha_on: AlphaOn::default(),
            temperature: temperature(),
            anneal_every_steps: anneal(),
            extra_kl: None,
            alignment: None,
        }
    }
}

fn alpha_kd() -> f64 {
    0.4
}
fn temperature() -> f64 {
    3.0
}
fn anneal() -> u64 {
    500
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlphaOn {
    #[default]
    Kd,
    Ce,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtraKl {
    #[serde(default = "four")]
    pub temperature: f64,
    /// The KL (batch mean) is divided by this.
    #[serde(default = "hundred")]
    pub scale: f64,
}

fn four() -> f64 {
    4.0
}
fn hundred() -> f64 {
    100.0
}

/// Weights of the alignment terms, each averaged over layers (IAG's code: ×10, ÷50, ÷5, ×1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Alignment {
    /// Masked MSE between encoder attention maps.
    #[serde(default = "ten")]
    pub encoder_attention: f64,
    /// Cross-entropy between decoder attention maps.
    #[serde(default = "fiftieth")]
    pub decoder_attention: f64,
    /// Cosine-embedding loss between encoder hidden states.
    #[serde(default = "fifth")]
    pub encoder_hidden: f64,
    /// Cosine-embedding loss between decoder hidden states.
    #[serde(default = "unit")]
    pub decoder_hidden: f64,
}

fn ten() -> f64 {
    10.0
}
fn fiftieth() -> f64 {
    0.02
}
fn fifth() -> f64 {
    0.2
}
fn unit() -> f64 {
    1.0
}

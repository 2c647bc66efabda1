//! `kind: coe_multitask`: Chain-of-Exemplar (ACL 2024): a vision-language model trained on
//! question, rationale and distractor generation, each prompt carrying a retrieved exemplar.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::plan::arch::{Connector, DecoderArch, VisionArch};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "CoeMultitask")]
pub enum Kind {
    CoeMultitask,
}

/// Vision tower → connector → decoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CoeModel")]
pub struct Model {
    /// An HF folder of the whole model (Qwen-VL-Chat); null builds it from the parts.
    #[serde(default)]
    pub path: Option<String>,
    /// tokenizer.json to use; null means the one in `path`.
    #[serde(default)]
    pub tokenizer: Option<String>,
    pub vision: Vision,
    pub connector: Connector,
    pub decoder: DecoderArch,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Vision {
    /// An HF CLIP folder for the tower's weights; null uses `model.path` or random weights.
    #[serde(default)]
    pub path: Option<String>,
    pub arch: VisionArch,
    /// Keep the tower frozen (CoE's fix_vit).
    #[serde(default = "yes")]
    pub frozen: bool,
}

fn yes() -> bool {
    true
}

/// Conversation JSON (`{id, conversations: [{from, value}]}`) with `<img>path</img>` tags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CoeData")]
pub struct Data {
    pub train: String,
    pub validation: String,
    #[serde(default)]
    pub test: Option<String>,
    /// Folder that relative image paths are read from; null means the data file's folder.
    #[serde(default)]
    pub image_root: Option<String>,
    /// The ChatML system turn.
    #[serde(default = "system")]
    pub system_prompt: String,
    /// Tokens per example, image tokens included; padded to this length.
    #[serde(default = "max_length")]
    #[schemars(range(min = 1))]
    pub max_length: u64,
    /// The item field that names an item's category: the answering task's error rates are
    /// reported by it, and `category_weights` weight it.
    #[serde(default = "category")]
    pub category_field: String,
    /// A JSON map `{category: weight}` (an earlier run's `error_rates.json`, as the
    /// MLLM-DataEngine loop uses it), or a recipe (`.yaml`: its finished run's
    /// `error_rates.json`, trained first when missing): training items are drawn category by
    /// category with these weights (a category missing from the map weighs 1); null draws
    /// items uniformly.
    #[serde(default)]
    pub category_weights: Option<String>,
}

fn category() -> String {
    "category".into()
}

fn system() -> String {
    "You are a helpful assistant.".into()
}
fn max_length() -> u64 {
    384
}

/// Generation metrics, overall and by subgroup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CoeEvaluation")]
pub struct Evaluation {
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub every_steps: Option<u64>,
    #[serde(default)]
    pub every_epochs: Option<f64>,
    #[serde(default = "new_tokens")]
    #[schemars(range(min = 1))]
    pub max_new_tokens: u64,
    #[serde(default = "metrics")]
    pub metrics: Vec<TextMetric>,
    /// Data fields to break metrics down by.
    #[serde(default = "subgroups")]
    pub subgroups: Vec<String>,
    /// Generate as CoE's chain: question, then rationale from it, then distractors from both.
    #[serde(default = "yes")]
    pub chain: bool,
    /// The metric that picks the best checkpoint (on the question task).
    #[serde(default = "best")]
    pub best_metric: TextMetric,
    /// Also evaluate the untrained model before the first step (step 0), as the baseline.
    #[serde(default)]
    pub at_start: bool,
}

impl Default for Evaluation {
    fn default() -> Self {
        Evaluation {
            every_steps: None,
            every_epochs: None,
            max_new_tokens: new_tokens(),
            metrics: metrics(),
            subgroups: subgroups(),
            chain: true,
            best_metric: best(),
            at_start: false,
        }
    }
}

fn new_tokens() -> u64 {
    64
}
fn metrics() -> Vec<TextMetric> {
    vec![TextMetric::Bleu4, TextMetric::RougeL, TextMetric::Meteor]
}
fn subgroups() -> Vec<String> {
    ["subject", "grade", "context_type"]
        .map(String::from)
        .to_vec()
}
fn best() -> TextMetric {
    TextMetric::Bleu4
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TextMetric {
    Bleu4,
    RougeL,
    Meteor,
    Loss,
}

/// Exemplar retrieval and the task mixture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CoeMethod")]
pub struct Method {
    #[serde(default)]
    pub retrieval: Retrieval,
    pub tasks: Tasks,
}

/// Score = sum of cosine similarities of the chosen signals; keep those above `threshold`,
/// store the best `top_k`, put the best `in_prompt` into the prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retrieval {
    /// An HF BERT-family sentence encoder folder (mean pooling); null uses TF-IDF.
    #[serde(default)]
    pub embedder: Option<String>,
    #[serde(default = "signals")]
    pub signals: Vec<Signal>,
    #[serde(default = "threshold")]
    pub threshold: f64,
    #[serde(default = "top_k")]
    #[schemars(range(min = 1))]
    pub top_k: u32,
    #[serde(default = "in_prompt")]
    pub in_prompt: u32,
}

impl Default for Retrieval {
    fn default() -> Self {
        Retrieval {
            embedder: None,
            signals: signals(),
            threshold: threshold(),
            top_k: top_k(),
            in_prompt: in_prompt(),
        }
    }
}

fn signals() -> Vec<Signal> {
    vec![Signal::Answer, Signal::Question]
}
fn threshold() -> f64 {
    1.2
}
fn top_k() -> u32 {
    5
}
fn in_prompt() -> u32 {
    1
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    Answer,
    Question,
    Context,
}

/// Task weights in the training mixture; 0 leaves a task out (CoE's released data has no
/// rationale items; answering is not CoE's, but the data-engine loop measures it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tasks {
    pub question: f64,
    pub rationale: f64,
    pub distractor: f64,
    /// Multiple-choice answering (`(B) choice`), scored by the lowest-loss option.
    #[serde(default)]
    pub answer: f64,
    #[serde(default)]
    pub mixing: Mixing,
    /// Sampling temperature for `mixing: temperature` (p ∝ weight^(1/T)).
    #[serde(default = "one")]
    pub temperature: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mixing {
    /// Each task in proportion to its weight.
    #[default]
    Proportional,
    /// Weights sharpened or flattened by `temperature`.
    Temperature,
}

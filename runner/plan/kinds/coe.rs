//! `kind: coe_multitask`: Chain-of-Exemplar (ACL 2024): a vision-language model trained on
//! question, rationale and distractor generation, each prompt carrying a retrieved exemplar.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::plan::checks::Checker;
use crate::plan::common::{is_recipe, tokenizer_file};
use crate::plan::inventory;
use crate::plan::layout::{evaluation_schedule, InputPath, InputRecipe, RecipeKind, RecipeOf};
use crate::plan::parts::{Head, Part};
use crate::plan::training::Adapter;

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
    #[schemars(extend("format" = "path"))]
    pub path: Option<String>,
    /// tokenizer.json to use; null means the one in `path`.
    #[serde(default)]
    #[schemars(extend("format" = "path"))]
    pub tokenizer: Option<String>,
    /// A recipe of the same model whose finished run's trained weights this run starts from:
    /// the MLLM-DataEngine loop's next round fine-tunes the last round's model (trained first
    /// when it has no finished run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "path"))]
    pub continue_from: Option<String>,
    pub vision: Vision,
    pub connector: Connector,
    pub decoder: DecoderArch,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Vision {
    /// An HF CLIP folder for the tower's weights; null uses `model.path` or random weights.
    #[serde(default)]
    #[schemars(extend("format" = "path"))]
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
    #[schemars(extend("format" = "path"))]
    pub train: String,
    #[schemars(extend("format" = "path"))]
    pub validation: String,
    #[serde(default)]
    #[schemars(extend("format" = "path"))]
    pub test: Option<String>,
    /// Folder that relative image paths are read from; null means the data file's folder.
    #[serde(default)]
    #[schemars(extend("format" = "path"))]
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
    #[schemars(extend("format" = "path"))]
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
    #[schemars(range(min = 1, max = 65536))]
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
    #[schemars(extend("format" = "path"))]
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

/// A `coe_multitask` recipe.
pub type CoeRecipe = RecipeOf<Kind, Model, Data, Evaluation, Method>;

impl RecipeKind for CoeRecipe {
    fn check(&self, c: &mut Checker) {
        let m = &self.model;
        c.tokenizer(
            "model.tokenizer",
            tokenizer_file(m.tokenizer.as_deref(), m.path.as_deref()),
            "a model built from parts",
        );
        if m.path.is_some() && m.vision.path.is_some() {
            c.fail(
                &["model.vision.path", "model.path"],
                "model.path is a whole Qwen-VL folder, which already holds the vision tower",
                "set model.vision.path: null, or drop model.path to build the model from parts",
            );
        }
        if matches!(self.training.adapter, Adapter::Hyperlora { .. }) {
            c.fail(
                &["training.adapter.type"],
                "hyperlora is IAG's T5 adapter; coe_multitask trains lora or full",
                "use `type: lora` (on the decoder) or `type: full`",
            );
        }
        c.decoder("model.decoder", &m.decoder);
        c.vision("model.vision.arch", &m.vision.arch);
        if let Connector::Resampler { num_queries, .. } = &m.connector {
            let side = (*num_queries as f64).sqrt().round() as u64;
            if side * side != *num_queries {
                c.fail(&["model.connector.num_queries"], format!("the resampler's queries sit on a square grid (their sin-cos positions), so {num_queries} must be a square"), format!("use {} or {}", side * side, (side + 1) * (side + 1)));
            }
        }
        if let Connector::Resampler { num_heads, .. } = &m.connector {
            if m.decoder.hidden_size % num_heads != 0 {
                c.fail(
                    &["model.connector.num_heads", "model.decoder.hidden_size"],
                    format!(
                        "the resampler's {num_heads} heads do not divide the decoder width {}",
                        m.decoder.hidden_size
                    ),
                    "choose a head count that divides model.decoder.hidden_size",
                );
            }
        }
        let image_tokens = m.connector.tokens_per_image(&m.vision.arch);
        if image_tokens >= self.data.max_length {
            c.fail(&["data.max_length", "model.connector"], format!("one image takes {image_tokens} tokens, leaving no room for text in data.max_length {}", self.data.max_length), "raise data.max_length, or use a resampler with fewer queries");
        }
        let t = &self.method.tasks;
        let weights = [t.question, t.rationale, t.distractor, t.answer];
        if weights.iter().any(|w| *w < 0.0) || weights.iter().sum::<f64>() <= 0.0 {
            c.fail(
                &[
                    "method.tasks.question",
                    "method.tasks.rationale",
                    "method.tasks.distractor",
                    "method.tasks.answer",
                ],
                "task weights must be non-negative and not all zero",
                "give each task a weight of 0 or more, at least one above 0",
            );
        }
        // The best checkpoint is picked on the question task's text metric.
        let best = self.evaluation.best_metric;
        if best != TextMetric::Loss {
            if t.question <= 0.0 {
                c.fail(
                    &["evaluation.best_metric", "method.tasks.question"],
                    format!("the best checkpoint is picked on question_{}, but the question task is not trained", best.name()),
                    "set evaluation.best_metric: loss, or train the question task",
                );
            } else if !self.evaluation.metrics.contains(&best) {
                c.fail(
                    &["evaluation.best_metric", "evaluation.metrics"],
                    format!("the best checkpoint is picked on {}, which evaluation.metrics does not compute", best.name()),
                    "add it to evaluation.metrics, or pick one of them",
                );
            }
        }
        let ret = &self.method.retrieval;
        if ret.in_prompt > ret.top_k {
            c.fail(
                &["method.retrieval.in_prompt", "method.retrieval.top_k"],
                format!(
                    "{} exemplars in the prompt but only the top {} are kept",
                    ret.in_prompt, ret.top_k
                ),
                "keep in_prompt at most top_k",
            );
        }
        if ret.threshold > ret.signals.len() as f64 {
            c.fail(
                &["method.retrieval.threshold", "method.retrieval.signals"],
                format!(
                    "the score sums {} cosine similarities, so it never reaches {}",
                    ret.signals.len(),
                    ret.threshold
                ),
                "lower the threshold or add signals",
            );
        }
    }

    fn parts(&self) -> Vec<Part> {
        let (model, max_length) = (&self.model, self.data.max_length);
        let (v, d) = (&model.vision.arch, &model.decoder);
        vec![
            Part {
                name: "vision",
                params: inventory::vision(v),
                frozen: model.vision.frozen,
                adapted: false,
                stacks: vec![(v.num_hidden_layers, v.patches() + 1, v.hidden_size)],
                head: None,
            },
            Part {
                name: "connector",
                params: inventory::connector(&model.connector, v, d),
                frozen: false,
                adapted: false,
                stacks: vec![],
                head: None,
            },
            Part {
                name: "decoder",
                params: inventory::decoder(d),
                frozen: false,
                adapted: true,
                stacks: vec![(d.num_hidden_layers, max_length, d.hidden_size)],
                head: Some(Head::Fused {
                    vocab: d.vocab_size,
                    tokens: max_length,
                    width: d.hidden_size,
                }),
            },
        ]
    }

    fn input_paths(&self) -> Vec<InputPath> {
        let (m, d) = (&self.model, &self.data);
        let root = d.image_root.clone().unwrap_or_else(|| {
            let folder = std::path::Path::new(&d.train).parent();
            folder.map_or(String::new(), |p| p.display().to_string())
        });
        let weights = [&m.path, &m.vision.path, &self.method.retrieval.embedder];
        let files = [&m.tokenizer, &d.test]
            .into_iter()
            .chain(
                d.category_weights
                    .iter()
                    .filter(|w| !is_recipe(w))
                    .map(|_| &d.category_weights),
            )
            .flatten();
        let mut paths: Vec<InputPath> = weights
            .into_iter()
            .flatten()
            .map(|p| InputPath::Folder(p.clone()))
            .collect();
        paths.extend(files.map(|p| InputPath::File(p.clone())));
        for data in [&d.train, &d.validation] {
            paths.push(InputPath::File(data.clone()));
            paths.push(InputPath::ImagesOf {
                data: data.clone(),
                root: root.clone(),
            });
        }
        paths
    }

    /// `data.category_weights` may name an earlier round's recipe, whose run writes the
    /// error rates; `model.continue_from` one whose trained weights this run starts from.
    fn input_recipes(&self) -> Vec<InputRecipe> {
        let from = self.model.continue_from.iter().map(|path| InputRecipe {
            key: "model.continue_from",
            name: "continued_run",
            path: path.clone(),
            needs: TRAINED_WEIGHTS,
            from: "a coe_multitask recipe of the same model",
        });
        let weights = self.data.category_weights.iter();
        let weights = weights.filter(|w| is_recipe(w)).map(|path| InputRecipe {
            key: "data.category_weights",
            name: "category_weights_run",
            path: path.clone(),
            needs: ERROR_RATES,
            from: "a coe_multitask recipe that trains the answering task (method.tasks.answer > 0)",
        });
        from.chain(weights).collect()
    }

    fn leaves(&self) -> Vec<&'static str> {
        let rates = (self.method.tasks.answer > 0.0).then_some(ERROR_RATES);
        [TRAINED_WEIGHTS].into_iter().chain(rates).collect()
    }
}

/// What every run leaves: its trained weights, the last checkpoint's.
pub const TRAINED_WEIGHTS: &str = "trained weights (its last checkpoint)";

/// What a round that trains answering leaves for the next: its error rates per category.
const ERROR_RATES: &str = "error rates (error_rates.json)";

evaluation_schedule!(Evaluation);

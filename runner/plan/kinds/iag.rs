//! `kind: iag_distill`: Imagination-Augmented Generation (IAG / IMcQA, arXiv 2403.15268).
//! A Fusion-in-Decoder T5 teacher reads retrieved passages; a T5 student answers from the
//! question and an imagined context, trained by distillation from the teacher.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::plan::checks::Checker;
use crate::plan::common::tokenizer_file;
use crate::plan::inventory;
use crate::plan::layout::{evaluation_schedule, InputPath, InputRecipe, RecipeKind, RecipeOf};
use crate::plan::parts::{Head, Part};
use crate::plan::training::Adapter;

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
    #[schemars(extend("format" = "path"))]
    pub path: Option<String>,
    /// A recipe (path from the project root, like data paths) whose finished run supplies the
    /// teacher; it is trained first if needed.
    #[serde(default)]
    #[schemars(extend("format" = "path"))]
    pub recipe: Option<String>,
    /// tokenizer.json to use; null means the one in `path`.
    #[serde(default)]
    #[schemars(extend("format" = "path"))]
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
    #[schemars(extend("format" = "path"))]
    pub path: Option<String>,
    /// tokenizer.json to use; null means the one in `path`.
    #[serde(default)]
    #[schemars(extend("format" = "path"))]
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
    #[schemars(extend("format" = "path"))]
    pub train: String,
    #[schemars(extend("format" = "path"))]
    pub validation: String,
    #[serde(default)]
    #[schemars(extend("format" = "path"))]
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
    #[schemars(range(min = 1, max = 65536))]
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

/// An `iag_distill` recipe.
pub type IagRecipe = RecipeOf<Kind, Models, Data, Evaluation, Method>;

impl RecipeKind for IagRecipe {
    fn check(&self, c: &mut Checker) {
        c.t5("model.student.arch", &self.model.student.arch);
        c.t5("model.teacher.arch", &self.model.teacher.arch);
        let t = &self.model.teacher;
        // A teacher trained here may start from nothing; a frozen one must come from somewhere.
        let given = usize::from(t.path.is_some()) + usize::from(t.recipe.is_some());
        if given > 1 || (given == 0 && !t.train) {
            c.fail(&["model.teacher.path", "model.teacher.recipe"], "the teacher needs exactly one of `model.teacher.path` and `model.teacher.recipe` (or neither, with `model.teacher.train: true`, to train it from scratch)", "give the HF folder of a trained FiD reader, or the recipe that trains it");
        }
        let s = &self.model.student;
        let tokenizer = s.tokenizer.as_deref().or(t.tokenizer.as_deref());
        c.tokenizer(
            "model.student.tokenizer",
            tokenizer_file(tokenizer, s.path.as_deref()),
            "a randomly initialised student",
        );
        if t.arch.vocab_size != s.arch.vocab_size {
            c.fail(&["model.student.arch.vocab_size", "model.teacher.arch.vocab_size"], format!("teacher and student vocabularies differ ({} and {}): distillation compares their logits token by token", t.arch.vocab_size, s.arch.vocab_size), "use one tokenizer for both, as IAG does (T5's)");
        }
        if let (Some(a), Some(b)) = (&t.tokenizer, &s.tokenizer) {
            if a != b {
                c.fail(
                    &["model.student.tokenizer", "model.teacher.tokenizer"],
                    "teacher and student name different tokenizers: distillation needs one",
                    "point both at the same tokenizer.json",
                );
            }
        }
        if let Adapter::Hyperlora { whiten_dim, .. } = &self.training.adapter {
            if u64::from(*whiten_dim) > s.arch.d_model {
                c.fail(&["training.adapter.whiten_dim"], format!("HyperLoRA whitens the student encoder's {}-dimensional features, so it keeps at most {} components, not {whiten_dim}", s.arch.d_model, s.arch.d_model), format!("use `whiten_dim: {}` or less (IAG keeps 255 of T5-base's 768)", s.arch.d_model.saturating_sub(1)));
            }
        }
        if self.method.alignment.is_some() {
            if t.passage_max_length != s.max_length {
                c.fail(&["method.alignment", "model.student.max_length", "model.teacher.passage_max_length"], format!("alignment compares student and teacher encoder states position by position, but the student reads {} tokens and each passage {}", s.max_length, t.passage_max_length), "give both the same length (IAG: 256)");
            }
            if self.training.gradient_checkpointing {
                c.fail(&["method.alignment", "training.gradient_checkpointing"], "alignment keeps every layer's states and attention maps, which gradient checkpointing would recompute", "turn one of them off");
            }
            if self.training.distributed.shards_weights() {
                c.fail(&["method.alignment", "training.distributed.zero_stage"], "alignment runs every block outside the checkpoint segments in which ZeRO-3 gathers a block's sharded weights", "use zero_stage: 2, or drop `method.alignment`");
            }
        }
        if self.method.alignment.is_some()
            && (t.arch.num_layers != s.arch.num_layers
                || t.arch.num_heads != s.arch.num_heads
                || t.arch.d_model != s.arch.d_model)
        {
            c.fail(&["method.alignment", "model.student.arch.num_layers", "model.teacher.arch.num_layers"], "hidden and attention alignment pair teacher and student layers, heads and state widths one to one, but they differ", "use teacher and student of the same size, or drop `method.alignment`");
        }
    }

    fn parts(&self) -> Vec<Part> {
        let (s, t) = (&self.model.student, &self.model.teacher);
        let answer = self.data.answer_max_length;
        vec![
            Part {
                name: "student",
                params: inventory::t5(&s.arch),
                frozen: false,
                adapted: true,
                stacks: vec![
                    (s.arch.num_layers, s.max_length, s.arch.d_model),
                    (s.arch.decoder_layers(), answer, s.arch.d_model),
                ],
                head: Some(Head::Logits {
                    vocab: s.arch.vocab_size,
                    tokens: answer,
                }),
            },
            Part {
                name: "teacher",
                params: inventory::t5(&t.arch),
                frozen: !t.train,
                adapted: false,
                stacks: vec![
                    (
                        t.arch.num_layers,
                        u64::from(t.n_context) * t.passage_max_length,
                        t.arch.d_model,
                    ),
                    (t.arch.decoder_layers(), answer, t.arch.d_model),
                ],
                head: Some(Head::Logits {
                    vocab: t.arch.vocab_size,
                    tokens: answer,
                }),
            },
        ]
    }

    fn input_paths(&self) -> Vec<InputPath> {
        let (t, s, d) = (&self.model.teacher, &self.model.student, &self.data);
        let weights = [&t.path, &s.path]
            .into_iter()
            .flatten()
            .map(|p| InputPath::Folder(p.clone()));
        let files = [&t.tokenizer, &s.tokenizer, &d.test].into_iter().flatten();
        let data = [&d.train, &d.validation].into_iter();
        weights
            .chain(files.chain(data).map(|p| InputPath::File(p.clone())))
            .collect()
    }

    fn input_recipes(&self) -> Vec<InputRecipe> {
        let teacher = self.model.teacher.recipe.iter();
        teacher
            .map(|path| InputRecipe {
                key: "model.teacher.recipe",
                name: "teacher",
                path: path.clone(),
                needs: TRAINED_TEACHER,
                from: "an iag_distill recipe with model.teacher.train: true",
            })
            .collect()
    }

    fn leaves(&self) -> Vec<&'static str> {
        Vec::from_iter(self.model.teacher.train.then_some(TRAINED_TEACHER))
    }
}

/// What a teacher recipe's run leaves for a student's: the trained FiD reader.
const TRAINED_TEACHER: &str = "trained teacher (teacher/)";

evaluation_schedule!(Evaluation);

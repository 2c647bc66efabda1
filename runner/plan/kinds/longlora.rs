//! `kind: longlora_sft`: long-context fine-tuning as LongLoRA defines it (arXiv 2309.12307):
//! shifted sparse attention in training, linear RoPE position interpolation, LoRA plus
//! trainable embeddings and norms, or full fine-tuning (as SciQAG ran it).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::plan::checks::Checker;
use crate::plan::common::tokenizer_file;
use crate::plan::inventory;
use crate::plan::layout::{evaluation_schedule, InputPath, RecipeKind, RecipeOf};
use crate::plan::parts::{Head, Part};
use crate::plan::training::Adapter;

use crate::plan::arch::DecoderArch;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "LongloraSft")]
pub enum Kind {
    LongloraSft,
}

/// The decoder being extended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "LongloraModel")]
pub struct Model {
    /// An HF folder (config.json + safetensors); null initialises randomly from `arch`.
    #[serde(default)]
    #[schemars(extend("format" = "path"))]
    pub path: Option<String>,
    /// tokenizer.json to use; null means the one in `path`.
    #[serde(default)]
    #[schemars(extend("format" = "path"))]
    pub tokenizer: Option<String>,
    pub arch: DecoderArch,
    #[serde(default)]
    pub rope_scaling: RopeScaling,
}

/// Position interpolation: positions are divided by `factor` so a longer context maps into
/// the trained range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RopeScaling {
    #[serde(rename = "type", default)]
    pub kind: RopeKind,
    /// null means ceil(data.max_length / arch.max_position_embeddings), as LongLoRA sets it.
    #[serde(default)]
    pub factor: Option<f64>,
}

impl Default for RopeScaling {
    fn default() -> Self {
        RopeScaling {
            kind: RopeKind::Linear,
            factor: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RopeKind {
    /// No interpolation.
    None,
    #[default]
    Linear,
}

impl Model {
    /// The interpolation factor in effect for sequences of `max_length` tokens.
    pub fn rope_factor(&self, max_length: u64) -> f64 {
        match (self.rope_scaling.kind, self.rope_scaling.factor) {
            (RopeKind::None, _) => 1.0,
            (RopeKind::Linear, Some(factor)) => factor,
            (RopeKind::Linear, None) => {
                let original = self.arch.max_position_embeddings.max(1);
                (max_length.div_ceil(original)).max(1) as f64
            }
        }
    }
}

/// Instruction data (`{instruction, input?, output}`) or plain text for continued pre-training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "LongloraData")]
pub struct Data {
    pub format: DataFormat,
    #[schemars(extend("format" = "path"))]
    pub train: String,
    #[serde(default)]
    #[schemars(extend("format" = "path"))]
    pub validation: Option<String>,
    /// The prompt template of instruction data.
    #[serde(default)]
    pub template: Template,
    /// Training sequence length (LongLoRA's model_max_length); longer examples are truncated.
    #[schemars(range(min = 1))]
    pub max_length: u64,
    /// The padding token added to the vocabulary, its embedding row set to the mean of the others.
    #[serde(default = "pad")]
    pub pad_token: String,
    #[serde(default)]
    pub padding_side: Side,
    /// Batch examples of similar length together, as transformers' `group_by_length`
    /// (shuffled megabatches of 50 batches, each sorted by length): less padding per batch.
    #[serde(default)]
    pub group_by_length: bool,
}

fn pad() -> String {
    "[PAD]".into()
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// A JSON list of {instruction, input?, output}; loss on the output only.
    Instruction,
    /// Texts joined with EOS and cut into max_length blocks (LongLoRA's context-extension stage).
    PretrainText,
    /// QA-Expert's multi-hop QA items ({question, final_answer, sub_questions [{question,
    /// paragraph, long_answer}], src}) as its retrieve-call dialogue; loss on the assistant turns.
    QaExpert,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    /// `[INST] <<SYS>> … <</SYS>> {instruction} {input} [/INST]`, as LongLoRA's SFT script.
    #[default]
    Llama2Chat,
    /// The instruction and input as they are.
    Plain,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Left,
    #[default]
    Right,
}

/// Perplexity with a sliding window and passkey retrieval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "LongloraEvaluation")]
pub struct Evaluation {
    /// Evaluate validation loss every this many optimizer steps.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub every_steps: Option<u64>,
    /// Evaluate every this fraction of an epoch.
    #[serde(default)]
    pub every_epochs: Option<f64>,
    #[serde(default)]
    pub perplexity: Option<Perplexity>,
    #[serde(default)]
    pub passkey: Option<Passkey>,
    /// The metric that picks the best checkpoint.
    #[serde(default)]
    pub best_metric: Metric,
    /// Also evaluate the untrained model before the first step (step 0), as the baseline.
    #[serde(default)]
    pub at_start: bool,
}

/// LongLoRA's eval.py: windows of `context_lengths` tokens starting every `stride` tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Perplexity {
    /// A token file or a text file.
    #[schemars(extend("format" = "path"))]
    pub data: String,
    pub context_lengths: Vec<u64>,
    #[serde(default = "stride")]
    #[schemars(range(min = 1))]
    pub stride: u64,
}

fn stride() -> u64 {
    256
}

/// The passkey-retrieval test: a number hidden in filler text, asked for at the end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Passkey {
    pub context_lengths: Vec<u64>,
    /// Trials per length, each with a different passkey and position.
    #[serde(default = "trials")]
    #[schemars(range(min = 1))]
    pub trials: u32,
}

fn trials() -> u32 {
    10
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "LongloraMetric")]
pub enum Metric {
    #[default]
    Loss,
    Perplexity,
    PasskeyAccuracy,
}

/// Shifted sparse attention (S²-Attn): attention within groups of `group_fraction × length`
/// tokens, half the heads shifted by half a group; full attention at evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "LongloraMethod")]
pub struct Method {
    /// Use S²-Attn in training; false trains with full attention.
    #[serde(default = "yes")]
    pub shifted_sparse_attention: bool,
    /// Group size as a fraction of the sequence length (LongLoRA: 1/4).
    #[serde(default = "quarter")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub group_fraction: f64,
    /// The SFT script's fixed group size, used when the length is not a multiple of 4096; null
    /// always uses group_fraction.
    #[serde(default)]
    pub sft_group_size: Option<u64>,
}

fn yes() -> bool {
    true
}
fn quarter() -> f64 {
    0.25
}

impl Method {
    /// The S²-Attn group size for sequences of `length` tokens (LongLoRA's SFT rule).
    pub fn group_size(&self, length: u64) -> u64 {
        match self.sft_group_size {
            Some(fixed) if length % 4096 != 0 => fixed,
            _ => (length as f64 * self.group_fraction) as u64,
        }
    }
}

/// A `longlora_sft` recipe.
pub type LongloraRecipe = RecipeOf<Kind, Model, Data, Evaluation, Method>;

impl RecipeKind for LongloraRecipe {
    fn check(&self, c: &mut Checker) {
        let arch = &self.model.arch;
        let m = &self.model;
        c.tokenizer(
            "model.tokenizer",
            tokenizer_file(m.tokenizer.as_deref(), m.path.as_deref()),
            "a randomly initialised model",
        );
        c.decoder("model.arch", arch);
        if arch.family == crate::plan::arch::Family::Qwen {
            c.fail(&["model.arch.family"], "the `qwen` layout is Qwen-VL's language model, which runner saves and loads only inside a coe_multitask model", "use `family: qwen2` (or llama, mistral) for longlora_sft");
        }
        if matches!(self.training.adapter, Adapter::Hyperlora { .. }) {
            c.fail(
                &["training.adapter.type"],
                "hyperlora is IAG's T5 adapter; longlora_sft trains lora or full",
                "use `type: lora` (LongLoRA: q, k, v, o plus embed and norm) or `type: full`",
            );
        }
        let length = self.data.max_length;
        if self.method.shifted_sparse_attention {
            let group = self.method.group_size(length);
            if group == 0 || length % group != 0 {
                c.fail(&["data.max_length", "method.group_fraction", "method.sft_group_size"], format!("S²-Attn splits {length} tokens into groups of {group}, which do not divide it evenly"), "choose a max_length that the group size divides (a multiple of 4 with group_fraction 0.25)");
            } else if group % 2 != 0 {
                c.fail(&["data.max_length", "method.group_fraction"], format!("S²-Attn shifts half the heads by half a group, but the group size {group} is odd"), "choose a max_length whose group size is even");
            }
            if arch.num_attention_heads % 2 != 0 {
                c.fail(
                    &[
                        "model.arch.num_attention_heads",
                        "method.shifted_sparse_attention",
                    ],
                    "S²-Attn shifts half of the attention heads, so their number must be even",
                    "use an even number of heads, or set method.shifted_sparse_attention: false",
                );
            }
        }
        let needed = length.div_ceil(arch.max_position_embeddings.max(1)) as f64;
        let factor = self.model.rope_factor(length);
        if factor < needed {
            c.fail(&["model.rope_scaling.factor", "data.max_length", "model.arch.max_position_embeddings"], format!("RoPE factor {factor} covers {} positions, fewer than data.max_length {length}", (factor * arch.max_position_embeddings as f64) as u64), format!("use factor {needed} (ceil(max_length / max_position_embeddings)), or null to derive it"));
        }
        // Early stopping watches the best metric: it must be measured, or it never stops.
        let missing = match self.evaluation.best_metric {
            _ if self.training.early_stopping.is_none() => None,
            Metric::Loss | Metric::Perplexity if self.data.validation.is_none() => {
                Some(("data.validation", "validation data"))
            }
            Metric::PasskeyAccuracy if self.evaluation.passkey.is_none() => {
                Some(("evaluation.passkey", "a passkey evaluation"))
            }
            _ => None,
        };
        if let Some((key, what)) = missing {
            c.fail(
                &["evaluation.best_metric", key],
                format!("the best metric is never measured: it needs {what}"),
                format!("set {key}, or choose another evaluation.best_metric"),
            );
        }
        if let Some(ppl) = &self.evaluation.perplexity {
            let reach = (factor * arch.max_position_embeddings as f64) as u64;
            if let Some(too_long) = ppl.context_lengths.iter().find(|l| **l > reach) {
                c.fail(&["evaluation.perplexity.context_lengths", "model.rope_scaling.factor"], format!("perplexity at {too_long} tokens exceeds the {reach} positions the model covers"), "drop that length or raise the RoPE factor");
            }
        }
    }

    /// transformers has no S²-Attn: the benchmark compares full attention on both sides.
    fn as_in_pytorch(&mut self) {
        self.method.shifted_sparse_attention = false;
    }

    fn input_paths(&self) -> Vec<InputPath> {
        let (m, d) = (&self.model, &self.data);
        let perplexity = self.evaluation.perplexity.as_ref().map(|p| &p.data);
        let files = [
            m.tokenizer.as_ref(),
            Some(&d.train),
            d.validation.as_ref(),
            perplexity,
        ];
        m.path
            .iter()
            .map(|p| InputPath::Folder(p.clone()))
            .chain(
                files
                    .into_iter()
                    .flatten()
                    .map(|p| InputPath::File(p.clone())),
            )
            .collect()
    }

    fn parts(&self) -> Vec<Part> {
        let a = &self.model.arch;
        vec![Part {
            name: "model",
            params: inventory::decoder(a),
            frozen: false,
            adapted: true,
            stacks: vec![(a.num_hidden_layers, self.data.max_length, a.hidden_size)],
            head: Some(Head::Fused {
                vocab: a.vocab_size,
                tokens: self.data.max_length,
                width: a.hidden_size,
            }),
        }]
    }
}

evaluation_schedule!(Evaluation);

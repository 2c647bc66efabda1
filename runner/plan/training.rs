//! The `training` section every recipe kind shares: optimizer, schedule, batch sizes,
//! accumulation, precision, gradient checkpointing, adapters, checkpoints and early stopping.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the model is trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// Stop after this many optimizer steps. Set this or `epochs`; with both, the first reached stops.
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// Stop after this many passes over the training data (fractions allowed).
    #[serde(default)]
    pub epochs: Option<f64>,
    /// Examples per device in one forward pass.
    #[schemars(range(min = 1))]
    pub micro_batch_size: u32,
    /// Micro-batches whose gradients are summed before one optimizer step.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub grad_accumulation: u32,
    /// Data-parallel devices and how state is sharded over them.
    #[serde(default)]
    pub distributed: Distributed,
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    /// Clip gradients to this global L2 norm; null disables clipping.
    #[serde(default = "default_clip")]
    pub max_grad_norm: Option<f64>,
    /// Numeric precision of weights and compute.
    #[serde(default)]
    pub precision: Precision,
    /// Allow TF32 matrix multiplies on Ampere and newer GPUs (fp32 precision only).
    #[serde(default)]
    pub tf32: bool,
    /// Recompute each layer in the backward pass instead of keeping its activations.
    #[serde(default)]
    pub gradient_checkpointing: bool,
    /// What is trained: all weights, or low-rank adapters plus named extras.
    #[serde(default)]
    pub adapter: Adapter,
    /// Stop when the evaluation metric has not improved for `patience` evaluations.
    #[serde(default)]
    pub early_stopping: Option<EarlyStopping>,
}

fn one() -> u32 {
    1
}

fn default_clip() -> Option<f64> {
    Some(1.0)
}

/// Data parallelism, recorded so that a paper's multi-GPU setup is part of the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Distributed {
    /// Number of data-parallel devices (GPUs); the global batch is micro_batch_size × grad_accumulation × devices.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub devices: u32,
    /// ZeRO stage: 0 none, 1 shards optimizer state, 2 also gradients, 3 also weights.
    #[serde(default)]
    #[schemars(range(max = 3))]
    pub zero_stage: u8,
    /// Keep optimizer state in host memory (DeepSpeed offload_optimizer).
    #[serde(default)]
    pub offload_optimizer: bool,
    /// Keep weights in host memory (DeepSpeed offload_param; ZeRO stage 3 only).
    #[serde(default)]
    pub offload_params: bool,
}

impl Default for Distributed {
    fn default() -> Self {
        Distributed {
            devices: 1,
            zero_stage: 0,
            offload_optimizer: false,
            offload_params: false,
        }
    }
}

/// AdamW with decoupled weight decay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Optimizer {
    /// The optimizer; AdamW is the one the three papers use.
    #[serde(default)]
    pub name: OptimizerName,
    /// Peak learning rate.
    #[schemars(range(min = 0.0))]
    pub lr: f64,
    /// Decoupled weight decay.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub weight_decay: f64,
    /// Adam β1 and β2.
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    /// Adam ε.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Parameters whose names contain any of these get no weight decay.
    #[serde(default = "default_no_decay")]
    pub no_decay: Vec<String>,
}

fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}

fn default_eps() -> f64 {
    1e-8
}

fn default_no_decay() -> Vec<String> {
    vec!["bias".into(), "norm".into()]
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerName {
    #[default]
    Adamw,
}

/// The learning-rate schedule, with the formulas of HF transformers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The schedule's shape after warmup.
    #[serde(rename = "type")]
    pub kind: ScheduleKind,
    /// Linear warmup from 0 over this many steps.
    #[serde(default)]
    pub warmup_steps: Option<u64>,
    /// Linear warmup over this fraction of all steps (instead of warmup_steps).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub warmup_ratio: Option<f64>,
    /// How `warmup_decay` warms up: `log` (DeepSpeed's default, which LongLoRA's DeepSpeed
    /// configs get by not naming one) or `linear`. The transformers kinds warm up linearly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_type: Option<WarmupType>,
}

/// DeepSpeed's `warmup_type`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WarmupType {
    /// `ln(s + 1) / ln(W)`.
    Log,
    /// `s / W`.
    Linear,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// The peak rate throughout (no warmup allowed).
    Constant,
    /// Warmup, then the peak rate.
    ConstantWithWarmup,
    /// Warmup, then linear decay to 0.
    Linear,
    /// Warmup, then half a cosine down to 0.
    Cosine,
    /// DeepSpeed's WarmupDecayLR: warmup, then linear decay to 0.
    WarmupDecay,
}

/// Precision of weights and compute. Loss and softmax statistics are fp32 in every mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// fp32 weights and compute.
    #[default]
    Fp32,
    /// fp32 master weights, bf16 compute (explicit casts).
    Bf16Mixed,
    /// bf16 weights and compute.
    Bf16,
}

/// Which parameters train.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Adapter {
    /// Full fine-tuning: every parameter of the trained model.
    #[default]
    Full,
    /// LoRA (Hu et al.): W + (alpha/rank)·B·A on the target modules; everything else frozen
    /// except parameters whose names contain an `also_train` entry.
    Lora {
        #[schemars(range(min = 1))]
        rank: u32,
        alpha: f64,
        #[serde(default)]
        #[schemars(range(min = 0.0, max = 1.0))]
        dropout: f64,
        /// Module names (or dotted suffixes, as PEFT matches them) that get adapters.
        targets: Vec<String>,
        /// Also train parameters whose names contain any of these (LongLoRA: embed, norm).
        #[serde(default)]
        also_train: Vec<String>,
    },
    /// IAG's HyperLoRA: a hypernetwork makes each target's LoRA factors from whitened,
    /// mean-pooled question features plus the layer index.
    Hyperlora {
        #[schemars(range(min = 1))]
        rank: u32,
        /// Hidden width of the hypernetwork's down and up branches.
        #[serde(default = "hyper_hidden")]
        #[schemars(range(min = 1))]
        hidden: u32,
        /// Whitening components kept from the question features (the index makes one more).
        #[serde(default = "hyper_whiten")]
        #[schemars(range(min = 1))]
        whiten_dim: u32,
        /// Dropout on the frozen projection's output.
        #[serde(default = "hyper_dropout")]
        #[schemars(range(min = 0.0, max = 1.0))]
        dropout: f64,
        /// Module names that get hypernetwork adapters (q, v; wi, wo for the FFN variant).
        targets: Vec<String>,
        /// Stacks whose attention gets adapters: encoder only, or encoder and decoder.
        #[serde(default = "hyper_stacks")]
        stacks: Vec<Stack>,
        /// FFN targets (wi, wo) use rank × this.
        #[serde(default = "hyper_ffn_multiplier")]
        #[schemars(range(min = 1))]
        ffn_rank_multiplier: u32,
        /// Also train parameters whose names contain any of these (IAG: norm, emb).
        #[serde(default)]
        also_train: Vec<String>,
    },
}

fn hyper_hidden() -> u32 {
    8
}
fn hyper_whiten() -> u32 {
    255
}
fn hyper_dropout() -> f64 {
    0.1
}
fn hyper_stacks() -> Vec<Stack> {
    vec![Stack::Encoder]
}
fn hyper_ffn_multiplier() -> u32 {
    8
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stack {
    Encoder,
    Decoder,
}

impl Adapter {
    pub fn targets(&self) -> &[String] {
        match self {
            Adapter::Full => &[],
            Adapter::Lora { targets, .. } | Adapter::Hyperlora { targets, .. } => targets,
        }
    }

    pub fn also_train(&self) -> &[String] {
        match self {
            Adapter::Full => &[],
            Adapter::Lora { also_train, .. } | Adapter::Hyperlora { also_train, .. } => also_train,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Evaluations without improvement before the run stops.
    #[schemars(range(min = 1))]
    pub patience: u32,
    /// The smallest change that counts as an improvement.
    #[serde(default)]
    pub min_delta: f64,
}

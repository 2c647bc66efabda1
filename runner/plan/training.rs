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
    #[schemars(range(min = 1))]
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
    /// Skip (and count) a step whose gradient norm is not finite, as mixed-precision loss
    /// scalers do, instead of stopping the run.
    // Left out of the plan when off, so existing runs keep their plan hashes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_nonfinite_steps: bool,
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

impl Distributed {
    /// Whether the weights themselves are sharded over the devices (ZeRO-3).
    pub fn shards_weights(&self) -> bool {
        self.zero_stage >= 3 && self.devices > 1
    }
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
        /// QLoRA (Dettmers et al.): hold the frozen base linear weights in 4 bits.
        // Left out of the plan when unset, so plans from before QLoRA keep their hashes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quantize: Option<Quantize>,
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

/// 4-bit frozen base weights, as bitsandbytes' `Linear4bit` holds them. Each key may also be
/// spelled as transformers' `BitsAndBytesConfig` spells it (`bnb_4bit_quant_type`,
/// `bnb_4bit_use_double_quant`, `bnb_4bit_compute_dtype`), so a Python config can be copied.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, into = "QuantizeResolved")]
pub struct Quantize {
    /// The 4-bit code book: nf4 (normal float, QLoRA's) or fp4. Default nf4.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub quant_type: Option<QuantType>,
    /// `type` as BitsAndBytesConfig spells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bnb_4bit_quant_type: Option<QuantType>,
    /// Weights per absmax scale: 32, 64, …, 4096. Default 64 (bitsandbytes' for 4 bits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u32>,
    /// Quantise the absmax scales too (8 bits, blocks of 256). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub double_quant: Option<bool>,
    /// `double_quant` as BitsAndBytesConfig spells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bnb_4bit_use_double_quant: Option<bool>,
    /// The kind weights are dequantised into for each matrix multiply. Default bf16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_dtype: Option<ComputeDtype>,
    /// `compute_dtype` as BitsAndBytesConfig spells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bnb_4bit_compute_dtype: Option<ComputeDtype>,
}

/// A `Quantize` as the plan records it: every key under its own name, defaults filled, so
/// both spellings give one plan (and one hash).
#[derive(Serialize, JsonSchema)]
struct QuantizeResolved {
    #[serde(rename = "type")]
    quant_type: QuantType,
    block_size: u32,
    double_quant: bool,
    compute_dtype: ComputeDtype,
}

impl From<Quantize> for QuantizeResolved {
    fn from(q: Quantize) -> Self {
        QuantizeResolved {
            quant_type: q.quant_type(),
            block_size: q.block_size(),
            double_quant: q.double_quant(),
            compute_dtype: q.compute_dtype(),
        }
    }
}

/// Each `Quantize` key that BitsAndBytesConfig names differently, with that name.
pub const BNB_SYNONYMS: [(&str, &str); 3] = [
    ("type", "bnb_4bit_quant_type"),
    ("double_quant", "bnb_4bit_use_double_quant"),
    ("compute_dtype", "bnb_4bit_compute_dtype"),
];

impl Quantize {
    pub fn quant_type(&self) -> QuantType {
        self.quant_type
            .or(self.bnb_4bit_quant_type)
            .unwrap_or(QuantType::Nf4)
    }

    pub fn block_size(&self) -> u32 {
        self.block_size.unwrap_or(64)
    }

    pub fn double_quant(&self) -> bool {
        self.double_quant
            .or(self.bnb_4bit_use_double_quant)
            .unwrap_or(true)
    }

    pub fn compute_dtype(&self) -> ComputeDtype {
        self.compute_dtype
            .or(self.bnb_4bit_compute_dtype)
            .map_or(ComputeDtype::Bf16, ComputeDtype::canonical)
    }

    /// The keys set under both spellings (each pair at most once).
    pub fn set_twice(&self) -> Vec<(&'static str, &'static str)> {
        let twice = [
            self.quant_type.is_some() && self.bnb_4bit_quant_type.is_some(),
            self.double_quant.is_some() && self.bnb_4bit_use_double_quant.is_some(),
            self.compute_dtype.is_some() && self.bnb_4bit_compute_dtype.is_some(),
        ];
        BNB_SYNONYMS
            .into_iter()
            .zip(twice)
            .filter_map(|(pair, both)| both.then_some(pair))
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuantType {
    /// QLoRA's 4-bit NormalFloat: quantiles of N(0, 1), exact zero.
    Nf4,
    /// bitsandbytes' 4-bit float (1 sign, 2 exponent, 1 mantissa bit).
    Fp4,
}

impl QuantType {
    pub fn name(self) -> &'static str {
        match self {
            QuantType::Nf4 => "nf4",
            QuantType::Fp4 => "fp4",
        }
    }
}

/// The block sizes bitsandbytes' 4-bit kernels accept.
pub const BLOCK_SIZES: [u32; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];

/// The dtype of a 4-bit layer's matrix multiplies; `bfloat16` and `float32` are
/// BitsAndBytesConfig's (torch's) names of the same two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ComputeDtype {
    Bf16,
    Fp32,
    Bfloat16,
    Float32,
}

impl ComputeDtype {
    /// `bf16` or `fp32`, whichever name was used.
    pub fn canonical(self) -> ComputeDtype {
        match self {
            ComputeDtype::Bf16 | ComputeDtype::Bfloat16 => ComputeDtype::Bf16,
            ComputeDtype::Fp32 | ComputeDtype::Float32 => ComputeDtype::Fp32,
        }
    }
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

    /// The 4-bit setting of a QLoRA adapter.
    pub fn quantize(&self) -> Option<&Quantize> {
        match self {
            Adapter::Lora { quantize, .. } => quantize.as_ref(),
            _ => None,
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

//! Model architectures, with the field names of the HF `config.json` they mirror, so a plan
//! can be compared with a checkpoint's config and parameters counted without weights.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// T5 encoder-decoder (v1.0 ReLU or v1.1 gated-GELU).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct T5Arch {
    pub vocab_size: u64,
    pub d_model: u64,
    /// Width of each attention head.
    pub d_kv: u64,
    pub d_ff: u64,
    /// Encoder layers.
    pub num_layers: u64,
    /// Decoder layers; null means the same as num_layers.
    #[serde(default)]
    pub num_decoder_layers: Option<u64>,
    pub num_heads: u64,
    #[serde(default = "buckets")]
    pub relative_attention_num_buckets: u64,
    #[serde(default = "max_distance")]
    pub relative_attention_max_distance: u64,
    #[serde(default = "t5_dropout")]
    pub dropout_rate: f64,
    #[serde(default = "t5_eps")]
    pub layer_norm_epsilon: f64,
    /// `relu` (T5 v1.0) or `gated-gelu` (T5 v1.1).
    #[serde(default)]
    pub feed_forward_proj: FeedForward,
    /// Share the input embedding with the output head (v1.0: yes; v1.1: no).
    #[serde(default = "tied")]
    pub tie_word_embeddings: bool,
}

fn buckets() -> u64 {
    32
}
fn max_distance() -> u64 {
    128
}
fn t5_dropout() -> f64 {
    0.1
}
fn t5_eps() -> f64 {
    1e-6
}
fn tied() -> bool {
    true
}

impl T5Arch {
    pub fn decoder_layers(&self) -> u64 {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    /// The same architecture with implicit values spelled out, for comparing a plan's with a
    /// checkpoint's (`num_decoder_layers: null` and `= num_layers` are one model).
    pub fn normalized(&self) -> T5Arch {
        T5Arch {
            num_decoder_layers: Some(self.decoder_layers()),
            ..self.clone()
        }
    }

    /// Sizes the model cannot be built with.
    pub fn problems(&self) -> Vec<ArchProblem> {
        let mut problems = Vec::new();
        // The encoder gives half the buckets to each direction and half of those to exact
        // offsets, so fewer than 4 leaves no exact bucket.
        if self.relative_attention_num_buckets < 4
            || self.relative_attention_max_distance < self.relative_attention_num_buckets / 2
        {
            problems.push(ArchProblem {
                keys: vec!["relative_attention_num_buckets", "relative_attention_max_distance"],
                message: "T5 needs at least 4 position buckets, and a maximum distance of at least half the bucket count".into(),
                hint: "use T5's 32 buckets and 128 distance",
            });
        }
        if self.num_heads == 0 || self.d_kv == 0 {
            problems.push(ArchProblem {
                keys: vec!["num_heads", "d_kv"],
                message: "T5 needs at least one attention head of non-zero width".into(),
                hint: "set num_heads and d_kv from the checkpoint's config.json",
            });
        }
        problems
    }
}

/// An architecture that cannot be built, with the keys involved and a fix.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchProblem {
    pub keys: Vec<&'static str>,
    pub message: String,
    pub hint: &'static str,
}

/// Attention heads must split the width evenly.
pub fn head_problem(width: u64, heads: u64) -> Option<ArchProblem> {
    (heads == 0 || width % heads != 0).then(|| ArchProblem {
        keys: vec!["num_attention_heads", "hidden_size"],
        message: format!("{heads} attention heads do not divide the width {width}"),
        hint: "choose num_attention_heads that divides hidden_size",
    })
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum FeedForward {
    #[default]
    #[serde(rename = "relu")]
    Relu,
    #[serde(rename = "gated-gelu")]
    GatedGelu,
}

/// A decoder-only transformer of the Llama family (Llama, Mistral, Qwen2), or Qwen-7B's own
/// layout as Qwen-VL uses it (fused `c_attn`, `w1`/`w2`/`c_proj`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecoderArch {
    /// Which family's module names and options apply.
    pub family: Family,
    pub vocab_size: u64,
    pub hidden_size: u64,
    /// MLP width. For the `qwen` layout this is config.json's value, twice the width of w1 and w2.
    pub intermediate_size: u64,
    pub num_hidden_layers: u64,
    pub num_attention_heads: u64,
    /// Key/value heads for grouped-query attention; null means one per attention head.
    #[serde(default)]
    pub num_key_value_heads: Option<u64>,
    /// The context length the checkpoint was trained for (before position interpolation).
    pub max_position_embeddings: u64,
    #[serde(default = "rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "rms_eps")]
    pub rms_norm_eps: f64,
    /// Bias on the q, k, v projections (Qwen2, Qwen).
    #[serde(default)]
    pub attention_bias: bool,
    /// Sliding-window attention span (Mistral); null is full attention.
    #[serde(default)]
    pub sliding_window: Option<u64>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

fn rope_theta() -> f64 {
    10000.0
}
fn rms_eps() -> f64 {
    1e-6
}

impl DecoderArch {
    pub fn kv_heads(&self) -> u64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// The same architecture with implicit values spelled out (see [`T5Arch::normalized`]).
    pub fn normalized(&self) -> DecoderArch {
        DecoderArch {
            num_key_value_heads: Some(self.kv_heads()),
            ..self.clone()
        }
    }

    /// Sizes and options the model cannot be built with.
    pub fn problems(&self) -> Vec<ArchProblem> {
        let mut problems: Vec<ArchProblem> =
            head_problem(self.hidden_size, self.num_attention_heads)
                .into_iter()
                .collect();
        let kv = self.kv_heads();
        if kv == 0 || self.num_attention_heads % kv != 0 {
            problems.push(ArchProblem {
                keys: vec!["num_key_value_heads", "num_attention_heads"],
                message: format!("{kv} key/value heads do not divide {} attention heads (grouped-query attention shares each among a whole group)", self.num_attention_heads),
                hint: "choose num_key_value_heads that divides num_attention_heads",
            });
        }
        let head_dim = self.hidden_size / self.num_attention_heads.max(1);
        if head_dim % 2 != 0 {
            problems.push(ArchProblem {
                keys: vec!["hidden_size"],
                message: format!("rotary embeddings rotate pairs of dimensions, but the head width {head_dim} is odd"),
                hint: "choose an even head width",
            });
        }
        if self.sliding_window.is_some() && !matches!(self.family, Family::Mistral | Family::Qwen2)
        {
            problems.push(ArchProblem {
                keys: vec!["sliding_window", "family"],
                message: "sliding-window attention belongs to the Mistral and Qwen2 families"
                    .into(),
                hint: "remove sliding_window or change family",
            });
        }
        if matches!(self.family, Family::Qwen2 | Family::Qwen) && !self.attention_bias {
            problems.push(ArchProblem {
                keys: vec!["attention_bias", "family"],
                message: "Qwen models have a bias on the q, k, v projections; their checkpoints would not load".into(),
                hint: "set attention_bias: true",
            });
        }
        problems
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    /// Qwen-7B / Qwen-VL module layout.
    Qwen,
}

/// A ViT image encoder: CLIP's vision tower, or Qwen-VL's (OpenCLIP's ViT-bigG layout).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VisionArch {
    #[serde(default)]
    pub family: VisionFamily,
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub num_hidden_layers: u64,
    pub num_attention_heads: u64,
    /// Input images are resized to image_size × image_size.
    pub image_size: u64,
    pub patch_size: u64,
    #[serde(default = "channels")]
    pub num_channels: u64,
    #[serde(default = "vit_eps")]
    pub layer_norm_eps: f64,
}

/// Which ViT: the computation and the checkpoint names differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VisionFamily {
    /// transformers' `CLIPVisionModel`: a class token, learned positions, quick-GELU.
    #[default]
    Clip,
    /// Qwen-VL's `visual.py`: no class token, a 16×16 table of learned positions resized
    /// (bicubic) to the patch grid, q/k/v fused per head, exact GELU; its resampler follows.
    QwenVl,
}

fn channels() -> u64 {
    3
}
fn vit_eps() -> f64 {
    1e-5
}

impl VisionArch {
    /// Patches per image.
    pub fn patches(&self) -> u64 {
        (self.image_size / self.patch_size.max(1)).pow(2)
    }
}

/// How image features reach the decoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Connector {
    /// LLaVA-style MLP projector from vision width to decoder width; one token per patch.
    Mlp {
        /// Hidden layers of the projector (1 = linear).
        #[serde(default = "two_layers")]
        #[schemars(range(min = 1))]
        layers: u32,
    },
    /// Qwen-VL's resampler: one cross-attention layer with learned queries; `num_queries` tokens per image.
    Resampler {
        #[schemars(range(min = 1))]
        num_queries: u64,
        #[schemars(range(min = 1))]
        num_heads: u64,
    },
}

fn two_layers() -> u32 {
    2
}

impl Connector {
    /// Decoder tokens each image takes.
    pub fn tokens_per_image(&self, vision: &VisionArch) -> u64 {
        match self {
            Connector::Mlp { .. } => vision.patches(),
            Connector::Resampler { num_queries, .. } => *num_queries,
        }
    }
}

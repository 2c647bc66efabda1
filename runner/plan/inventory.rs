//! Every parameter of a model by its HF name and shape, computed from the architecture alone:
//! the one place where module names are mapped. It counts parameters for `runner plan`,
//! tells which names LoRA targets can match, and later maps checkpoint tensors.

use super::arch::{Connector, DecoderArch, Family, FeedForward, T5Arch, VisionArch, VisionFamily};

/// One parameter tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// The name in HF checkpoints, such as `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    pub shape: Vec<u64>,
    /// The module group it is counted under in reports.
    pub group: Group,
}

impl Param {
    pub fn new(name: String, shape: &[u64], group: Group) -> Param {
        Param {
            name,
            shape: shape.to_vec(),
            group,
        }
    }

    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    /// The module this parameter belongs to (the name without `.weight`/`.bias`), if a linear layer.
    pub fn linear_module(&self) -> Option<&str> {
        (self.shape.len() == 2
            && matches!(
                self.group,
                Group::Attention | Group::Mlp | Group::Connector | Group::Vision
            ))
        .then(|| self.name.strip_suffix(".weight"))
        .flatten()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    Embeddings,
    Attention,
    Mlp,
    Norms,
    Head,
    Vision,
    Connector,
    Adapters,
}

impl Group {
    pub fn name(self) -> &'static str {
        match self {
            Group::Embeddings => "embeddings",
            Group::Attention => "attention",
            Group::Mlp => "mlp",
            Group::Norms => "norms",
            Group::Head => "head",
            Group::Vision => "vision",
            Group::Connector => "connector",
            Group::Adapters => "adapters",
        }
    }
}

struct Builder(Vec<Param>);

impl Builder {
    fn add(&mut self, name: String, shape: &[u64], group: Group) {
        self.0.push(Param::new(name, shape, group));
    }

    /// A linear layer `out × in`, with an optional bias.
    fn linear(&mut self, name: &str, input: u64, output: u64, bias: bool, group: Group) {
        self.add(format!("{name}.weight"), &[output, input], group);
        if bias {
            self.add(format!("{name}.bias"), &[output], group);
        }
    }
}

/// T5 (`T5ForConditionalGeneration`). Tied embeddings appear once, as `shared.weight`, the
/// name PyTorch's `named_parameters` reports, which is what name-based trainable sets match.
pub fn t5(arch: &T5Arch) -> Vec<Param> {
    let mut b = Builder(Vec::new());
    let (d, inner) = (arch.d_model, arch.num_heads * arch.d_kv);
    b.add(
        "shared.weight".into(),
        &[arch.vocab_size, d],
        Group::Embeddings,
    );
    for (stack, layers) in [
        ("encoder", arch.num_layers),
        ("decoder", arch.decoder_layers()),
    ] {
        for i in 0..layers {
            let block = format!("{stack}.block.{i}.layer");
            let mut attention = vec!["SelfAttention"];
            if stack == "decoder" {
                attention.push("EncDecAttention");
            }
            for (j, kind) in attention.iter().enumerate() {
                for proj in ["q", "k", "v"] {
                    b.linear(
                        &format!("{block}.{j}.{kind}.{proj}"),
                        d,
                        inner,
                        false,
                        Group::Attention,
                    );
                }
                b.linear(
                    &format!("{block}.{j}.{kind}.o"),
                    inner,
                    d,
                    false,
                    Group::Attention,
                );
                if i == 0 && *kind == "SelfAttention" {
                    let buckets = arch.relative_attention_num_buckets;
                    b.add(
                        format!("{block}.{j}.{kind}.relative_attention_bias.weight"),
                        &[buckets, arch.num_heads],
                        Group::Attention,
                    );
                }
                b.add(format!("{block}.{j}.layer_norm.weight"), &[d], Group::Norms);
            }
            let ff = attention.len();
            let dense = format!("{block}.{ff}.DenseReluDense");
            match arch.feed_forward_proj {
                FeedForward::Relu => {
                    b.linear(&format!("{dense}.wi"), d, arch.d_ff, false, Group::Mlp)
                }
                FeedForward::GatedGelu => {
                    b.linear(&format!("{dense}.wi_0"), d, arch.d_ff, false, Group::Mlp);
                    b.linear(&format!("{dense}.wi_1"), d, arch.d_ff, false, Group::Mlp);
                }
            }
            b.linear(&format!("{dense}.wo"), arch.d_ff, d, false, Group::Mlp);
            b.add(
                format!("{block}.{ff}.layer_norm.weight"),
                &[d],
                Group::Norms,
            );
        }
        b.add(
            format!("{stack}.final_layer_norm.weight"),
            &[d],
            Group::Norms,
        );
    }
    if !arch.tie_word_embeddings {
        b.add("lm_head.weight".into(), &[arch.vocab_size, d], Group::Head);
    }
    b.0
}

/// A Llama-family decoder with HF names; `qwen` uses Qwen-7B's own layout (`transformer.h.N`).
pub fn decoder(arch: &DecoderArch) -> Vec<Param> {
    let mut b = Builder(Vec::new());
    let h = arch.hidden_size;
    let head_dim = h / arch.num_attention_heads.max(1);
    let kv = arch.kv_heads() * head_dim;
    if arch.family == Family::Qwen {
        b.add(
            "transformer.wte.weight".into(),
            &[arch.vocab_size, h],
            Group::Embeddings,
        );
        let ff = arch.intermediate_size / 2;
        for i in 0..arch.num_hidden_layers {
            let layer = format!("transformer.h.{i}");
            b.add(format!("{layer}.ln_1.weight"), &[h], Group::Norms);
            b.linear(
                &format!("{layer}.attn.c_attn"),
                h,
                3 * h,
                true,
                Group::Attention,
            );
            b.linear(
                &format!("{layer}.attn.c_proj"),
                h,
                h,
                false,
                Group::Attention,
            );
            b.add(format!("{layer}.ln_2.weight"), &[h], Group::Norms);
            b.linear(&format!("{layer}.mlp.w1"), h, ff, false, Group::Mlp);
            b.linear(&format!("{layer}.mlp.w2"), h, ff, false, Group::Mlp);
            b.linear(&format!("{layer}.mlp.c_proj"), ff, h, false, Group::Mlp);
        }
        b.add("transformer.ln_f.weight".into(), &[h], Group::Norms);
    } else {
        b.add(
            "model.embed_tokens.weight".into(),
            &[arch.vocab_size, h],
            Group::Embeddings,
        );
        for i in 0..arch.num_hidden_layers {
            let layer = format!("model.layers.{i}");
            b.linear(
                &format!("{layer}.self_attn.q_proj"),
                h,
                h,
                arch.attention_bias,
                Group::Attention,
            );
            b.linear(
                &format!("{layer}.self_attn.k_proj"),
                h,
                kv,
                arch.attention_bias,
                Group::Attention,
            );
            b.linear(
                &format!("{layer}.self_attn.v_proj"),
                h,
                kv,
                arch.attention_bias,
                Group::Attention,
            );
            // Llama's `attention_bias` also puts a bias on o_proj; Qwen2's biases stop at v.
            b.linear(
                &format!("{layer}.self_attn.o_proj"),
                h,
                h,
                arch.attention_bias && arch.family == Family::Llama,
                Group::Attention,
            );
            b.linear(
                &format!("{layer}.mlp.gate_proj"),
                h,
                arch.intermediate_size,
                false,
                Group::Mlp,
            );
            b.linear(
                &format!("{layer}.mlp.up_proj"),
                h,
                arch.intermediate_size,
                false,
                Group::Mlp,
            );
            b.linear(
                &format!("{layer}.mlp.down_proj"),
                arch.intermediate_size,
                h,
                false,
                Group::Mlp,
            );
            b.add(
                format!("{layer}.input_layernorm.weight"),
                &[h],
                Group::Norms,
            );
            b.add(
                format!("{layer}.post_attention_layernorm.weight"),
                &[h],
                Group::Norms,
            );
        }
        b.add("model.norm.weight".into(), &[h], Group::Norms);
    }
    if !arch.tie_word_embeddings {
        b.add("lm_head.weight".into(), &[arch.vocab_size, h], Group::Head);
    }
    b.0
}

/// A CLIP ViT vision tower (`vision_model.*` of HF `CLIPVisionModel`).
pub fn vision(arch: &VisionArch) -> Vec<Param> {
    if arch.family == VisionFamily::QwenVl {
        return qwen_vl_vision(arch);
    }
    let mut b = Builder(Vec::new());
    let (d, p) = (arch.hidden_size, arch.patch_size);
    let e = "vision_model.embeddings";
    b.add(format!("{e}.class_embedding"), &[d], Group::Vision);
    b.add(
        format!("{e}.patch_embedding.weight"),
        &[d, arch.num_channels, p, p],
        Group::Vision,
    );
    b.add(
        format!("{e}.position_embedding.weight"),
        &[arch.patches() + 1, d],
        Group::Vision,
    );
    let norm = |b: &mut Builder, name: String| {
        b.add(format!("{name}.weight"), &[d], Group::Vision);
        b.add(format!("{name}.bias"), &[d], Group::Vision);
    };
    norm(&mut b, "vision_model.pre_layrnorm".into());
    for i in 0..arch.num_hidden_layers {
        let layer = format!("vision_model.encoder.layers.{i}");
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            b.linear(
                &format!("{layer}.self_attn.{proj}"),
                d,
                d,
                true,
                Group::Vision,
            );
        }
        norm(&mut b, format!("{layer}.layer_norm1"));
        b.linear(
            &format!("{layer}.mlp.fc1"),
            d,
            arch.intermediate_size,
            true,
            Group::Vision,
        );
        b.linear(
            &format!("{layer}.mlp.fc2"),
            arch.intermediate_size,
            d,
            true,
            Group::Vision,
        );
        norm(&mut b, format!("{layer}.layer_norm2"));
    }
    norm(&mut b, "vision_model.post_layernorm".into());
    b.0
}

/// Qwen-VL's tower with its checkpoint names under `transformer.visual.` (which loading strips).
fn qwen_vl_vision(arch: &VisionArch) -> Vec<Param> {
    let mut b = Builder(Vec::new());
    let (d, p) = (arch.hidden_size, arch.patch_size);
    b.add(
        "conv1.weight".into(),
        &[d, arch.num_channels, p, p],
        Group::Vision,
    );
    b.add(
        "positional_embedding".into(),
        &[QWEN_VL_POSITIONS, d],
        Group::Vision,
    );
    let norm = |b: &mut Builder, name: String| {
        b.add(format!("{name}.weight"), &[d], Group::Vision);
        b.add(format!("{name}.bias"), &[d], Group::Vision);
    };
    norm(&mut b, "ln_pre".into());
    for i in 0..arch.num_hidden_layers {
        let block = format!("transformer.resblocks.{i}");
        norm(&mut b, format!("{block}.ln_1"));
        b.linear(
            &format!("{block}.attn.in_proj"),
            d,
            3 * d,
            true,
            Group::Vision,
        );
        b.linear(&format!("{block}.attn.out_proj"), d, d, true, Group::Vision);
        norm(&mut b, format!("{block}.ln_2"));
        let ff = arch.intermediate_size;
        b.linear(&format!("{block}.mlp.c_fc"), d, ff, true, Group::Vision);
        b.linear(&format!("{block}.mlp.c_proj"), ff, d, true, Group::Vision);
    }
    b.0
}

/// Rows of Qwen-VL's learned position table (`visual.py` fixes it at a 16×16 grid).
pub const QWEN_VL_POSITIONS: u64 = 256;

/// The connector from vision width to decoder width.
pub fn connector(connector: &Connector, vision: &VisionArch, decoder: &DecoderArch) -> Vec<Param> {
    let mut b = Builder(Vec::new());
    let (v, h) = (vision.hidden_size, decoder.hidden_size);
    match connector {
        Connector::Mlp { layers } => {
            for i in 0..*layers {
                let input = if i == 0 { v } else { h };
                b.linear(
                    &format!("connector.{}", 2 * i),
                    input,
                    h,
                    true,
                    Group::Connector,
                );
            }
        }
        Connector::Resampler { num_queries, .. } => {
            b.add(
                "connector.query".into(),
                &[*num_queries, h],
                Group::Connector,
            );
            // Fixed 2-D sin-cos positions of the query grid (a frozen parameter in Qwen-VL).
            b.add(
                "connector.pos_embed".into(),
                &[*num_queries, h],
                Group::Connector,
            );
            b.add("connector.proj".into(), &[h, h], Group::Connector);
            b.linear("connector.kv_proj", v, h, false, Group::Connector);
            b.add(
                "connector.attn.in_proj_weight".into(),
                &[3 * h, h],
                Group::Connector,
            );
            b.add(
                "connector.attn.in_proj_bias".into(),
                &[3 * h],
                Group::Connector,
            );
            b.linear("connector.attn.out_proj", h, h, true, Group::Connector);
            for norm in ["ln_q", "ln_kv", "ln_post"] {
                b.add(format!("connector.{norm}.weight"), &[h], Group::Connector);
                b.add(format!("connector.{norm}.bias"), &[h], Group::Connector);
            }
        }
    }
    b.0
}

/// Whether a LoRA target matches a module, as PEFT matches `target_modules`: the whole name,
/// or a dotted suffix of it.
pub fn target_matches(target: &str, module: &str) -> bool {
    module == target || module.ends_with(&format!(".{target}"))
}

/// The distinct short names of the linear modules, for "did you mean" and hints.
pub fn module_names(params: &[Param]) -> Vec<String> {
    let mut names: Vec<String> = params
        .iter()
        .filter_map(Param::linear_module)
        .filter_map(|m| m.rsplit('.').next())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Checkpoint tensors T5 has no parameter for: old checkpoints carry a relative-position table
/// on the first cross-attention, which transformers ignores on loading too.
pub const T5_IGNORED: [&str; 1] =
    ["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"];

/// Checkpoint names that hold a copy of another parameter (tied weights), with the parameter
/// they copy: loading reads them into it when the checkpoint lacks it; saving leaves them out.
pub fn t5_aliases(arch: &T5Arch) -> Vec<(String, String)> {
    let mut aliases = vec![
        ("encoder.embed_tokens.weight".into(), "shared.weight".into()),
        ("decoder.embed_tokens.weight".into(), "shared.weight".into()),
    ];
    if arch.tie_word_embeddings {
        aliases.push(("lm_head.weight".into(), "shared.weight".into()));
    }
    aliases
}

/// As [`t5_aliases`], for decoders.
pub fn decoder_aliases(arch: &DecoderArch) -> Vec<(String, String)> {
    match arch.tie_word_embeddings {
        true => vec![("lm_head.weight".into(), "model.embed_tokens.weight".into())],
        false => Vec::new(),
    }
}

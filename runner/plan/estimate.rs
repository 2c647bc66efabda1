//! What a plan costs, computed from the architecture without allocating a tensor: parameter
//! counts (total and trainable, by part and module group), tokens per optimizer step, and
//! peak memory per device.
//!
//! Activation memory follows Korthikanti et al. 2022 ("Reducing Activation Recomputation in
//! Large Transformer Models"): a transformer layer keeps about 34·s·b·h bytes at 16-bit
//! (17 values per token and hidden unit) with a fused attention kernel (no s² scores kept).
//! With gradient checkpointing a layer keeps only its input, plus one layer recomputed at a time.

use std::collections::BTreeMap;

use serde::Serialize;

use super::hypernet;
use super::inventory::{self, Group, Param};
use super::parts::{Head, Part, LOGITS_PER_CHUNK};
use super::recipe::Recipe;
use super::training::{Adapter, Precision, Quantize, Training};

/// Values a transformer layer keeps per token and hidden unit for its backward pass.
const VALUES_PER_TOKEN_UNIT: u64 = 17;

/// Whether a base parameter trains under the adapter.
pub fn trainable(part: &Part, param: &Param, adapter: &Adapter) -> bool {
    if part.frozen {
        return false;
    }
    match adapter {
        Adapter::Full => true,
        other => other
            .also_train()
            .iter()
            .any(|pattern| param.name.contains(pattern.as_str())),
    }
}

/// Whether QLoRA holds a base parameter in 4 bits: every frozen linear weight of the adapted
/// model (not only the LoRA targets), as transformers' `load_in_4bit` quantises every
/// `nn.Linear` but the head; embeddings, norms and `also_train` parameters keep their kind.
pub fn quantized(part: &Part, param: &Param, adapter: &Adapter) -> bool {
    adapter.quantize().is_some()
        && part.adapted
        && !trainable(part, param, adapter)
        && param.linear_module().is_some()
        && !param.name.contains("relative_attention_bias")
}

/// Bytes of `n` weights in 4 bits: packed nibbles, plus an fp32 absmax per block, or with
/// double quantisation an 8-bit absmax per block plus an fp32 scale per 256 blocks and the
/// offset (bitsandbytes' `QuantState`).
pub fn quantized_bytes(n: u64, q: &Quantize) -> u64 {
    let blocks = n.div_ceil(u64::from(q.block_size()));
    let scales = if q.double_quant() {
        blocks + blocks.div_ceil(256) * 4 + 4
    } else {
        blocks * 4
    };
    n.div_ceil(2) + scales
}

/// The parameters an adapter adds to a part (all trainable).
pub fn adapter_params(part: &Part, adapter: &Adapter) -> Vec<Param> {
    if !part.adapted {
        return Vec::new();
    }
    let lora = |module: &str, r: u64, input: u64, output: u64| {
        [
            Param::new(
                format!("{module}.lora_A.weight"),
                &[r, input],
                Group::Adapters,
            ),
            Param::new(
                format!("{module}.lora_B.weight"),
                &[output, r],
                Group::Adapters,
            ),
        ]
    };
    match adapter {
        Adapter::Full => Vec::new(),
        Adapter::Lora { rank, targets, .. } => part
            .params
            .iter()
            .filter_map(|p| Some((p.linear_module()?, p)))
            .filter(|(m, _)| targets.iter().any(|t| inventory::target_matches(t, m)))
            .flat_map(|(m, p)| lora(m, u64::from(*rank), p.shape[1], p.shape[0]))
            .collect(),
        Adapter::Hyperlora {
            hidden, whiten_dim, ..
        } => {
            // One hypernetwork per adapted block kind, shared across layers (plan/hypernet.rs):
            // Linear(in→hidden) → ReLU → Linear(hidden→d·r) for each of its two factors.
            let input = u64::from(*whiten_dim) + 1;
            let hidden = u64::from(*hidden);
            let mut blocks: Vec<(String, u64, u64, u64)> = Vec::new();
            for p in &part.params {
                let Some(site) = p.linear_module().and_then(|m| hypernet::site(adapter, m)) else {
                    continue;
                };
                if !blocks.iter().any(|b| b.0 == site.net) {
                    blocks.push((site.net, site.rank, p.shape[1], p.shape[0]));
                }
            }
            blocks
                .into_iter()
                .flat_map(|(name, r, input_dim, output_dim)| {
                    let mlp = move |branch: &str, out: u64| {
                        [
                            Param::new(
                                format!("{name}.{branch}.0.weight"),
                                &[hidden, input],
                                Group::Adapters,
                            ),
                            Param::new(
                                format!("{name}.{branch}.0.bias"),
                                &[hidden],
                                Group::Adapters,
                            ),
                            Param::new(
                                format!("{name}.{branch}.2.weight"),
                                &[out, hidden],
                                Group::Adapters,
                            ),
                            Param::new(format!("{name}.{branch}.2.bias"), &[out], Group::Adapters),
                        ]
                    };
                    let mut params = mlp("down", input_dim * r).to_vec();
                    params.extend(mlp("up", r * output_dim));
                    params
                })
                .collect()
        }
    }
}

/// Parameter counts of one part and module group.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GroupCount {
    pub part: String,
    pub group: String,
    pub total: u64,
    pub trainable: u64,
}

/// Bytes per device, by what they hold.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Memory {
    pub weights: u64,
    pub gradients: u64,
    pub optimizer: u64,
    /// Activations kept for the backward pass without gradient checkpointing.
    pub activations: u64,
    /// The same with gradient checkpointing.
    pub activations_checkpointed: u64,
    /// Weights + gradients + optimizer + the activations of the plan's setting.
    pub peak: u64,
}

/// Parameter counts of one part (a model: `student`, `teacher`, `decoder`), all groups added.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PartCount {
    pub part: String,
    pub total: u64,
    pub trainable: u64,
    /// Of `total`, the adapters' (LoRA, HyperLoRA) added to the model's own weights.
    pub adapters: u64,
}

/// Each part's totals, in the order the parts first appear in `groups`.
pub fn part_totals(groups: &[GroupCount]) -> Vec<PartCount> {
    let mut parts: Vec<PartCount> = Vec::new();
    for g in groups {
        let i = match parts.iter().position(|p| p.part == g.part) {
            Some(i) => i,
            None => {
                parts.push(PartCount {
                    part: g.part.clone(),
                    total: 0,
                    trainable: 0,
                    adapters: 0,
                });
                parts.len() - 1
            }
        };
        parts[i].total += g.total;
        parts[i].trainable += g.trainable;
        if g.group == "adapters" {
            parts[i].adapters += g.total;
        }
    }
    parts
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Estimate {
    pub total_params: u64,
    pub trainable_params: u64,
    /// Each model's totals: what a paper quotes (T5-base's 222,903,552) without adding rows.
    pub parts: Vec<PartCount>,
    pub groups: Vec<GroupCount>,
    /// Input tokens the trained model reads per optimizer step, all devices together.
    pub tokens_per_step: u64,
    pub examples_per_step: u64,
    /// Base weights QLoRA holds in 4 bits.
    pub quantized_params: u64,
    pub memory_per_device: Memory,
}

/// What ZeRO-3 holds whole at once, in parameters (all, trainable): the weights outside the
/// blocks for a whole step, and one block (the largest) around its segment.
#[derive(Clone, Copy, Debug, Default)]
struct Gathered {
    params: u64,
    trainable: u64,
}

impl Gathered {
    /// From the trained models' parameters (with whether each trains). A block is what a
    /// name's prefix up to its first number names (`model.layers.3`); towers that run without
    /// checkpoint segments count as blocks here, though they stay whole for the step.
    fn of(params: &[(String, u64, bool)]) -> Gathered {
        let mut units: BTreeMap<Option<String>, Gathered> = BTreeMap::new();
        for &(ref name, numel, trains) in params {
            let parts: Vec<&str> = name.split('.').collect();
            let block = (parts.iter())
                .position(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .map(|i| parts[..=i].join("."));
            let unit = units.entry(block).or_default();
            unit.params += numel;
            unit.trainable += if trains { numel } else { 0 };
        }
        let root = units.remove(&None).unwrap_or_default();
        let block = units
            .into_values()
            .max_by_key(|u| u.params)
            .unwrap_or_default();
        Gathered {
            params: root.params + block.params,
            trainable: root.trainable + block.trainable,
        }
    }
}

/// QLoRA's 4-bit weights: how many, their bytes, and the largest (dequantised one at a time).
#[derive(Clone, Copy, Debug, Default)]
struct FourBit {
    params: u64,
    bytes: u64,
    largest: u64,
}

pub fn estimate(recipe: &Recipe) -> Estimate {
    let training = recipe.training();
    let parts = recipe.parts();
    let mut groups: Vec<GroupCount> = Vec::new();
    let mut count = |part: &str, param: &Param, trains: bool| {
        let group = param.group.name();
        let index = match groups
            .iter()
            .position(|g| g.part == part && g.group == group)
        {
            Some(i) => i,
            None => {
                groups.push(GroupCount {
                    part: part.into(),
                    group: group.into(),
                    total: 0,
                    trainable: 0,
                });
                groups.len() - 1
            }
        };
        groups[index].total += param.numel();
        if trains {
            groups[index].trainable += param.numel();
        }
    };
    let mut four_bit = FourBit::default();
    // The parameters of the models that train (name, count, trains), for ZeRO-3's units.
    let mut trained_params: Vec<(String, u64, bool)> = Vec::new();
    for part in &parts {
        let trained = !part.frozen || part.adapted;
        for param in &part.params {
            let trains = trainable(part, param, &training.adapter);
            count(part.name, param, trains);
            if trained {
                trained_params.push((param.name.clone(), param.numel(), trains));
            }
            if let Some(q) = training
                .adapter
                .quantize()
                .filter(|_| quantized(part, param, &training.adapter))
            {
                four_bit.params += param.numel();
                four_bit.bytes += quantized_bytes(param.numel(), q);
                four_bit.largest = four_bit.largest.max(param.numel());
            }
        }
        for param in adapter_params(part, &training.adapter) {
            count(part.name, &param, true);
            if trained {
                trained_params.push((param.name.clone(), param.numel(), true));
            }
        }
    }
    let gathered = Gathered::of(&trained_params);
    let total_params = groups.iter().map(|g| g.total).sum();
    let trainable_params = groups.iter().map(|g| g.trainable).sum();
    let examples_per_step = u64::from(training.micro_batch_size)
        * u64::from(training.grad_accumulation)
        * u64::from(training.distributed.devices);
    let trained_tokens: u64 = parts
        .iter()
        .filter(|p| p.adapted)
        .flat_map(|p| p.stacks.first())
        .map(|s| s.1)
        .sum();
    Estimate {
        total_params,
        trainable_params,
        parts: part_totals(&groups),
        groups,
        tokens_per_step: examples_per_step * trained_tokens,
        examples_per_step,
        quantized_params: four_bit.params,
        memory_per_device: memory(
            training,
            &parts,
            (total_params, trainable_params),
            four_bit,
            gathered,
        ),
    }
}

fn memory(
    training: &Training,
    parts: &[Part],
    (total, trainable): (u64, u64),
    four_bit: FourBit,
    gathered: Gathered,
) -> Memory {
    let value_bytes: u64 = if training.precision == Precision::Fp32 {
        4
    } else {
        2
    };
    let weight_bytes: u64 = if training.precision == Precision::Bf16 {
        2
    } else {
        4
    };
    let d = &training.distributed;
    let devices = u64::from(d.devices);
    let shard = |bytes: u64, from_stage: u8| {
        if d.zero_stage >= from_stage {
            bytes.div_ceil(devices)
        } else {
            bytes
        }
    };
    // A 4-bit weight is dequantised into the compute kind for its multiply, one at a time.
    let dequantised = four_bit.largest * value_bytes;
    let held = (total - four_bit.params) * weight_bytes + four_bit.bytes + dequantised;
    let weights = if d.offload_params { 0 } else { shard(held, 3) };
    // Under ZeRO a rank keeps its reduced gradients as an fp32 shard.
    let reduced = match d.zero_stage >= 1 && devices > 1 {
        true => (trainable * 4).div_ceil(devices),
        false => 0,
    };
    // ZeRO-3 makes weights whole where they are used, and their gradients whole until reduced.
    let (weights, gradients) = match d.shards_weights() {
        true => (
            weights + gathered.params * weight_bytes,
            reduced + gathered.trainable * weight_bytes,
        ),
        false => (weights, shard(trainable * weight_bytes, 2) + reduced),
    };
    let optimizer = if d.offload_optimizer {
        0
    } else {
        shard(trainable * 8, 1)
    };
    let batch = u64::from(training.micro_batch_size);
    let (mut full, mut checkpointed) = (0, 0);
    for part in parts {
        let trained = !part.frozen || part.adapted;
        for &(layers, tokens, hidden) in &part.stacks {
            let layer = batch * tokens * hidden * VALUES_PER_TOKEN_UNIT * value_bytes;
            if trained {
                full += layers * layer;
                checkpointed += layers * batch * tokens * hidden * value_bytes + layer;
            } else {
                // Forward only, without a graph: its output is kept for the trained part.
                let kept = 2 * batch * tokens * hidden * value_bytes;
                full += kept;
                checkpointed += kept;
            }
        }
        // fp32 logits and their gradient: all of them, or one chunk's and the hidden states'
        // gradient, which the fused head computes in the forward pass and keeps for backward.
        let logits = match &part.head {
            _ if !trained => 0,
            Some(Head::Logits { vocab, tokens }) => 2 * batch * tokens * vocab * 4,
            Some(Head::Fused {
                vocab,
                tokens,
                width,
            }) => {
                2 * (batch * tokens * vocab).min(LOGITS_PER_CHUNK as u64) * 4
                    + batch * tokens * width * value_bytes
            }
            None => 0,
        };
        full += logits;
        checkpointed += logits;
    }
    let activations = if training.gradient_checkpointing {
        checkpointed
    } else {
        full
    };
    Memory {
        weights,
        gradients,
        optimizer,
        activations: full,
        activations_checkpointed: checkpointed,
        peak: weights + gradients + optimizer + activations,
    }
}

//! Parameter counts against the numbers HF transformers reports for the same configs, and the
//! plan's step and memory arithmetic against hand-derived values.

use std::path::Path;

use runner::plan::estimate::estimate;
use runner::plan::resolve;

fn count(recipe: &str, overrides: &[&str]) -> runner::plan::estimate::Estimate {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    estimate(&resolve(Path::new(recipe), &overrides).unwrap().recipe)
}

/// A model's own weights: the plan's total for the part, less the adapters added to it.
fn part_total(e: &runner::plan::estimate::Estimate, part: &str) -> u64 {
    let p = e.parts.iter().find(|p| p.part == part).unwrap();
    p.total - p.adapters
}

#[test]
fn t5_base_and_llama_2_7b_have_their_hf_parameter_counts() {
    // T5ForConditionalGeneration("t5-base").num_parameters() == 222_903_552 (tied head).
    let iag = count("recipes/paper/iag_imcqa_nq_t5_base.yaml", &[]);
    assert_eq!(part_total(&iag, "student"), 222_903_552);
    assert_eq!(part_total(&iag, "teacher"), 222_903_552);
    // LlamaForCausalLM(Llama-2-7b-hf).num_parameters() == 6_738_415_616.
    let llama = count("recipes/paper/longlora_llama2_7b_8k_lora_plus.yaml", &[]);
    assert_eq!(part_total(&llama, "model"), 6_738_415_616);
    // `runner plan` prints each model's total beside its groups.
    let mut out = Vec::new();
    let path = Path::new("recipes/paper/iag_imcqa_nq_t5_base.yaml");
    runner::commands::plan::run(path, &[], runner::commands::Format::Text, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("#   teacher (all)               222,903,552              0\n"),
        "{out}"
    );
    assert!(out.contains("(222,903,552 + 1,339,440 adapters)"), "{out}");
}

#[test]
fn lora_plus_trains_adapters_embeddings_and_norms() {
    let e = count("recipes/paper/longlora_llama2_7b_8k_lora_plus.yaml", &[]);
    // LoRA r8 on q,k,v,o (4096×4096): 32 layers × 4 modules × 8 × (4096 + 4096).
    let lora = 32 * 4 * 8 * (4096 + 4096);
    let embed = 32_000 * 4096;
    let norms = (2 * 32 + 1) * 4096;
    assert_eq!(e.trainable_params, lora + embed + norms);
    // 8 devices × 1 example × 8 accumulation × 8192 tokens.
    assert_eq!(e.tokens_per_step, 8 * 8 * 8192);
}

#[test]
fn memory_follows_precision_sharding_and_checkpointing() {
    let e = count(
        "recipes/tiny/longlora_sft.yaml",
        &[
            "training.adapter={type: full}",
            "training.gradient_checkpointing=false",
        ],
    );
    let m = &e.memory_per_device;
    // fp32: 4 bytes a weight, 4 a gradient, 8 of AdamW moments.
    assert_eq!(m.weights, 4 * e.total_params);
    assert_eq!(m.gradients, 4 * e.trainable_params);
    assert_eq!(m.optimizer, 8 * e.trainable_params);
    // 2 layers × micro-batch 2 × 256 tokens × 64 wide × 17 values × 4 bytes, plus fp32 logits
    // and their gradient (2 × 256 × 512 vocabulary × 4 bytes × 2: within one chunk of the fused
    // head), plus the hidden states' gradient the fused head keeps (2 × 256 × 64 × 4 bytes).
    let layers = 2 * 2 * 256 * 64 * 17 * 4;
    let logits = 2 * 2 * 256 * 512 * 4 + 2 * 256 * 64 * 4;
    assert_eq!(m.activations, layers + logits);
    assert_eq!(
        m.peak,
        m.weights + m.gradients + m.optimizer + m.activations
    );
    // Checkpointed: each layer keeps its input, one layer is recomputed at a time.
    assert_eq!(
        m.activations_checkpointed,
        2 * 2 * 256 * 64 * 4 + layers / 2 + logits
    );

    // ZeRO-2 over 4 devices: each holds a quarter of the gradients and moments, all weights,
    // and its reduced gradients as an fp32 quarter.
    let zero = count(
        "recipes/tiny/longlora_sft.yaml",
        &[
            "training.adapter={type: full}",
            "training.distributed={devices: 4, zero_stage: 2}",
        ],
    );
    assert_eq!(zero.memory_per_device.weights, 4 * e.total_params);
    assert_eq!(
        zero.memory_per_device.gradients,
        2 * (4 * e.trainable_params).div_ceil(4)
    );
    assert_eq!(
        zero.memory_per_device.optimizer,
        (8 * e.trainable_params).div_ceil(4)
    );

    // ZeRO-3: a quarter of every weight, plus, whole, the weights outside the layers
    // (embedding, head, final norm) and one layer (q and o 64×64, k and v 64×32 with 2 KV
    // heads, gate, up and down 64×128, two norms), and their gradients; the reduced gradients
    // as an fp32 quarter.
    let layer = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64;
    let outside = 2 * 512 * 64 + 64;
    assert_eq!(e.total_params, 2 * layer + outside);
    let zero3 = count(
        "recipes/tiny/longlora_sft.yaml",
        &[
            "training.adapter={type: full}",
            "training.distributed={devices: 4, zero_stage: 3}",
        ],
    );
    let whole = 4 * (outside + layer);
    let m3 = &zero3.memory_per_device;
    assert_eq!(m3.weights, (4 * e.total_params).div_ceil(4) + whole);
    assert_eq!(m3.gradients, (4 * e.trainable_params).div_ceil(4) + whole);
    assert_eq!(m3.optimizer, zero.memory_per_device.optimizer);
}

#[test]
fn tied_t5_embeddings_are_named_once_as_shared() {
    // HyperLoRA on encoder self-attention: a down and an up hypernetwork, each
    // Linear(256→8) → Linear(8→768·32 or 32·768).
    let e = count(
        "recipes/paper/iag_imcqa_nq_t5_base.yaml",
        &[
            "training.adapter.stacks=[encoder]",
            "training.adapter.also_train=[norm]",
        ],
    );
    let adapters: u64 = e
        .groups
        .iter()
        .filter(|g| g.group == "adapters")
        .map(|g| g.total)
        .sum();
    let branch = (256 * 8 + 8) + (8 * 768 * 32 + 768 * 32);
    assert_eq!(adapters, 2 * branch);
}

#[test]
fn qlora_counts_frozen_linear_weights_at_half_a_byte_plus_their_absmax() {
    use runner::plan::estimate::quantized_bytes;
    use runner::plan::training::Quantize;
    let nf4 = Quantize::default(); // nf4, blocks of 64, double quantisation
                                   // A 4096 × 4096 weight: 8,388,608 packed bytes; 262,144 blocks with an 8-bit absmax each;
                                   // 1,024 nested fp32 scales; the fp32 offset.
    assert_eq!(
        quantized_bytes(4096 * 4096, &nf4),
        8_388_608 + 262_144 + 1_024 * 4 + 4
    );
    let plain = Quantize {
        double_quant: Some(false),
        block_size: Some(128),
        ..Quantize::default()
    };
    // An odd count: ceil(1001 / 2) bytes, ceil(1001 / 128) fp32 absmax.
    assert_eq!(quantized_bytes(1001, &plain), 501 + 8 * 4);

    // Seed 002's recipe: every linear weight of Mistral-7B in 4 bits, nothing else.
    let e = count("recipes/paper/qa_expert_mistral_7b_qlora.yaml", &[]);
    let (attention, mlp) = (4096 * (4096 + 1024 + 1024 + 4096), 3 * 4096 * 14336);
    assert_eq!(e.quantized_params, 32 * (attention + mlp));
    let dense = count(
        "recipes/paper/qa_expert_mistral_7b_qlora.yaml",
        &["training.adapter.quantize=null"],
    );
    let (q, d) = (e.memory_per_device.weights, dense.memory_per_device.weights);
    assert!(q * 5 < d, "4-bit weights {q} against {d}");
}

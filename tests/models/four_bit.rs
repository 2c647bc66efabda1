//! QLoRA's 4-bit weights against bitsandbytes 0.50.2 (fixtures from
//! scripts/make_qlora_fixtures.py): packed bytes, absmax and its double quantisation, and
//! dequantised values bit for bit; a QLoRA training step against transformers + bitsandbytes
//! + PEFT; a folder transformers saved in 4 bits.

use std::collections::HashMap;
use std::path::Path;

use runner::models::adapters::lora::{self, LoraSpec};
use runner::models::four_bit::{self, Spec};
use runner::models::loss::causal_lm_loss;
use runner::plan::training::QuantType;
use tch::{Kind, Tensor};

use super::{
    eval_logits, expected, fixture, grads, llama, load, max_diff, real_diff, train_logits,
};

fn blocks() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(Path::new("tests/fixtures/nf4/blocks.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

/// The cases of blocks.safetensors: name, spec.
fn cases(fixture: &HashMap<String, Tensor>) -> Vec<(String, Spec)> {
    let mut names: Vec<String> = fixture
        .keys()
        .filter_map(|k| k.strip_suffix(".packed").map(str::to_string))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let spec = Spec {
                quant_type: if name.starts_with("fp4") {
                    QuantType::Fp4
                } else {
                    QuantType::Nf4
                },
                block: if name.contains("_b128") { 128 } else { 64 },
                double_quant: name.contains("_dq"),
            };
            (name, spec)
        })
        .collect()
}

fn same_bytes(ours: &Tensor, theirs: &Tensor, what: &str) {
    assert_eq!(ours.size(), theirs.size(), "{what}: shapes differ");
    assert_eq!(ours.kind(), theirs.kind(), "{what}: kinds differ");
    let differ = ours.ne_tensor(theirs).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(
        differ, 0,
        "{what}: {differ} values differ from bitsandbytes'"
    );
}

#[test]
fn code_books_and_the_dynamic_map_are_bitsandbytes() {
    let f = blocks();
    same_bytes(&Tensor::from_slice(&four_bit::NF4), &f["nf4_code"], "NF4");
    same_bytes(&Tensor::from_slice(&four_bit::FP4), &f["fp4_code"], "FP4");
    same_bytes(
        &Tensor::from_slice(four_bit::dynamic_map()),
        &f["dynamic_map"],
        "the dynamic map",
    );
}

#[test]
fn quantised_bytes_and_absmax_equal_bitsandbytes() {
    let f = blocks();
    let cases = cases(&f);
    assert!(cases.len() >= 16, "{} cases", cases.len());
    for (name, spec) in cases {
        let w = four_bit::quantize(&f[&format!("{name}.input")], spec).unwrap();
        same_bytes(
            &w.packed,
            &f[&format!("{name}.packed")],
            &format!("{name} packed"),
        );
        same_bytes(
            &w.absmax,
            &f[&format!("{name}.absmax")],
            &format!("{name} absmax"),
        );
        match &w.nested {
            Some(n) => {
                same_bytes(
                    &n.absmax,
                    &f[&format!("{name}.nested_absmax")],
                    &format!("{name} nested absmax"),
                );
                same_bytes(
                    &n.offset,
                    &f[&format!("{name}.offset")],
                    &format!("{name} offset"),
                );
            }
            None => assert!(!spec.double_quant, "{name}: no nested state"),
        }
    }
}

#[test]
fn dequantised_weights_equal_bitsandbytes_bit_for_bit() {
    let f = blocks();
    for (name, spec) in cases(&f) {
        let w = four_bit::quantize(&f[&format!("{name}.input")], spec).unwrap();
        let ours = w.dequantize().unwrap();
        same_bytes(
            &ours,
            &f[&format!("{name}.dequant_f32")],
            &format!("{name} fp32"),
        );
        same_bytes(
            &ours.to_kind(Kind::BFloat16),
            &f[&format!("{name}.dequant_bf16")],
            &format!("{name} bf16"),
        );
    }
}

#[test]
fn the_4bit_layer_keeps_no_dequantised_weight_and_gives_the_dense_gradient() {
    let _rng = super::rng_lock();
    tch::manual_seed(3);
    let w = Tensor::randn([96, 80], (Kind::Float, tch::Device::Cpu));
    let spec = Spec {
        quant_type: QuantType::Nf4,
        block: 64,
        double_quant: true,
    };
    let q = four_bit::quantize(&w, spec).unwrap();
    let dense = q.dequantize().unwrap();
    let x = Tensor::randn([3, 5, 80], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let y = q.linear(&x).unwrap();
    assert!(max_diff(&y, &x.linear::<Tensor>(&dense, None)) < 1e-6);
    let g = Tensor::randn([3, 5, 96], (Kind::Float, tch::Device::Cpu));
    (&y * &g).sum(Kind::Float).backward();
    let expected = g.matmul(&dense);
    assert!(max_diff(&x.grad(), &expected) < 1e-5);
}

/// The QLoRA fixture's step: 4-bit NF4 base (double quantisation, fp32 compute) with PEFT's
/// adapters on every linear module.
#[test]
fn a_qlora_step_matches_transformers_bitsandbytes_and_peft() {
    let (config, mut store) = load("llama-qlora-base", Kind::Float);
    let dir = fixture("llama-qlora");
    let spec = lora::load_peft(&dir, &mut store).unwrap();
    let quantize = Spec {
        quant_type: QuantType::Nf4,
        block: 64,
        double_quant: true,
    };
    let n = store.quantize_frozen_linears(quantize).unwrap();
    assert_eq!(n, 14, "every linear module of 2 layers goes to 4 bits");
    assert!(spec.targets.len() == 7);
    let e = expected(&dir);
    let probe = "model.layers.0.self_attn.q_proj.weight";
    let d = max_diff(
        &store.four_bit(probe).unwrap().dequantize().unwrap(),
        &e[&format!("dequant.{probe}")],
    );
    assert_eq!(d, 0.0, "the quantised-at-load weight is bitsandbytes'");

    let model = llama(&config, &store, Kind::Float);
    let logits = train_logits(&model, &e);
    let d = real_diff(&logits, &e);
    assert!(d < 1e-5, "logits differ by {d}");
    let loss = causal_lm_loss(&logits, &e["labels"]);
    assert!(max_diff(&loss.view([1]), &e["loss"]) < 1e-5);
    loss.backward();
    let ours = grads(&store);
    assert_eq!(ours.len(), 28, "only the adapters train");
    for (name, g) in ours {
        let theirs = &e[&format!("grad.base_model.model.{name}")];
        let d = max_diff(&g, theirs);
        assert!(d < 1e-5, "gradient of {name} differs by {d}");
    }
}

#[test]
fn a_folder_transformers_saved_in_4_bits_loads_with_the_same_logits() {
    let (config, store) = load("llama-qlora-base-nf4", Kind::Float);
    assert_eq!(
        store.linear_modules().len(),
        14,
        "every linear module is held"
    );
    assert!(store
        .four_bit("model.layers.1.mlp.down_proj.weight")
        .is_some());
    let e = expected(&fixture("llama-qlora-base-nf4"));
    let model = llama(&config, &store, Kind::Float);
    let d = real_diff(&eval_logits(&model, &e), &e);
    assert!(d < 1e-5, "logits differ by {d}");
}

#[test]
fn lora_on_a_quantised_base_trains_only_the_adapters() {
    let _rng = super::rng_lock();
    let (config, mut store) = load("llama-gqa-rope", Kind::Float);
    let spec = LoraSpec {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        targets: vec!["q_proj".into(), "v_proj".into()],
        also_train: vec!["norm".into()],
        quantize: Some(Spec {
            quant_type: QuantType::Fp4,
            block: 64,
            double_quant: false,
        }),
    };
    let dense = store.bytes();
    lora::attach(&mut store, &spec, 0).unwrap();
    assert!(store
        .four_bit("model.layers.0.self_attn.q_proj.weight")
        .is_some());
    assert!(store.find("model.norm.weight").unwrap().requires_grad());
    assert!(
        store.bytes() < dense,
        "4-bit weights are smaller, adapters included"
    );
    let model = llama(&config, &store, Kind::Float);
    let e = expected(&fixture("llama-gqa-rope"));
    let loss = causal_lm_loss(&train_logits(&model, &e), &e["labels"]);
    loss.backward();
    let trained: Vec<String> = grads(&store).into_iter().map(|(n, _)| n).collect();
    assert!(trained
        .iter()
        .all(|n| n.contains("lora_") || n.contains("norm")));
    assert_eq!(trained.iter().filter(|n| n.contains("lora_")).count(), 8);
}

/// A QLoRA adapter runner saves (on its own 4-bit NF4 base) is committed with runner's logits;
/// scripts/make_qlora_fixtures.py checks that PEFT on bitsandbytes' 4-bit base gives them.
#[test]
fn runner_qlora_adapters_load_in_peft_on_the_4bit_base() {
    let spec = LoraSpec {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        targets: vec!["q_proj".into(), "down_proj".into()],
        also_train: vec!["norm".into()],
        quantize: Some(Spec {
            quant_type: QuantType::Nf4,
            block: 64,
            double_quant: true,
        }),
    };
    super::lora::check_committed_adapter("llama-qlora-base", "llama-qlora-runner-lora", &spec);
}

/// `runner merge` on a base saved in 4 bits folds the adapter into the dequantised weights
/// (QA-Expert's merge_weight.py) and writes a plain HF folder with the QLoRA model's logits.
#[test]
fn runner_merge_folds_a_qlora_adapter_into_the_dequantised_base() {
    let out = tempfile::tempdir().unwrap();
    let merged = out.path().join("merged");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args([
            "merge",
            "tests/fixtures/models/llama-qlora-base-nf4",
            "tests/fixtures/models/llama-qlora",
        ])
        .arg(&merged)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{said}");
    let config = std::fs::read_to_string(merged.join("config.json")).unwrap();
    assert!(!config.contains("quantization_config"), "a plain HF folder");
    let (config, store) = load_dir(&merged);
    assert!(store
        .four_bit("model.layers.0.self_attn.q_proj.weight")
        .is_none());
    let e = expected(&fixture("llama-qlora"));
    let d = real_diff(&eval_logits(&llama(&config, &store, Kind::Float), &e), &e);
    assert!(d < 1e-5, "merged logits differ by {d}");
}

fn load_dir(
    dir: &Path,
) -> (
    runner::models::hf_folder::HfConfig,
    runner::models::ParamStore,
) {
    runner::models::hf_model::load(dir, tch::Device::Cpu, Kind::Float).unwrap()
}

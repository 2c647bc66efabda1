//! The native models against independent references: HF transformers outputs on small random
//! models (tests/fixtures/models, made by scripts/make_fixtures.py), a loop-based LongLoRA
//! S²-Attn, and self-consistency (checkpointing, caches, merging).

mod checkpointing;
mod connector;
mod four_bit;
mod generation;
mod hyperlora;
mod linear_cross_entropy;
mod lora;
mod parity;
mod precision;
mod qwen_vl;
mod shifted_sparse;
mod vlm;
mod weights;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use runner::models::hf_folder::HfConfig;
use runner::models::llama::{DecoderOptions, Llama};
use runner::models::t5::T5;
use runner::models::{hf_model, ParamStore};
use tch::{Device, Kind, Tensor};

/// Where the parity tests run: `RUNNER_TEST_DEVICE=cuda` (`scripts/gpu_check.sh`) puts the
/// models and inputs on the GPU and compares with the same CPU fixtures; the CPU otherwise.
pub fn device() -> Device {
    match std::env::var("RUNNER_TEST_DEVICE").as_deref() {
        Ok("cuda") => Device::Cuda(0),
        _ => Device::Cpu,
    }
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new("tests/fixtures/models").join(name)
}

/// The tensors of a fixture's expected.safetensors, by name, on the test device.
pub fn expected(dir: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("expected.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(name, t)| (name, t.to_device(device())))
        .collect()
}

pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    let on_cpu = |t: &Tensor| t.to_device(Device::Cpu).to_kind(Kind::Double);
    (on_cpu(a) - on_cpu(b)).abs().max().double_value(&[])
}

/// Weights of a fixture model, in `kind`.
pub fn load(name: &str, kind: Kind) -> (HfConfig, ParamStore) {
    hf_model::load(&fixture(name), device(), kind).unwrap()
}

pub fn llama(config: &HfConfig, store: &ParamStore, kind: Kind) -> Llama {
    let HfConfig::Decoder { arch, rope_factor } = config else {
        panic!("not a decoder")
    };
    let options = DecoderOptions {
        rope_factor: *rope_factor,
        ..DecoderOptions::default()
    };
    Llama::new(store, arch, options, kind).unwrap()
}

pub fn t5(config: &HfConfig, store: &ParamStore, kind: Kind) -> T5 {
    let HfConfig::T5(arch) = config else {
        panic!("not a T5")
    };
    T5::new(store, arch, kind).unwrap()
}

/// Every trainable parameter's gradient, by name.
pub fn grads(store: &ParamStore) -> Vec<(String, Tensor)> {
    store
        .trainable()
        .into_iter()
        .map(|(n, t)| (n, t.grad().copy()))
        .collect()
}

/// libtorch's generator is global to the process and tests run in parallel threads: tests
/// that need reproducible draws hold this lock.
pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Evaluation logits of a decoder fixture's batch (`input_ids`, `attention_mask`).
pub fn eval_logits(model: &Llama, e: &HashMap<String, Tensor>) -> Tensor {
    tch::no_grad(|| {
        model.forward(
            &e["input_ids"],
            Some(&e["attention_mask"]),
            &runner::models::Tape::plain(),
            false,
        )
    })
}

/// Training-mode logits of a decoder fixture's batch, with a graph (every fixture's dropout
/// is 0, so they equal the evaluation logits).
pub fn train_logits(model: &Llama, e: &HashMap<String, Tensor>) -> Tensor {
    model.forward(
        &e["input_ids"],
        Some(&e["attention_mask"]),
        &runner::models::Tape::plain(),
        true,
    )
}

/// The largest difference from the fixture's logits over real tokens (padded positions'
/// logits are meaningless in both implementations).
pub fn real_diff(logits: &Tensor, e: &HashMap<String, Tensor>) -> f64 {
    let real = e["attention_mask"].unsqueeze(-1).to_kind(Kind::Float);
    max_diff(&(logits * &real), &(&e["logits"] * &real))
}

//! Recomputation gives the gradients of keeping activations (fp32, within 1e-6), with dropout
//! on: every segment draws the same mask in its recomputation.

use runner::models::adapters::lora::{self, LoraSpec};
use runner::models::hf_folder::HfConfig;
use runner::models::loss::{causal_lm_loss, cross_entropy};
use runner::models::t5::shift_right;
use runner::models::{hf_model, Checkpointing, ParamStore, Tape};
use tch::{Device, Kind, Tensor};

use super::{expected, fixture, grads, llama, load, max_diff, rng_lock, t5};

/// Loss and gradients of one training step in each mode must agree.
fn same_step(step: impl Fn(Checkpointing, i64) -> (f64, Vec<(String, Tensor)>)) {
    let _rng = rng_lock();
    let (loss_off, grads_off) = step(Checkpointing::Off, 11);
    let (loss_re, grads_re) = step(Checkpointing::Recompute, 11);
    assert_eq!(
        loss_off, loss_re,
        "the forward passes draw the same dropout masks"
    );
    assert_eq!(grads_off.len(), grads_re.len());
    for ((name, a), (_, b)) in grads_off.iter().zip(&grads_re) {
        assert!(a.defined(), "{name} has a gradient");
        let d = max_diff(a, b);
        assert!(d < 1e-6, "{name}: gradients differ by {d}");
    }
    // Dropout is really on: another step seed draws other masks.
    let (loss_other, _) = step(Checkpointing::Off, 12);
    assert_ne!(loss_off, loss_other);
}

#[test]
fn t5_recomputation_matches_kept_activations_with_dropout() {
    let (HfConfig::T5(mut arch), _) = load("t5-v1_1", Kind::Float) else {
        panic!()
    };
    arch.dropout_rate = 0.1;
    let config = HfConfig::T5(arch);
    let e = expected(&fixture("t5-v1_1"));
    same_step(|mode, seed| {
        let store = hf_model::random(&config, 3, Device::Cpu, Kind::Float);
        let model = t5(&config, &store, Kind::Float);
        let tape = Tape::training(mode, seed);
        let decoder_ids = shift_right(&e["labels"]);
        let logits = model.forward(
            &e["input_ids"],
            &e["attention_mask"],
            &decoder_ids,
            &tape,
            true,
        );
        let loss = cross_entropy(&logits, &e["labels"]);
        tape.backward(&loss);
        (loss.double_value(&[]), grads(&store))
    });
}

/// One LoRA training step of the fixture Llama's architecture (random weights) must give the
/// same loss and gradients with and without recomputation.
fn llama_lora_same_step(spec: LoraSpec) {
    let (config, _) = load("llama-gqa-rope", Kind::Float);
    let e = expected(&fixture("llama-gqa-rope"));
    same_step(|mode, seed| {
        let mut store = hf_model::random(&config, 3, Device::Cpu, Kind::Float);
        lora::attach(&mut store, &spec, 5).unwrap();
        randomize_lora_b(&store);
        let model = llama(&config, &store, Kind::Float);
        let tape = Tape::training(mode, seed);
        let logits = model.forward(&e["input_ids"], Some(&e["attention_mask"]), &tape, true);
        let loss = causal_lm_loss(&logits, &e["labels"]);
        tape.backward(&loss);
        (loss.double_value(&[]), grads(&store))
    });
}

#[test]
fn llama_with_lora_dropout_recomputation_matches_kept_activations() {
    llama_lora_same_step(LoraSpec {
        rank: 4,
        alpha: 8.0,
        dropout: 0.2,
        targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        also_train: vec!["embed".into(), "norm".into()],
        quantize: None,
    });
}

#[test]
fn layers_below_the_first_adapter_are_not_back_propagated() {
    // Only the last layer's MLP trains: the first layer's recomputation has nothing to train
    // and no gradient to pass down, and must be skipped, not fail.
    llama_lora_same_step(LoraSpec {
        rank: 2,
        alpha: 2.0,
        dropout: 0.1,
        targets: vec!["layers.1.mlp.down_proj".into()],
        also_train: vec![],
        quantize: None,
    });
}

/// B starts at zero; a non-zero B makes the adapters' output (and their dropout) matter.
pub fn randomize_lora_b(store: &ParamStore) {
    tch::manual_seed(9);
    tch::no_grad(|| {
        for (name, t, _) in store.iter() {
            if name.ends_with("lora_B.weight") {
                let mut t = t.shallow_clone();
                let _ = t.normal_(0.0, 0.1);
            }
        }
    });
}

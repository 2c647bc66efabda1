//! S²-Attn against a loop-based implementation of LongLoRA's algorithm (computed in Python by
//! scripts/make_fixtures.py), and its limits: one group is full causal attention, and a
//! LongLoRA model attends fully outside training.

use runner::models::attention::{attend, shifted_sparse, Mask};
use runner::models::llama::{DecoderOptions, Llama};
use runner::models::Tape;
use tch::{Kind, Tensor};

use super::{device, expected, fixture, load, max_diff};

fn tensors() -> std::collections::HashMap<String, Tensor> {
    Tensor::read_safetensors("tests/fixtures/s2attn.safetensors")
        .unwrap()
        .into_iter()
        .map(|(name, t)| (name, t.to_device(device())))
        .collect()
}

#[test]
fn shifted_sparse_attention_matches_the_reference_algorithm() {
    let r = tensors();
    let (q, k, v) = (&r["q"], &r["k"], &r["v"]);
    let scale = (q.size()[3] as f64).powf(-0.5);
    let ours = shifted_sparse(q, k, v, 4, None, scale);
    let d = max_diff(&ours, &r["output"]);
    assert!(d < 1e-5, "S²-Attn differs from the reference by {d}");
    // And it is not full attention.
    let full = attend(q, k, v, &Mask::Causal, scale);
    assert!(max_diff(&full, &r["full_causal"]) < 1e-5);
    assert!(max_diff(&ours, &full) > 1e-2);
}

#[test]
fn one_group_is_full_causal_attention() {
    let r = tensors();
    let (q, k, v) = (&r["q"], &r["k"], &r["v"]);
    let scale = (q.size()[3] as f64).powf(-0.5);
    let one = shifted_sparse(q, k, v, 1, None, scale);
    assert!(max_diff(&one, &r["full_causal"]) < 1e-5);
}

#[test]
fn padding_all_ones_changes_nothing_and_padding_hides_keys() {
    let r = tensors();
    let (q, k, v) = (&r["q"], &r["k"], &r["v"]);
    let scale = (q.size()[3] as f64).powf(-0.5);
    let (b, _, t, _) = q.size4().unwrap();
    let ones = Tensor::ones([b, t], (Kind::Int64, device()));
    let plain = shifted_sparse(q, k, v, 4, None, scale);
    assert!(max_diff(&shifted_sparse(q, k, v, 4, Some(&ones), scale), &plain) < 1e-6);
    // Padding the last 4 tokens cannot change what the unshifted heads output for the first 12.
    let mask = ones.copy();
    let _ = mask.slice(1, 12, t, 1).fill_(0);
    let masked = shifted_sparse(q, k, v, 4, Some(&mask), scale);
    let head0 = |x: &Tensor| x.narrow(1, 0, 2).narrow(2, 0, 12);
    assert!(max_diff(&head0(&masked), &head0(&plain)) < 1e-6);
    assert_eq!(masked.isnan().any().int64_value(&[]), 0);
}

#[test]
fn a_longlora_model_attends_fully_in_evaluation_and_sparsely_in_training() {
    let (config, store) = load("llama-gqa-rope", Kind::Float);
    let e = expected(&fixture("llama-gqa-rope"));
    let runner::models::hf_folder::HfConfig::Decoder { arch, rope_factor } = &config else {
        panic!()
    };
    let options = DecoderOptions {
        rope_factor: *rope_factor,
        shifted_sparse_groups: Some(4),
    };
    let model = Llama::new(&store, arch, options, Kind::Float).unwrap();
    let full = super::llama(&config, &store, Kind::Float);
    let ids = e["input_ids"].narrow(0, 0, 1);
    tch::no_grad(|| {
        let eval = model.forward(&ids, None, &Tape::plain(), false);
        assert!(max_diff(&eval, &full.forward(&ids, None, &Tape::plain(), false)) < 1e-6);
        let train = model.forward(&ids, None, &Tape::plain(), true);
        assert!(max_diff(&train, &eval) > 1e-4);
    });
}

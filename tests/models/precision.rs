//! bf16 on the CPU: mixed precision keeps fp32 master weights and gradients; pure bf16 keeps
//! both in bf16; the loss is fp32 in every mode and close to the fp32 model's.

use runner::models::loss::{causal_lm_loss, cross_entropy};
use runner::models::t5::shift_right;
use runner::models::{hf_model, Compute, Tape};
use runner::plan::training::Precision;
use tch::Kind;

use super::{device, expected, fixture, llama, max_diff, t5};

#[test]
fn llama_trains_in_bf16_mixed_and_pure_bf16() {
    let e = expected(&fixture("llama-gqa-rope"));
    for precision in [Precision::Bf16Mixed, Precision::Bf16] {
        let compute = Compute::of(precision);
        let (config, store) =
            hf_model::load(&fixture("llama-gqa-rope"), device(), compute.weights).unwrap();
        let model = llama(&config, &store, compute.activations);
        let logits = model.forward(
            &e["input_ids"],
            Some(&e["attention_mask"]),
            &Tape::plain(),
            true,
        );
        assert_eq!(logits.kind(), Kind::Float, "logits come out in fp32");
        let loss = causal_lm_loss(&logits, &e["labels"]);
        assert_eq!(loss.kind(), Kind::Float);
        let d = max_diff(&loss.view([1]), &e["loss"]);
        let reference = e["loss"].double_value(&[0]);
        assert!(
            d < 0.01 * reference,
            "{precision:?}: loss {d} away from fp32's {reference}"
        );
        loss.backward();
        for (name, t) in store.trainable() {
            let g = t.grad();
            assert_eq!(
                g.kind(),
                compute.weights,
                "{precision:?}: gradient of {name}"
            );
            let reference = &e[&format!("grad.{name}")];
            let scale = reference.abs().max().double_value(&[]).max(1e-3);
            let d = max_diff(&g, reference);
            assert!(
                d < 0.1 * scale,
                "{precision:?}: gradient of {name} off by {d} (scale {scale})"
            );
        }
    }
}

#[test]
fn t5_runs_in_bf16_mixed() {
    let e = expected(&fixture("t5-v1_1"));
    let compute = Compute::of(Precision::Bf16Mixed);
    let (config, store) = hf_model::load(&fixture("t5-v1_1"), device(), compute.weights).unwrap();
    let model = t5(&config, &store, compute.activations);
    let logits = model.forward(
        &e["input_ids"],
        &e["attention_mask"],
        &shift_right(&e["labels"]),
        &Tape::plain(),
        true,
    );
    let loss = cross_entropy(&logits, &e["labels"]);
    let d = max_diff(&loss.view([1]), &e["loss"]);
    let reference = e["loss"].double_value(&[0]);
    assert!(
        d < 0.01 * reference,
        "loss {d} away from fp32's {reference}"
    );
    loss.backward();
    let g = store.get("shared.weight").unwrap().grad();
    assert_eq!(g.kind(), Kind::Float);
}

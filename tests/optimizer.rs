//! runner's AdamW and gradient clipping against `torch.optim.AdamW(fused=True)` and
//! `torch.nn.utils.clip_grad_norm_`, from tests/fixtures/adamw.json (scripts/make_fixtures.py,
//! make_adamw), plus exact resume through `state()` / `load_state()`.

use runner::plan::training::Optimizer;
use runner::train::optimizer::{clip_grad_norm, zero_grad, AdamW};
use serde_json::{json, Value};
use tch::{Kind, Tensor};

const TOLERANCE: f64 = 1e-6;

fn fixture() -> Value {
    let text = std::fs::read_to_string("tests/fixtures/adamw.json").unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tensor(values: &Value, shape: &Value) -> Tensor {
    let values: Vec<f32> = values
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let shape: Vec<i64> = shape
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_i64().unwrap())
        .collect();
    Tensor::from_slice(&values).reshape(shape)
}

/// A leaf with `t`'s values that requires a gradient and has none yet.
fn leaf(t: &Tensor) -> Tensor {
    t.detach().copy().set_requires_grad(true)
}

/// Puts exactly `g` into `p.grad`: d/dp Σ p·g = g (accumulated onto a zeroed gradient, 0 + g = g).
fn set_grad(p: &Tensor, g: &Tensor) {
    (p * g).sum(Kind::Float).backward();
}

fn max_diff(got: &Tensor, want: &Tensor) -> f64 {
    (got.detach() - want).abs().max().double_value(&[])
}

fn adamw(fixture: &Value) -> AdamW {
    let a = &fixture["adamw"];
    let config: Optimizer = serde_json::from_value(json!({
        "lr": a["steps"][0]["lr"],
        "weight_decay": a["weight_decay"],
        "betas": a["betas"],
        "eps": a["eps"],
        "no_decay": a["no_decay"],
    }))
    .unwrap();
    assert_eq!(config.weight_decay, 0.1);
    assert_eq!(config.betas, [0.9, 0.95]);
    assert_eq!(config.eps, 1e-8);
    assert_eq!(config.no_decay, ["bias", "norm"]);
    AdamW::new(&config)
}

/// The fixture's parameters at their initial values, in the fixture's order.
fn initial_params(fixture: &Value) -> Vec<(String, Tensor)> {
    fixture["adamw"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let name = p["name"].as_str().unwrap().to_string();
            (name, leaf(&tensor(&p["initial"], &p["shape"])))
        })
        .collect()
}

fn shape_of(fixture: &Value, name: &str) -> Value {
    let params = fixture["adamw"]["params"].as_array().unwrap();
    params.iter().find(|p| p["name"] == name).unwrap()["shape"].clone()
}

/// Replays fixture step `index` (0-based): gradients as recorded, then one optimizer step.
fn replay_step(
    fixture: &Value,
    optimizer: &mut AdamW,
    params: &mut [(String, Tensor)],
    index: usize,
) {
    let step = &fixture["adamw"]["steps"][index];
    zero_grad(params);
    for (name, p) in params.iter_mut() {
        match &step["grads"][name.as_str()] {
            // torch sets p.grad = None for this parameter and its AdamW skips it (no decay, no
            // moment update, no step count). runner's zero_grad zeroes gradients in place, so a
            // parameter that had one keeps a defined (zero) gradient; tch cannot unset it. A
            // fresh leaf with the same values has an undefined gradient, which is what a
            // parameter that the loss does not reach looks like; the moments are keyed by name,
            // so it stays the same parameter to the optimizer.
            Value::Null => *p = leaf(p),
            g => set_grad(p, &tensor(g, &shape_of(fixture, name))),
        }
    }
    for (name, p) in params.iter() {
        let expected = !step["grads"][name.as_str()].is_null();
        assert_eq!(p.grad().defined(), expected, "step {index}: {name}");
    }
    optimizer
        .step(params, step["lr"].as_f64().unwrap())
        .unwrap();
}

fn check_step(fixture: &Value, params: &[(String, Tensor)], index: usize) {
    let expected = &fixture["adamw"]["steps"][index]["params"];
    for (name, p) in params {
        let want = tensor(&expected[name.as_str()], &shape_of(fixture, name));
        // The same kernel on the same numbers: bit for bit.
        let diff = max_diff(p, &want);
        assert!(
            diff == 0.0,
            "step {index}: {name} differs from torch.optim.AdamW(fused=True) by {diff:e}"
        );
    }
}

fn steps_in(fixture: &Value) -> usize {
    fixture["adamw"]["steps"].as_array().unwrap().len()
}

#[test]
fn adamw_follows_torch_every_step() {
    let fixture = fixture();
    let mut optimizer = adamw(&fixture);
    let mut params = initial_params(&fixture);
    let steps = steps_in(&fixture);
    assert_eq!(steps, 5);
    let mut skipped = 0;
    for index in 0..steps {
        let before: Vec<Tensor> = params.iter().map(|(_, p)| p.detach().copy()).collect();
        replay_step(&fixture, &mut optimizer, &mut params, index);
        for ((name, p), before) in params.iter().zip(&before) {
            if fixture["adamw"]["steps"][index]["grads"][name.as_str()].is_null() {
                assert!(
                    p.equal(before),
                    "step {index}: {name} has no gradient but moved"
                );
                skipped += 1;
            }
        }
        check_step(&fixture, &params, index);
    }
    assert_eq!(
        skipped, 2,
        "the fixture must skip a parameter, as torch does for grad None"
    );
    assert_eq!(optimizer.steps, steps as u64);

    // The moments, and each parameter's own step count, are torch's state after the last step.
    let state = optimizer.state();
    for (name, want) in fixture["adamw"]["state"].as_object().unwrap() {
        let shape = shape_of(&fixture, name);
        let find = |key: String| {
            let found = state.iter().find(|(k, _)| *k == key);
            found
                .unwrap_or_else(|| panic!("no {key} in the state"))
                .1
                .shallow_clone()
        };
        for moment in ["exp_avg", "exp_avg_sq"] {
            let got = find(format!("{moment}.{name}"));
            let want = tensor(&want[moment], &shape);
            let diff = max_diff(&got, &want);
            assert!(
                diff == 0.0,
                "{moment}.{name} differs from torch by {diff:e}"
            );
        }
        let step = find(format!("step.{name}")).int64_value(&[]);
        assert_eq!(step, want["step"].as_i64().unwrap(), "step count of {name}");
    }
}

#[test]
fn resuming_from_saved_state_is_bitwise_identical() {
    let fixture = fixture();
    let steps = steps_in(&fixture);
    // Every split point, so some resumes happen after the skipped parameter's missing step.
    for split in 1..steps {
        let mut original = adamw(&fixture);
        let mut params = initial_params(&fixture);
        for index in 0..split {
            replay_step(&fixture, &mut original, &mut params, index);
        }
        // What a checkpoint holds: copies of the weights and of the optimizer state.
        let saved: Vec<(String, Tensor)> = original
            .state()
            .iter()
            .map(|(n, t)| (n.clone(), t.copy()))
            .collect();
        let mut resumed = adamw(&fixture);
        resumed.load_state(saved, split as u64).unwrap();
        let mut resumed_params: Vec<(String, Tensor)> =
            params.iter().map(|(n, p)| (n.clone(), leaf(p))).collect();
        for index in split..steps {
            replay_step(&fixture, &mut original, &mut params, index);
            replay_step(&fixture, &mut resumed, &mut resumed_params, index);
            for ((name, a), (_, b)) in params.iter().zip(&resumed_params) {
                assert!(
                    a.equal(b),
                    "resumed after step {split}: {name} differs at step {index}"
                );
            }
        }
        check_step(&fixture, &resumed_params, steps - 1);
        assert_eq!(resumed.steps, original.steps);
        let (a, b) = (original.state(), resumed.state());
        assert_eq!(a.len(), b.len());
        for ((name, x), (other, y)) in a.iter().zip(&b) {
            assert_eq!(name, other);
            assert!(x.equal(y), "resumed after step {split}: {name} differs");
        }
    }
}

#[test]
fn load_state_refuses_foreign_and_unpaired_tensors() {
    let fixture = fixture();
    let mut optimizer = adamw(&fixture);
    let t = Tensor::zeros([4], (Kind::Float, tch::Device::Cpu));
    let foreign = vec![("momentum.w".to_string(), t.shallow_clone())];
    assert!(optimizer.load_state(foreign, 1).is_err());
    let unpaired = vec![("exp_avg.w".to_string(), t)];
    assert!(optimizer.load_state(unpaired, 1).is_err());
    let count_only = vec![("step.w".to_string(), Tensor::from(1i64))];
    assert!(optimizer.load_state(count_only, 1).is_err());
}

#[test]
fn state_without_step_counts_resumes_with_the_global_count() {
    // Checkpoints written before the per-parameter counts were saved hold only the moments;
    // after step 1 every parameter with moments has taken exactly that one step.
    let fixture = fixture();
    let mut original = adamw(&fixture);
    let mut params = initial_params(&fixture);
    replay_step(&fixture, &mut original, &mut params, 0);
    let moments: Vec<(String, Tensor)> = original
        .state()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("step."))
        .map(|(n, t)| (n, t.copy()))
        .collect();
    let mut resumed = adamw(&fixture);
    resumed.load_state(moments, 1).unwrap();
    let mut resumed_params: Vec<(String, Tensor)> =
        params.iter().map(|(n, p)| (n.clone(), leaf(p))).collect();
    for index in 1..steps_in(&fixture) {
        replay_step(&fixture, &mut original, &mut params, index);
        replay_step(&fixture, &mut resumed, &mut resumed_params, index);
    }
    for ((name, a), (_, b)) in params.iter().zip(&resumed_params) {
        assert!(a.equal(b), "{name}");
    }
}

#[test]
fn clipping_follows_torch() {
    let fixture = fixture();
    let cases = fixture["clip"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    let mut clipped_cases = 0;
    for (case_index, case) in cases.iter().enumerate() {
        let grads = case["grads"].as_array().unwrap();
        let mut params: Vec<(String, Tensor)> = grads
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let g = tensor(&g["values"], &g["shape"]);
                let p = leaf(&g.zeros_like());
                set_grad(&p, &g);
                (format!("p{i}"), p)
            })
            .collect();
        // A parameter without a gradient is skipped, as torch skips grad None.
        params.push((
            "none".into(),
            leaf(&Tensor::ones([5], (Kind::Float, tch::Device::Cpu))),
        ));
        let max_norm = case["max_norm"].as_f64().unwrap();
        let want_norm = case["total_norm"].as_f64().unwrap();
        let norm = clip_grad_norm(&params, Some(max_norm)).unwrap();
        assert!(
            (norm - want_norm).abs() <= TOLERANCE,
            "case {case_index}: norm {norm} vs torch {want_norm}"
        );
        if want_norm > max_norm {
            clipped_cases += 1;
        }
        for (i, g) in grads.iter().enumerate() {
            let (name, p) = &params[i];
            let want = tensor(&case["clipped"][i], &g["shape"]);
            let diff = max_diff(&p.grad(), &want);
            assert!(
                diff <= TOLERANCE,
                "case {case_index}: {name} clipped by {diff:e} off"
            );
            if want_norm <= max_norm {
                // Below max_norm, nothing changes at all.
                assert!(p.grad().equal(&tensor(&g["values"], &g["shape"])));
            }
        }
        assert!(!params[grads.len()].1.grad().defined());
        // No max_norm: the norm alone, gradients untouched.
        let before: Vec<Tensor> = params[..grads.len()]
            .iter()
            .map(|(_, p)| p.grad().copy())
            .collect();
        let again = clip_grad_norm(&params, None).unwrap();
        let want_again = if want_norm > max_norm {
            max_norm
        } else {
            want_norm
        };
        assert!(
            (again - want_again).abs() <= TOLERANCE,
            "case {case_index}: {again}"
        );
        for ((_, p), before) in params.iter().zip(&before) {
            assert!(p.grad().equal(before));
        }
    }
    assert_eq!(clipped_cases, 1, "one case above max_norm, one below");
}

#[test]
fn clipping_without_gradients_gives_zero() {
    let params: Vec<(String, Tensor)> = [("a", 3), ("b", 4)]
        .iter()
        .map(|(n, size)| {
            let p = leaf(&Tensor::ones([*size], (Kind::Float, tch::Device::Cpu)));
            (n.to_string(), p)
        })
        .collect();
    assert_eq!(clip_grad_norm(&params, Some(1.0)).unwrap(), 0.0);
    assert_eq!(clip_grad_norm(&params, None).unwrap(), 0.0);
    assert_eq!(clip_grad_norm(&[], Some(1.0)).unwrap(), 0.0);
    for (_, p) in &params {
        assert!(!p.grad().defined());
    }
}

/// Fused AdamW updates contiguous fp32 weights where they are and the others through an fp32
/// copy: a bf16 weight takes the fp32 weight's step rounded to bf16, with fp32 moments, and a
/// strided (transposed) fp32 weight takes the same step as a contiguous one.
#[test]
fn weights_in_bf16_or_strided_take_the_contiguous_fp32_weights_step() {
    tch::manual_seed(0);
    let config: Optimizer = serde_json::from_value(json!({
        "lr": 1e-2, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8, "no_decay": [],
    }))
    .unwrap();
    let mut optimizer = AdamW::new(&config);
    let bf16 = |t: &Tensor| t.to_kind(Kind::BFloat16);
    // Values that bf16 holds exactly, so that every weight starts from the same numbers.
    let start = bf16(&Tensor::randn([6, 5], (Kind::Float, tch::Device::Cpu))).to_kind(Kind::Float);
    let strided = start.tr().contiguous().tr().set_requires_grad(true);
    assert!(!strided.is_contiguous());
    let params = vec![
        ("fp32".to_string(), leaf(&start)),
        ("bf16".to_string(), leaf(&bf16(&start))),
        ("strided".to_string(), strided),
    ];
    for step in 0..3 {
        let g = bf16(&Tensor::randn([6, 5], (Kind::Float, tch::Device::Cpu)));
        zero_grad(&params);
        for (name, p) in &params {
            match name.as_str() {
                "bf16" => set_grad(p, &g),
                _ => set_grad(p, &g.to_kind(Kind::Float)),
            }
        }
        optimizer.step(&params, 1e-2).unwrap();
        let fp32 = params[0].1.detach();
        let scale = fp32.abs().max().double_value(&[]);
        let diff = max_diff(&params[2].1, &fp32);
        assert!(
            diff <= 1e-7 * scale,
            "step {step}: strided differs by {diff:e}"
        );
        if step == 0 {
            // One bf16 rounding apart at most.
            let diff = max_diff(
                &params[1].1.to_kind(Kind::Float),
                &bf16(&fp32).to_kind(Kind::Float),
            );
            assert!(diff <= scale / 128.0, "bf16 differs by {diff:e}");
            assert_eq!(params[1].1.kind(), Kind::BFloat16);
        }
    }
    let state = optimizer.state();
    let moment = &state.iter().find(|(k, _)| k == "exp_avg.bf16").unwrap().1;
    assert_eq!(moment.kind(), Kind::Float, "fp32 moments for a bf16 weight");
}

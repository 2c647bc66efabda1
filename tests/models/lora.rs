//! LoRA: what trains, merging, and PEFT's adapter layout both ways.

use std::collections::{BTreeMap, HashMap};
use std::process::Command;

use runner::models::adapters::lora::{self, LoraSpec};
use runner::models::loss::causal_lm_loss;
use runner::models::Tape;
use runner::plan::inventory::Group;
use tch::{Kind, Tensor};

use super::checkpointing::randomize_lora_b;
use super::{eval_logits, expected, fixture, llama, load, max_diff, real_diff, rng_lock};

fn spec() -> LoraSpec {
    LoraSpec {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: vec!["q_proj".into(), "v_proj".into()],
        also_train: vec!["embed".into(), "norm".into()],
        quantize: None,
    }
}

#[test]
fn a_step_changes_only_adapters_and_named_extras() {
    let _rng = rng_lock();
    let (config, mut store) = load("llama-gqa-rope", Kind::Float);
    let modules = lora::attach(&mut store, &spec(), 0).unwrap();
    assert_eq!(modules.len(), 4, "q_proj and v_proj of 2 layers");
    // PEFT's init: B = 0, A ~ U(±1/√in).
    let a = store
        .get("model.layers.0.self_attn.q_proj.lora_A.weight")
        .unwrap();
    let b = store
        .get("model.layers.0.self_attn.q_proj.lora_B.weight")
        .unwrap();
    assert_eq!(b.abs().sum(Kind::Float).double_value(&[]), 0.0);
    let bound = 1.0 / 32f64.sqrt();
    assert!(a.abs().max().double_value(&[]) <= bound);
    assert!(a.abs().max().double_value(&[]) > 0.5 * bound);

    // Trainable counts by group: adapters r·(in + out) per module; embeddings; 5 norms.
    let counts: BTreeMap<Group, (i64, i64)> = store
        .counts()
        .into_iter()
        .map(|c| (c.group, (c.total, c.trainable)))
        .collect();
    let adapters = 2 * (4 * (32 + 32) + 4 * (32 + 16));
    assert_eq!(counts[&Group::Adapters], (adapters, adapters));
    assert_eq!(counts[&Group::Embeddings], (96 * 32, 96 * 32));
    assert_eq!(counts[&Group::Norms], (5 * 32, 5 * 32));
    assert_eq!(counts[&Group::Attention].1, 0);
    assert_eq!(counts[&Group::Mlp].1, 0);
    assert_eq!(counts[&Group::Head].1, 0);

    let before: Vec<(String, Tensor)> = store
        .iter()
        .map(|(n, t, _)| (n.to_string(), t.copy()))
        .collect();
    let model = llama(&config, &store, Kind::Float);
    let e = expected(&fixture("llama-gqa-rope"));
    let logits = model.forward(
        &e["input_ids"],
        Some(&e["attention_mask"]),
        &Tape::plain(),
        true,
    );
    causal_lm_loss(&logits, &e["labels"]).backward();
    tch::no_grad(|| {
        for (_, t) in store.trainable() {
            let mut t = t;
            let g = t.grad();
            let _ = t.f_sub_(&(g * 0.1)).unwrap();
        }
    });
    for (name, old) in &before {
        let now = store.get(name).unwrap();
        let changed = max_diff(&now, old) > 0.0;
        let trains = name.contains("lora_") || name.contains("embed") || name.contains("norm");
        // lora_A's gradient is B·… = 0 in the first step (B = 0), as in PEFT.
        let expected_change = trains && !name.contains("lora_A");
        assert_eq!(changed, expected_change, "{name}");
    }
}

#[test]
fn a_merged_model_gives_the_logits_of_base_plus_adapter() {
    let _rng = rng_lock();
    let (config, mut store) = load("llama-gqa-rope", Kind::Float);
    lora::attach(&mut store, &spec(), 0).unwrap();
    randomize_lora_b(&store);
    let e = expected(&fixture("llama-gqa-rope"));
    let run =
        |store: &runner::models::ParamStore| eval_logits(&llama(&config, store, Kind::Float), &e);
    let adapted = run(&store);
    assert!(
        max_diff(&adapted, &e["logits"]) > 1e-3,
        "the adapters change the logits"
    );
    assert_eq!(lora::merge(&mut store).unwrap(), 4);
    assert!(!store.iter().any(|(n, _, _)| n.contains("lora_")));
    assert!(max_diff(&run(&store), &adapted) < 1e-5);
}

#[test]
fn a_peft_adapter_loads_and_gives_peft_logits() {
    let (config, mut store) = load("llama-gqa-rope", Kind::Float);
    let adapter = fixture("llama-gqa-rope-lora");
    let spec = lora::load_peft(&adapter, &mut store).unwrap();
    assert_eq!((spec.rank, spec.alpha), (4, 8.0));
    let e = expected(&adapter);
    let model = llama(&config, &store, Kind::Float);
    let logits = eval_logits(&model, &e);
    let d = real_diff(&logits, &e);
    assert!(d < 1e-4, "logits with the PEFT adapter differ by {d}");
}

#[test]
fn saved_adapters_have_peft_names_config_and_values() {
    let (_, mut store) = load("llama-gqa-rope", Kind::Float);
    let adapter = fixture("llama-gqa-rope-lora");
    let spec = lora::load_peft(&adapter, &mut store).unwrap();
    let dir = tempfile::tempdir().unwrap();
    lora::save_peft(dir.path(), &store, &spec, "llama-gqa-rope", "CAUSAL_LM").unwrap();
    let read = |d: &std::path::Path| -> HashMap<String, Tensor> {
        Tensor::read_safetensors(d.join(lora::WEIGHTS))
            .unwrap()
            .into_iter()
            .collect()
    };
    let (theirs, ours) = (read(&adapter), read(dir.path()));
    let mut names: Vec<&String> = ours.keys().collect();
    names.sort();
    let mut expected_names: Vec<&String> = theirs.keys().collect();
    expected_names.sort();
    assert_eq!(names, expected_names);
    for (name, t) in &theirs {
        assert!(max_diff(t, &ours[name]) == 0.0, "{name}");
    }
    let config = |d: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join(lora::CONFIG)).unwrap()).unwrap()
    };
    let (theirs, ours) = (config(&adapter), config(dir.path()));
    for key in [
        "peft_type",
        "r",
        "lora_alpha",
        "lora_dropout",
        "bias",
        "task_type",
    ] {
        assert_eq!(ours[key], theirs[key], "{key}");
    }
    let sorted = |v: &serde_json::Value| {
        let mut s: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        s.sort();
        s
    };
    assert_eq!(
        sorted(&ours["target_modules"]),
        sorted(&theirs["target_modules"])
    );
    assert_eq!(
        sorted(&ours["modules_to_save"]),
        sorted(&theirs["modules_to_save"])
    );
}

#[test]
fn runner_merge_writes_an_hf_folder_with_the_adapted_logits() {
    let out = tempfile::tempdir().unwrap();
    let merged = out.path().join("merged");
    let status = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args([
            "merge",
            "tests/fixtures/models/llama-gqa-rope",
            "tests/fixtures/models/llama-gqa-rope-lora",
        ])
        .arg(&merged)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    let (config, store) =
        runner::models::hf_model::load(&merged, tch::Device::Cpu, Kind::Float).unwrap();
    let e = expected(&fixture("llama-gqa-rope-lora"));
    let model = llama(&config, &store, Kind::Float);
    let logits = eval_logits(&model, &e);
    assert!(real_diff(&logits, &e) < 1e-4);
}

/// An adapter runner makes and saves, committed with runner's logits so that
/// scripts/make_fixtures.py checks that Python PEFT loads it and agrees. This test keeps the
/// committed files equal to what runner writes today; `RUNNER_BLESS=1` rewrites them.
#[test]
fn runner_adapters_are_the_committed_peft_checked_fixture() {
    let spec = LoraSpec {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        targets: vec!["o_proj".into(), "up_proj".into()],
        also_train: vec!["norm".into()],
        quantize: None,
    };
    check_committed_adapter("llama-gqa-rope", "llama-gqa-rope-runner-lora", &spec);
}

/// Attaches `spec` to the fixture model `base` (random B, perturbed trained norms), saves the
/// adapter with the logits runner computes, and compares both with the fixture `committed`.
pub fn check_committed_adapter(base: &str, committed: &str, spec: &LoraSpec) {
    let _rng = rng_lock();
    let (config, mut store) = load(base, Kind::Float);
    lora::attach(&mut store, spec, 1).unwrap();
    randomize_lora_b(&store);
    tch::no_grad(|| {
        for (name, t, _) in store.iter() {
            if name.contains("norm") {
                let mut t = t.shallow_clone();
                let _ = t.f_add_(&(t.randn_like() * 0.1)).unwrap();
            }
        }
    });
    let e = expected(&fixture(base));
    let logits = eval_logits(&llama(&config, &store, Kind::Float), &e);
    let committed = fixture(committed);
    let written = tempfile::tempdir().unwrap();
    let dir = match std::env::var_os("RUNNER_BLESS") {
        Some(_) => committed.clone(),
        None => written.path().to_path_buf(),
    };
    let base_path = format!("tests/fixtures/models/{base}");
    lora::save_peft(&dir, &store, spec, &base_path, "CAUSAL_LM").unwrap();
    let inputs = [
        ("input_ids", e["input_ids"].shallow_clone()),
        ("attention_mask", e["attention_mask"].shallow_clone()),
        ("logits", logits),
    ];
    Tensor::write_safetensors(&inputs, dir.join("expected.safetensors")).unwrap();
    let stale = "differs from the committed fixture: rerun with RUNNER_BLESS=1, then the fixture script's check";
    for file in [lora::CONFIG, lora::WEIGHTS] {
        let (a, b) = (
            std::fs::read(dir.join(file)).unwrap(),
            std::fs::read(committed.join(file)).unwrap(),
        );
        assert!(a == b, "{file} {stale}");
    }
    // Logits may differ in the last bits between CPUs (vector widths), so within a bound.
    let d = real_diff(&inputs[2].1, &expected(&committed));
    assert!(d < 1e-5, "logits {stale} ({d})");
}

#[test]
fn adapters_runner_cannot_merge_exactly_are_refused_with_the_key() {
    let adapter = fixture("llama-gqa-rope-lora");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(adapter.join(lora::CONFIG)).unwrap())
            .unwrap();
    let cases = [
        ("use_rslora", serde_json::json!(true)),
        ("use_dora", serde_json::json!(true)),
        ("target_modules", serde_json::json!("all-linear")),
        ("r", serde_json::json!(0)),
        ("rank_pattern", serde_json::json!({"q_proj": 8})),
    ];
    for (key, value) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut changed = config.clone();
        changed[key] = value;
        std::fs::write(dir.path().join(lora::CONFIG), changed.to_string()).unwrap();
        std::fs::copy(adapter.join(lora::WEIGHTS), dir.path().join(lora::WEIGHTS)).unwrap();
        let (_, mut store) = load("llama-gqa-rope", Kind::Float);
        let err = format!("{:#}", lora::load_peft(dir.path(), &mut store).unwrap_err());
        assert!(
            err.contains(&format!("key `{key}`")) && err.contains(lora::CONFIG),
            "{err}"
        );
    }
}

#[test]
fn runner_merge_refuses_to_write_into_its_input() {
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args([
            "merge",
            "tests/fixtures/models/llama-gqa-rope",
            "tests/fixtures/models/llama-gqa-rope-lora",
            "tests/fixtures/models/llama-gqa-rope",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is an input folder"));
}

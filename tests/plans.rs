//! Plans: every shipped recipe resolves, and the hash depends on values only.

use std::fs;
use std::path::Path;

use runner::config::emit;
use runner::plan::resolve;

const RECIPES: [&str; 8] = [
    "recipes/tiny/iag_distill.yaml",
    "recipes/tiny/longlora_sft.yaml",
    "recipes/tiny/coe_multitask.yaml",
    "recipes/tiny/coe_qwen_vl.yaml",
    "recipes/paper/iag_imcqa_nq_t5_base.yaml",
    "recipes/paper/longlora_llama2_7b_8k_lora_plus.yaml",
    "recipes/paper/longlora_sciqag_vicuna_7b_16k.yaml",
    "recipes/paper/coe_scienceqa_qwen_vl_chat.yaml",
];

fn hash_of(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.yaml");
    fs::write(&path, text).unwrap();
    match resolve(&path, &[]) {
        Ok(plan) => plan.hash,
        Err(errors) => panic!(
            "{}",
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

const BLOCK: &str = "\
kind: longlora_sft
name: t
model:
  tokenizer: tokenizer.json
  arch: {family: llama, vocab_size: 512, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, max_position_embeddings: 128}
data:
  format: instruction
  train: train.json
  max_length: 256
training:
  max_steps: 100
  micro_batch_size: 2
  optimizer:
    lr: 0.001
  schedule:
    type: linear
method: {}
";

/// The same values: keys reordered, flow style, comments, another spelling of 0.001, defaults written out.
const REFORMATTED: &str = "\
# a comment
method:
  shifted_sparse_attention: true   # the default, written out
training: {schedule: {type: linear}, optimizer: {lr: 1.0e-3}, micro_batch_size: 2, max_steps: 100}
data: {max_length: 256, train: \"train.json\", format: instruction}
model:
  tokenizer: tokenizer.json
  arch:
    num_attention_heads: 4
    max_position_embeddings: 128
    num_hidden_layers: 2
    intermediate_size: 128
    hidden_size: 64
    vocab_size: 512
    family: llama
name: 't'
kind: longlora_sft
";

#[test]
fn every_shipped_recipe_resolves() {
    for recipe in RECIPES {
        if let Err(errors) = resolve(Path::new(recipe), &[]) {
            panic!(
                "{recipe}:\n{}",
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

#[test]
fn hash_ignores_order_comments_and_formatting() {
    assert_eq!(hash_of(BLOCK), hash_of(REFORMATTED));
}

#[test]
fn hash_changes_with_any_value() {
    let base = hash_of(BLOCK);
    for (from, to) in [
        ("lr: 0.001", "lr: 0.0011"),
        ("name: t", "name: u"),
        ("max_steps: 100", "max_steps: 101"),
        ("method: {}", "method: {group_fraction: 0.5}"),
    ] {
        assert_ne!(base, hash_of(&BLOCK.replace(from, to)), "{from} -> {to}");
    }
}

#[test]
fn hash_is_stable_across_runs() {
    // A fixed recipe's hash, committed: it changes only when the recipe or the schema's
    // defaults change, which is exactly when existing runs no longer match their plan.
    assert_eq!(
        hash_of(BLOCK),
        "9ac9035d5b887ee6a22a68772617cd71705b7c3f345cc6be6c9dc2d75cfbaac8"
    );
}

#[test]
fn printed_plan_is_a_recipe_with_the_same_hash() {
    for recipe in RECIPES {
        let plan = resolve(Path::new(recipe), &[]).unwrap();
        let printed = emit::to_yaml(&plan.recipe.to_json());
        assert_eq!(hash_of(&printed), plan.hash, "{recipe}:\n{printed}");
    }
}

#[test]
fn overrides_are_typed_by_the_schema() {
    let plan = resolve(
        Path::new("recipes/tiny/longlora_sft.yaml"),
        &[
            "training.optimizer.betas=[0.9, 0.95]".into(),
            "name=2024".into(),
            "training.adapter.rank=16".into(),
        ],
    )
    .unwrap();
    let json = plan.recipe.to_json();
    assert_eq!(
        json["training"]["optimizer"]["betas"],
        serde_json::json!([0.9, 0.95])
    );
    assert_eq!(
        json["name"], "2024",
        "a plain scalar is taken as text where the schema wants text"
    );
    assert_eq!(json["training"]["adapter"]["rank"], 16);
}

/// A researcher's first command on a recipe is a 5-step smoke run: every tiny recipe resolves
/// with `training.max_steps=5`, its longer warmup and evaluation interval only warned about.
#[test]
fn every_tiny_recipe_resolves_as_a_five_step_smoke_run() {
    let mut tiny: Vec<_> = fs::read_dir("recipes/tiny")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    tiny.sort();
    assert!(tiny.len() >= 7, "{tiny:?}");
    for recipe in tiny {
        let plan = resolve(&recipe, &["training.max_steps=5".into()])
            .unwrap_or_else(|errors| panic!("{}: {}", recipe.display(), errors[0]));
        assert!(
            plan.warnings
                .iter()
                .any(|w| w.message.contains("(5 steps)") || w.message.contains("5-step run")),
            "{}: {:?}",
            recipe.display(),
            plan.warnings
        );
    }
}

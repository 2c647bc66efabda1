//! The `runner` binary end to end: exit codes and formats.

use std::process::{Command, Output};

fn runner(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(args)
        .output()
        .expect("the runner binary runs")
}

#[test]
fn validate_passes_on_everything_shipped() {
    let out = runner(&["validate"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for file in [
        "recipes/tiny/iag_distill.yaml",
        "recipes/paper/coe_scienceqa_qwen_vl_chat.yaml",
        "sweeps/lr.yaml",
        "configs/models/t5-base.yaml",
    ] {
        assert!(
            text.contains(&format!("ok      {file}")),
            "{file} not reported valid:\n{text}"
        );
    }
}

#[test]
fn validate_exit_codes_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: longlora_sft\nname: x\nmodle: {}\n").unwrap();
    let out = runner(&["validate", "--format", "json", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(report["valid"], false);
    let errors = report["files"][0]["errors"].as_array().unwrap();
    let typo = errors
        .iter()
        .find(|e| e["message"].as_str().unwrap().contains("`modle`"))
        .expect("the typo is reported");
    assert_eq!(
        (typo["line"].as_u64(), typo["col"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(typo["hint"], "did you mean `model`?");

    assert_eq!(runner(&["validate", "no/such/path"]).status.code(), Some(2));
    assert_eq!(
        runner(&["validate", "--format", "xml"]).status.code(),
        Some(2)
    );
    assert_eq!(runner(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        runner(&["plan", "no/such/recipe.yaml"]).status.code(),
        Some(2)
    );
    assert_eq!(runner(&["explain"]).status.code(), Some(2));
}

#[test]
fn schema_is_json_schema_with_descriptions() {
    let out = runner(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["oneOf"].as_array().unwrap().len(), 4);
    let training = &schema["$defs"]["Training"];
    assert_eq!(training["additionalProperties"], false);
    assert!(training["properties"]["micro_batch_size"]["description"]
        .as_str()
        .unwrap()
        .contains("per device"));
}

#[test]
fn plan_json_and_explain() {
    let out = runner(&[
        "plan",
        "--format",
        "json",
        "recipes/tiny/longlora_sft.yaml",
        "training.optimizer.lr=3e-3",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["plan"]["training"]["optimizer"]["lr"], 3e-3);
    assert_eq!(plan["hash"].as_str().unwrap().len(), 64);

    let out = runner(&[
        "explain",
        "recipes/tiny/longlora_sft.yaml",
        "training.optimizer.lr=3e-3",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} missing:\n{text}"))
            .to_string()
    };
    assert!(line("training.optimizer.lr").contains("override 1 `training.optimizer.lr=3e-3`  (replaces configs/training/cpu-tiny.yaml:6:7)"), "{text}");
    assert!(
        line("model.arch.hidden_size").ends_with("configs/models/llama-tiny.yaml:4:14"),
        "{text}"
    );
    assert!(
        line("training.micro_batch_size").contains(
            "recipes/tiny/longlora_sft.yaml:22:21  (replaces configs/training/cpu-tiny.yaml:3:19)"
        ),
        "{text}"
    );
    assert!(line("data.pad_token").ends_with("default"), "{text}");
}

#[test]
fn doctor_reports_libtorch_and_bf16() {
    let out = runner(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("libtorch        2.11.0+"), "{text}");
    assert!(text.contains("(built for 2.11.0, tch 0.24)"), "{text}");
    assert!(text.contains("bf16 on Cpu     supported"), "{text}");
    assert!(text.contains("cuda            "), "{text}");
}

/// `runner bench recipe` times every kind against transformers (+ PEFT) on the same weights and
/// batch: both sides' first losses agree (fp32), and so do their trainable parameters, so the
/// ratios compare the same arithmetic. (LongLoRA's LoRA starts at zero, so its first loss is
/// the base model's on both sides.)
#[test]
fn bench_matches_pytorch_on_the_same_weights_and_batch_for_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    for (recipe, overrides) in [
        ("recipes/tiny/longlora_sft.yaml", vec![]),
        // Its teacher trains beside the student: both T5s, FiD, and with α 0.4 the KD term.
        ("recipes/tiny/iag_teacher.yaml", vec!["method.alpha_kd=0.4"]),
        ("recipes/tiny/coe_multitask.yaml", vec![]),
    ] {
        let json = dir.path().join("bench.json");
        let o = Command::new(env!("CARGO_BIN_EXE_runner"))
            .args(["bench", "recipe", recipe])
            .args(&overrides)
            .args(["--steps", "1", "--warmup", "0", "--device", "cpu", "--json"])
            .arg(&json)
            .output()
            .unwrap();
        crate::assert_success(&o);
        let report = String::from_utf8_lossy(&o.stdout);
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let (ours, theirs) = (&record["runner"], &record["pytorch"]);
        for side in [ours, theirs] {
            assert!(
                side["tokens_per_s"].as_f64().unwrap() > 0.0,
                "{recipe}: {report}"
            );
        }
        let loss = |r: &serde_json::Value| r["loss_first"].as_f64().unwrap();
        let difference = (loss(ours) - loss(theirs)).abs() / loss(theirs);
        assert!(
            difference < 1e-5,
            "{recipe}: first losses differ by {difference:e}: {report}"
        );
        assert_eq!(
            ours["trainable_params"], theirs["trainable_params"],
            "{recipe}: {report}"
        );
        assert!(report.contains("runner / pytorch: step time"), "{report}");
    }
}

#[test]
fn coe_plans_refuse_a_best_metric_no_task_computes() {
    let recipe = "recipes/tiny/coe_multitask.yaml";
    let out = runner(&["plan", recipe, "method.tasks.question=0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("picked on question_bleu4, but the question task is not trained")
            && text.contains("hint: set evaluation.best_metric: loss"),
        "{text}"
    );
    let out = runner(&[
        "plan",
        recipe,
        "evaluation.best_metric=meteor",
        "evaluation.metrics=[bleu4]",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("picked on meteor, which evaluation.metrics does not compute"),
        "{text}"
    );
    // Answering alone is a valid mixture.
    let out = runner(&[
        "plan",
        recipe,
        "method.tasks={question: 0, rationale: 0, distractor: 0, answer: 1}",
        "evaluation.best_metric=loss",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

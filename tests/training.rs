//! `runner run` end to end on the tiny LongLoRA recipe: artifacts, TensorBoard files read by
//! TensorBoard's own reader, and exact resume after a stop or a SIGKILL.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

const RECIPE: &str = "recipes/tiny/longlora_sft.yaml";
/// A short run that logs every step, evaluates twice and checkpoints every 3 steps.
const SHORT: [&str; 5] = [
    "training.max_steps=12",
    "evaluation.every_steps=6",
    "logging.every_steps=1",
    "output.checkpoint_every_steps=3",
    "training.micro_batch_size=1",
];

fn runner(out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runner"));
    c.args(["run", RECIPE])
        .args(SHORT)
        .args(extra)
        .arg("--out")
        .arg(out)
        .args(["--device", "cpu"]);
    c
}

fn run(out: &Path, extra: &[&str]) -> Output {
    let o = runner(out, extra).output().unwrap();
    crate::assert_success(&o);
    o
}

/// The rows of metrics.csv that describe training and evaluation (not speed).
fn curve(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("_per_s") && !l.contains("step_time") && !l.contains("peak_memory"))
        .map(str::to_string)
        .collect()
}

fn adapter(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("adapter/adapter_model.safetensors")).unwrap()
}

#[test]
fn a_run_leaves_its_artifacts_and_tensorboard_reads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let o = run(&dir, &[]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("trained 12 steps"));
    for file in [
        "plan.yaml",
        "plan.json",
        "metrics.csv",
        "summary.json",
        "adapter/adapter_config.json",
    ] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    // The plan file is itself a recipe with the run's hash.
    let plan = std::fs::read_to_string(dir.join("plan.yaml")).unwrap();
    assert!(plan.contains("kind: longlora_sft"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 12);
    assert!(plan.contains(summary["plan_hash"].as_str().unwrap()));
    // The last evaluation's metrics are those metrics.csv logged at the last step, and the
    // per-model totals add up the groups.
    assert_eq!(summary["last_evaluation"]["step"], 12, "{summary}");
    let logged: Vec<String> = curve(&dir)
        .into_iter()
        .filter(|l| l.starts_with("12,eval,"))
        .collect();
    let metrics = summary["last_evaluation"]["metrics"].as_object().unwrap();
    assert_eq!(metrics.len(), logged.len(), "{summary}");
    for line in &logged {
        let fields: Vec<&str> = line.split(',').collect();
        let value: f64 = fields[3].parse().unwrap();
        let reported = metrics[fields[2]].as_f64().unwrap();
        assert!(
            (reported - value).abs() <= 1e-9 * value.abs().max(1.0),
            "{line}: {reported}"
        );
    }
    let groups: u64 = summary["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["total"].as_u64().unwrap())
        .sum();
    let totals = summary["parameter_totals"].as_array().unwrap();
    assert_eq!(totals.len(), 1, "one model: {summary}");
    assert_eq!(totals[0]["total"].as_u64().unwrap(), groups);
    assert!(totals[0]["adapters"].as_u64().unwrap() > 0);
    let runs = std::fs::read_to_string(tmp.path().join("runs.csv")).unwrap();
    assert_eq!(runs.lines().count(), 2, "a header and this run's row");
    // Sliding-window perplexity of the trained run, and the evaluation's own at both lengths.
    let ppl = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["perplexity"])
        .arg(&dir)
        .args([
            "--data",
            "data/tiny/longlora/texts.txt",
            "--lengths",
            "64,128",
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ppl.stdout);
    assert!(
        ppl.status.success() && text.contains("step-00000012") && text.contains("128 tokens"),
        "{text}"
    );
    assert!(curve(&dir)
        .iter()
        .any(|l| l.starts_with("12,eval,perplexity_256,")));
    // Running a finished run again only reports it: no training, no second row.
    let again = run(&dir, &[]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("trained 12 steps (resumed from step 12)")
    );
    let runs = std::fs::read_to_string(tmp.path().join("runs.csv")).unwrap();
    assert_eq!(runs.lines().count(), 2);
    // Two checkpoints kept (keep_last 2) plus the best one when it is older.
    let kept = std::fs::read_dir(dir.join("checkpoints")).unwrap().count();
    assert!((2..=3).contains(&kept), "{kept} checkpoints");

    let read = Command::new(".venv/bin/python")
        .args(["scripts/read_tensorboard.py"])
        .arg(dir.join("events"))
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let events: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    let losses = events["scalars"]["train/loss"].as_array().unwrap();
    assert_eq!(losses.len(), 12);
    let first = losses[0][1].as_f64().unwrap();
    let last = losses[11][1].as_f64().unwrap();
    assert!(last < first, "the loss falls: {first} → {last}");
    assert_eq!(events["scalars"]["eval/loss"].as_array().unwrap().len(), 2);
    assert!(events["text"]
        .as_object()
        .unwrap()
        .keys()
        .any(|k| k.starts_with("eval/generation")));
    assert_eq!(events["hparams"]["lora_rank"], 8.0);
    assert_eq!(events["hparams"]["gradient_checkpointing"], true);
}

#[test]
fn a_stopped_run_resumes_to_the_same_curve_and_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, parts) = (tmp.path().join("whole"), tmp.path().join("parts"));
    run(&whole, &[]);
    run(&parts, &["--stop-after", "7"]);
    let o = run(&parts, &[]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("resumed from step 6"));
    assert_eq!(curve(&parts), curve(&whole));
    assert!(
        adapter(&parts) == adapter(&whole),
        "the final adapters are identical"
    );
    // TensorBoard shows each step once: the resumed writer's restart marker hides the
    // retrained steps of the first writer.
    let script = "import sys\nfrom tensorboard.backend.event_processing.event_accumulator import EventAccumulator\na = EventAccumulator(sys.argv[1]); a.Reload()\nprint([e.step for e in a.Scalars('train/loss')])";
    let read = Command::new(".venv/bin/python")
        .args(["-c", script])
        .arg(parts.join("events"))
        .output()
        .unwrap();
    let steps = String::from_utf8_lossy(&read.stdout);
    assert_eq!(
        steps.trim(),
        "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]",
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
}

/// Killed after its last checkpoint (marked finished) but before its result was written: the
/// rerun writes the result from that checkpoint, and the table of runs keeps one row.
#[test]
fn a_run_killed_before_its_result_was_written_is_completed_by_a_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    run(&dir, &[]);
    let whole = adapter(&dir);
    let before = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    std::fs::remove_dir_all(dir.join("adapter")).unwrap();
    run(&dir, &[]);
    assert!(dir.join("summary.json").is_file(), "the result is written");
    let field = |text: &str, key: &str| {
        serde_json::from_str::<serde_json::Value>(text).unwrap()[key].clone()
    };
    let after = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    assert_eq!(
        field(&before, "last_evaluation"),
        field(&after, "last_evaluation"),
        "from the checkpoint's state"
    );
    assert!(adapter(&dir) == whole, "from the last checkpoint's weights");
    let table = std::fs::read_to_string(tmp.path().join("runs.csv")).unwrap();
    assert_eq!(table.lines().count(), 2, "a header and one row:\n{table}");
}

/// A checkpoint that fails verification (a truncated file, a flipped byte) is skipped for the
/// one before it, and the run still ends with the uninterrupted run's weights.
#[test]
fn a_damaged_checkpoint_is_skipped_for_the_newest_good_one() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    run(&whole, &[]);
    for damage in ["truncate", "flip"] {
        let parts = tmp.path().join(damage);
        run(&parts, &["--stop-after", "7"]);
        let file = parts.join("checkpoints/step-00000006/trainable.safetensors");
        let mut bytes = std::fs::read(&file).unwrap();
        match damage {
            "truncate" => bytes.truncate(bytes.len() / 2),
            _ => {
                let at = bytes.len() - 3;
                bytes[at] ^= 0x40;
            }
        }
        std::fs::write(&file, bytes).unwrap();
        let o = run(&parts, &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("warning: skipping checkpoint"),
            "{damage}: {err}"
        );
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("resumed from step 3"),
            "{damage}"
        );
        assert!(
            adapter(&parts) == adapter(&whole),
            "{damage}: the final weights"
        );
    }
}

#[test]
fn a_run_killed_at_a_random_step_resumes_to_the_same_curve_and_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));
    run(&whole, &[]);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let kill_at = 3 + (nanos % 8) as usize;
    let mut child = runner(&killed, &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let rows = std::fs::read_to_string(killed.join("metrics.csv")).unwrap_or_default();
        let steps = rows.lines().filter(|l| l.contains(",train,loss,")).count();
        if steps >= kill_at || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    run(&killed, &[]);
    assert_eq!(curve(&killed), curve(&whole), "killed near step {kill_at}");
    assert!(
        adapter(&killed) == adapter(&whole),
        "killed near step {kill_at}"
    );
}

#[test]
fn another_plan_in_the_same_directory_is_refused_with_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    run(&dir, &["--stop-after", "1"]);
    let o = runner(&dir, &["training.optimizer.lr=0.002"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("training.optimizer.lr (0.001 → 0.002)") && text.contains("--force"),
        "{text}"
    );
    run(&dir, &["training.optimizer.lr=0.002", "--force"]);
}

/// A run directory whose plan.json hash was edited by hand is refused with what happened, not
/// with an empty list of changed settings.
#[test]
fn an_edited_plan_hash_is_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    run(&dir, &["--stop-after", "1"]);
    let path = dir.join("plan.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["hash"] = serde_json::json!("0000");
    std::fs::write(&path, v.to_string()).unwrap();
    let o = runner(&dir, &[]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("changed: no setting: plan.json's hash \"0000\" was edited"),
        "{out}"
    );
}

/// plan.yaml in a run directory is a record: an edit to it is refused by name, not silently
/// overwritten, and --force writes it again.
#[test]
fn an_edited_plan_yaml_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    run(&dir, &["--stop-after", "1"]);
    let path = dir.join("plan.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replace("max_steps:", "max_steps: 999 #");
    std::fs::write(&path, &edited).unwrap();
    let o = runner(&dir, &[]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("plan.yaml was edited after the run wrote it") && out.contains("--force"),
        "{out}"
    );
    run(&dir, &["--force"]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn a_diverging_run_stops_naming_the_step_and_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let o = runner(
        &tmp.path().join("run"),
        &["training.optimizer.lr=1e6", "training.max_grad_norm=null"],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("the loss is") && text.contains("last good checkpoint"),
        "{text}"
    );
}

/// An infinite gradient norm (lr 100) stops the run before the update, naming a checkpoint
/// whose weights are all finite; with `training.skip_nonfinite_steps` such steps are skipped
/// and counted instead.
#[test]
fn a_non_finite_gradient_stops_before_the_update_or_is_skipped_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "training.optimizer.lr=100",
        "training.schedule.warmup_steps=1",
        "training.max_grad_norm=null",
        "output.checkpoint_every_steps=1",
    ];
    let o = runner(&tmp.path().join("stop"), &args).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("the gradient norm is inf; the step was not applied"),
        "{text}"
    );
    let named = text
        .split("the last good checkpoint is ")
        .nth(1)
        .map(|rest| rest.lines().next().unwrap_or_default().trim().to_string())
        .unwrap();
    let tensors =
        tch::Tensor::read_safetensors(Path::new(&named).join("trainable.safetensors")).unwrap();
    for (name, t) in tensors {
        assert_eq!(
            t.isfinite().all().int64_value(&[]),
            1,
            "{named}: {name} is not finite"
        );
    }

    let skipping = tmp.path().join("skip");
    let mut extra = args.to_vec();
    extra.push("training.skip_nonfinite_steps=true");
    let o = run(&skipping, &extra);
    let text = String::from_utf8_lossy(&o.stderr);
    assert!(text.contains("step skipped"), "{text}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(skipping.join("summary.json")).unwrap())
            .unwrap();
    let skipped = summary["skipped_steps"].as_u64().unwrap();
    assert!(skipped > 0 && skipped <= 12, "{summary}");
}

#[test]
fn step_zero_names_every_trainable_parameter_without_a_usable_gradient() {
    use runner::models::adapters::lora::{self, LoraSpec};
    use runner::models::{hf_model, Tape};
    use runner::plan::inventory::Group;
    use tch::{Device, Kind, Tensor};
    let dir = Path::new("tests/fixtures/models/llama-gqa-rope");
    let (config, mut store) = hf_model::load(dir, Device::Cpu, Kind::Float).unwrap();
    let spec = LoraSpec {
        rank: 2,
        alpha: 2.0,
        dropout: 0.0,
        targets: vec!["q_proj".into()],
        also_train: vec!["norm".into()],
        quantize: None,
    };
    lora::attach(&mut store, &spec, 0).unwrap();
    // A trainable tensor the model never uses, as a mistyped name would leave behind.
    store.insert(
        "model.unused.weight",
        Tensor::ones([3], (Kind::Float, Device::Cpu)),
        Group::Norms,
    );
    let runner::models::hf_folder::HfConfig::Decoder { arch, rope_factor } = &config else {
        panic!()
    };
    let options = runner::models::llama::DecoderOptions {
        rope_factor: *rope_factor,
        shifted_sparse_groups: None,
    };
    let model = runner::models::llama::Llama::new(&store, arch, options, Kind::Float).unwrap();
    let ids = Tensor::from_slice(&[5i64, 6, 7, 8, 9, 10]).view([1, 6]);
    let logits = model.forward(&ids, None, &Tape::plain(), true);
    runner::models::loss::causal_lm_loss(&logits, &ids).backward();
    let err = format!(
        "{:#}",
        runner::train::trainer::check_gradients(&runner::train::zero::first_gradients(
            &store.trainable()
        ))
        .unwrap_err()
    );
    assert!(err.contains("model.unused.weight (no gradient)"), "{err}");
    assert!(
        err.contains("1 trainable parameter(s)"),
        "LoRA A's zero gradient (B = 0) is expected: {err}"
    );
    assert!(err.contains("hint:"));
}

#[test]
fn stats_reports_the_length_distribution_of_instruction_data() {
    let o = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args([
            "stats",
            "data/tiny/longlora/dev.json",
            "--tokenizer",
            "data/tiny/longlora/tokenizer.json",
            "--max-length",
            "200",
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    // Measured independently with Python's tokenizers by scripts/make_tiny_data.py.
    assert!(text.contains("40 instruction examples"), "{text}");
    assert!(
        text.contains("min 133") && text.contains("max 247"),
        "{text}"
    );
    assert!(text.contains("longer than 200:"), "{text}");
}

#[test]
fn a_missing_pad_token_is_added_with_mean_initialised_embedding_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    run(
        &dir,
        &[
            "data.pad_token=<added_pad>",
            "evaluation.passkey=null",
            "--stop-after",
            "1",
        ],
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let embeddings = summary["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "embeddings")
        .unwrap();
    assert_eq!(
        embeddings["total"],
        513 * 64,
        "one row added to the 512-token vocabulary"
    );
}

#[test]
fn a_run_built_on_another_teacher_is_not_resumed() {
    use runner::train::run_dir::RunDir;
    let plan = runner::plan::resolve(Path::new(RECIPE), &[]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let teacher = |hash: &str| vec![("teacher".to_string(), hash.to_string())];
    RunDir::open(tmp.path(), &plan, &teacher("aaa"), false).unwrap();
    RunDir::open(tmp.path(), &plan, &teacher("aaa"), false).unwrap();
    let err = RunDir::open(tmp.path(), &plan, &teacher("bbb"), false)
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("trained from other inputs"),
        "{err:#}"
    );
    RunDir::open(tmp.path(), &plan, &teacher("bbb"), true).unwrap();
}

#[test]
fn the_tiny_coe_recipe_trains_a_vision_language_model_and_scores_each_task() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    crate::run_briefly(
        "recipes/tiny/coe_multitask.yaml",
        3,
        &["logging.every_steps=1"],
        &first,
    );
    let metrics = std::fs::read_to_string(first.join("metrics.csv")).unwrap();
    for name in [
        "loss",
        "question_bleu4",
        "rationale_rouge_l",
        "distractor_bleu4",
        "answer_accuracy",
        "answer_accuracy/subject=natural_science",
    ] {
        // At the end and, as the untrained baseline (evaluation.at_start), at step 0.
        assert!(metrics.contains(&format!("3,eval,{name},")), "{name}");
        assert!(
            metrics.contains(&format!("\n0,eval,{name},")),
            "{name} at step 0"
        );
    }
    // Each task's own training loss curve, beside the step's loss (12 examples drawn: the
    // seeded mixture draws every task at least once).
    for task in ["question", "rationale", "distractor", "answer"] {
        assert!(
            metrics.contains(&format!(",train,{task}_loss,")),
            "{task}_loss"
        );
    }
    assert!(first.join("model/model.safetensors").is_file());
    // The DataEngine loop: the evaluation's error rates weight the next run's categories.
    let rates: std::collections::BTreeMap<String, f64> =
        serde_json::from_str(&std::fs::read_to_string(first.join("error_rates.json")).unwrap())
            .unwrap();
    assert_eq!(
        rates.keys().collect::<Vec<_>>(),
        ["color", "count", "shape"]
    );
    assert!(rates.values().all(|r| (0.0..=1.0).contains(r)));
    let weights = format!(
        "data.category_weights={}",
        first.join("error_rates.json").display()
    );
    let second = tmp.path().join("second");
    crate::run_briefly("recipes/tiny/coe_multitask.yaml", 2, &[&weights], &second);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(second.join("summary.json")).unwrap())
            .unwrap();
    assert!(
        summary["inputs"]["category_weights"].is_string(),
        "the weights are recorded as an input: {summary}"
    );
    let report = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("report")
        .arg(&first)
        .output()
        .unwrap();
    crate::assert_success(&report);
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(
        text.contains("beside the untrained model (step 0)"),
        "{text}"
    );
}

#[test]
fn a_dataengine_round_names_the_earlier_rounds_recipe_and_its_run_generates() {
    let tmp = tempfile::tempdir().unwrap();
    // The first round: the tiny recipe, briefly, into this test's folder.
    let first = tmp.path().join("round1.yaml");
    std::fs::write(
        &first,
        format!(
            "extends: {}/recipes/tiny/coe_multitask.yaml\nname: round-one\n\
             training: {{max_steps: 2, schedule: {{warmup_steps: 1}}}}\n\
             evaluation: {{every_steps: 2, max_new_tokens: 3, at_start: false}}\n\
             output: {{dir: \"{}/runs/{{name}}\"}}\n",
            env!("CARGO_MANIFEST_DIR"),
            tmp.path().display()
        ),
    )
    .unwrap();
    let second = tmp.path().join("round2");
    let weights = format!("data.category_weights={}", first.display());
    // The second round fine-tunes the first round's model, as MLLM-DataEngine's rounds do.
    let from = format!("model.continue_from={}", first.display());
    crate::run_briefly(
        "recipes/tiny/coe_multitask.yaml",
        2,
        &[&weights, &from, "evaluation.at_start=true"],
        &second,
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(second.join("summary.json")).unwrap())
            .unwrap();
    let inputs = &summary["inputs"];
    assert!(
        inputs["category_weights_run"].is_string()
            && inputs["category_weights"].is_string()
            && inputs["continued_run"].is_string(),
        "{summary}"
    );
    let rounds: Vec<_> = std::fs::read_dir(tmp.path().join("runs"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(rounds.len(), 1, "the first round was trained first");
    assert!(rounds[0].path().join("error_rates.json").is_file());
    // Before its first step the second round is the first round's final model: the same
    // validation loss.
    let eval_loss = |dir: &std::path::Path, step: u64| -> f64 {
        let rows = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
        let row = format!("{step},eval,loss,");
        let line = rows.lines().find(|l| l.starts_with(&row)).unwrap();
        line[row.len()..].parse().unwrap()
    };
    let (end, start) = (eval_loss(&rounds[0].path(), 2), eval_loss(&second, 0));
    assert!((end - start).abs() < 1e-6 * end, "{end} vs {start}");
    // Generation rebuilds the weighted model from the run's plan.
    let items: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string("data/tiny/coe/dev.json").unwrap()).unwrap();
    let data = tmp.path().join("items.json");
    std::fs::write(&data, serde_json::to_string(&items[..1]).unwrap()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("generate")
        .arg(&second)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(tmp.path().join("generated"))
        .args(["--gold", "--device", "cpu"])
        .output()
        .unwrap();
    crate::assert_success(&o);
    // A recipe that writes no error rates is refused before anything trains.
    let o = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["run", "recipes/tiny/coe_multitask.yaml"])
        .arg("data.category_weights=recipes/tiny/longlora_sft.yaml")
        .args(["--device", "cpu", "--out"])
        .arg(tmp.path().join("refused"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success()
            && text.contains("cannot serve: its run leaves no error rates (error_rates.json)"),
        "{text}"
    );
    // Two rounds that weight each other are refused, not recursed into.
    for (me, other) in [("a", "b"), ("b", "a")] {
        std::fs::write(
            tmp.path().join(format!("cycle_{me}.yaml")),
            format!(
                "extends: {}/recipes/tiny/coe_multitask.yaml\nname: cycle-{me}\n\
                 data: {{category_weights: {}/cycle_{other}.yaml}}\n\
                 output: {{dir: \"{}/runs/{{name}}\"}}\n",
                env!("CARGO_MANIFEST_DIR"),
                tmp.path().display(),
                tmp.path().display()
            ),
        )
        .unwrap();
    }
    let o = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("run")
        .arg(tmp.path().join("cycle_a.yaml"))
        .args(["--device", "cpu"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success()
            && text.contains("is needed by the run it needs: cycle-a -> cycle-b -> cycle-a"),
        "{text}"
    );
}

#[test]
fn a_whole_qwen_vl_folder_trains_lora_on_its_decoder_with_tower_and_resampler_frozen() {
    let tmp = tempfile::tempdir().unwrap();
    crate::run_briefly("recipes/tiny/coe_qwen_vl.yaml", 2, &[], tmp.path());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("summary.json")).unwrap())
            .unwrap();
    let trainable = |model: &str, group: &str| -> u64 {
        summary["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["model"] == model && p["group"] == group)
            .map(|p| p["trainable"].as_u64().unwrap())
            .sum()
    };
    // LoRA on c_attn, attn.c_proj, w1, w2 of 2 layers (rank 8, hidden 128, w1/w2 width 96):
    // c_attn 8·(128 + 384), c_proj 8·(128 + 128), w1 and w2 8·(128 + 96) each, per layer.
    let per_layer = 8 * (128 + 384) + 8 * (128 + 128) + 2 * 8 * (128 + 96);
    assert_eq!(trainable("", "adapters"), 2 * per_layer);
    assert_eq!(trainable("vision", "vision"), 0, "the ViT is frozen");
    assert_eq!(
        trainable("connector", "connector"),
        0,
        "PEFT leaves the resampler"
    );
    let metrics = std::fs::read_to_string(tmp.path().join("metrics.csv")).unwrap();
    assert!(metrics.contains("2,eval,question_meteor,"), "{metrics}");
}

#[test]
fn generate_writes_each_tasks_predictions_and_resumes_without_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    crate::run_briefly("recipes/tiny/coe_multitask.yaml", 2, &[], &run);
    let items: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string("data/tiny/coe/dev.json").unwrap()).unwrap();
    let data = tmp.path().join("items.json");
    std::fs::write(&data, serde_json::to_string(&items[..3]).unwrap()).unwrap();
    let out = tmp.path().join("generated");
    let generate = || {
        let o = Command::new(env!("CARGO_BIN_EXE_runner"))
            .arg("generate")
            .arg(&run)
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .args(["--gold", "--device", "cpu"])
            .output()
            .unwrap();
        crate::assert_success(&o);
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert!(generate().contains("3 items generated"));
    let lines = |name: &str| {
        std::fs::read_to_string(out.join(name))
            .unwrap()
            .lines()
            .count()
    };
    for task in ["question", "rationale", "distractor", "answer"] {
        assert_eq!(lines(&format!("{task}.jsonl")), 3);
        assert_eq!(lines(&format!("{task}.references.jsonl")), 3);
    }
    // As if killed while writing the last item: its question line is gone; only it is redone.
    let question = std::fs::read_to_string(out.join("question.jsonl")).unwrap();
    let kept: Vec<&str> = question.lines().take(2).collect();
    std::fs::write(out.join("question.jsonl"), kept.join("\n") + "\n").unwrap();
    let again = generate();
    assert!(
        again.contains("1 items generated") && again.contains("2 already done"),
        "{again}"
    );
    for task in ["question", "rationale", "distractor", "answer"] {
        assert_eq!(lines(&format!("{task}.jsonl")), 3, "{task}: no duplicates");
        assert_eq!(
            lines(&format!("{task}.references.jsonl")),
            3,
            "{task}: no duplicates"
        );
    }
}

#[test]
fn coe_retrieval_uses_a_bert_sentence_encoder_and_caches_its_exemplars() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let run = |out: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_runner"))
            .args(["run", "recipes/tiny/coe_multitask.yaml"])
            .arg("method.retrieval.embedder=tests/fixtures/models/bert-encoder")
            .args(["training.max_steps=2", "training.schedule.warmup_steps=1"])
            .args(["evaluation.every_steps=2", "evaluation.max_new_tokens=3"])
            .args(["--device", "cpu", "--out"])
            .arg(tmp.path().join(out))
            .env("RUNNER_CACHE_DIR", &cache)
            .output()
            .unwrap();
        crate::assert_success(&o);
    };
    let files = || -> Vec<(std::path::PathBuf, SystemTime)> {
        std::fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy() != "digests.tsv")
            .map(|e| (e.path(), e.metadata().unwrap().modified().unwrap()))
            .collect()
    };
    run("a");
    let written = files();
    assert_eq!(written.len(), 1, "the retrieval stage wrote its cache");
    assert!(written[0].0.to_string_lossy().contains("exemplars-"));
    // A second run with the same inputs reads the cache instead of writing it again.
    std::thread::sleep(Duration::from_millis(20));
    run("b");
    assert_eq!(files(), written);
}

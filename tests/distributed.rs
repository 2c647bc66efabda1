//! Data-parallel training on c10d (Gloo, ranks on 127.0.0.1): 2 ranks equal 1 rank with
//! twice the accumulation, ZeRO stages 1-3 equal DDP and each lowers the measured peak, the three launchers (`--nproc`, torchrun,
//! srun) run the same job, a killed rank stops the launch and the rerun resumes, and a world
//! size the plan does not ask for is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tch::Tensor;

const LONGLORA: &str = "recipes/tiny/longlora_sft.yaml";
/// Six steps of one example per micro-batch, a loss row every step, one evaluation at the end.
const SHORT: [&str; 7] = [
    "training.max_steps=6",
    "training.micro_batch_size=1",
    "logging.every_steps=1",
    "evaluation.every_steps=6",
    "training.schedule.warmup_steps=1",
    "output.checkpoint_every_steps=2",
    "evaluation.passkey.trials=1",
];

/// `SHORT` on two ranks with accumulation 2 (one rank's global batch of 4), and `extra`.
fn two_ranks<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = SHORT.to_vec();
    args.extend([
        "training.grad_accumulation=2",
        "training.distributed.devices=2",
    ]);
    args.extend(extra);
    args
}

fn runner(recipe: &str, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runner"));
    c.args(["run", recipe])
        .args(extra)
        .arg("--out")
        .arg(out)
        .args(["--device", "cpu"]);
    c
}

fn stdout(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The run's `train/loss` per step, from metrics.csv.
fn losses(dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join("metrics.csv").display()))
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() == 4 && f[1] == "train" && f[2] == "loss")
                .then(|| (f[0].parse().unwrap(), f[3].parse().unwrap()))
        })
        .collect()
}

/// The run's evaluation metrics, by step and name, from metrics.csv.
fn evaluations(dir: &Path) -> BTreeMap<(u64, String), f64> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() == 4 && f[1] == "eval").then(|| {
                (
                    (f[0].parse().unwrap(), f[2].to_string()),
                    f[3].parse().unwrap(),
                )
            })
        })
        .collect()
}

/// The trainable weights of the run's last checkpoint.
fn weights(dir: &Path) -> BTreeMap<String, Tensor> {
    let mut steps: Vec<PathBuf> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with(".partial"))
        .collect();
    steps.sort();
    let last = steps.last().expect("a checkpoint");
    Tensor::read_safetensors(last.join("trainable.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

/// Asserts two runs' loss curves, evaluations (relative to their size) and final weights
/// agree within `tolerance`.
fn assert_same_run(a: &Path, b: &Path, tolerance: f64) {
    let (ea, eb) = (evaluations(a), evaluations(b));
    assert_eq!(ea.keys().collect::<Vec<_>>(), eb.keys().collect::<Vec<_>>());
    assert!(!ea.is_empty());
    for (key, x) in &ea {
        let y = eb[key];
        assert!(
            (x - y).abs() <= tolerance * x.abs().max(1.0),
            "eval {key:?}: {x} vs {y}"
        );
    }
    let (la, lb) = (losses(a), losses(b));
    assert_eq!(la.len(), lb.len(), "{la:?} vs {lb:?}");
    assert!(!la.is_empty());
    for ((sa, va), (sb, vb)) in la.iter().zip(&lb) {
        assert_eq!(sa, sb);
        assert!((va - vb).abs() <= tolerance, "step {sa}: loss {va} vs {vb}");
    }
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    for (name, x) in &wa {
        let diff = (x - &wb[name]).abs().max().double_value(&[]);
        assert!(diff <= tolerance, "{name}: weights differ by {diff}");
    }
}

fn run_ok(c: &mut Command) -> Output {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", stdout(&o));
    o
}

/// 1 rank with accumulation 4, and 2 ranks (`--nproc 2`) with accumulation 2 each.
fn one_and_two_ranks(recipe: &str, extra: &[&str], tmp: &Path) -> (PathBuf, PathBuf) {
    let (one, two) = (tmp.join("one"), tmp.join("two"));
    let mut args = extra.to_vec();
    args.push("training.grad_accumulation=4");
    run_ok(&mut runner(recipe, &one, &args));
    let mut args = extra.to_vec();
    args.extend([
        "training.grad_accumulation=2",
        "training.distributed.devices=2",
    ]);
    let o = run_ok(runner(recipe, &two, &args).args(["--nproc", "2"]));
    let text = stdout(&o);
    assert!(text.contains("[rank 0] trained 6 steps"), "{text}");
    assert!(text.contains("[rank 1] rank 1 of 2 done"), "{text}");
    (one, two)
}

#[test]
fn two_ranks_train_a_longlora_recipe_as_one_rank_with_twice_the_accumulation() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = one_and_two_ranks(LONGLORA, &SHORT, tmp.path());
    assert_same_run(&one, &two, 1e-5);
    // Rank 0 alone writes: one TensorBoard writer, one evaluation row set.
    let events = std::fs::read_dir(two.join("events")).unwrap().count();
    assert_eq!(events, 1, "one event file");
    let metrics = std::fs::read_to_string(two.join("metrics.csv")).unwrap();
    assert_eq!(
        metrics
            .lines()
            .filter(|l| l.starts_with("6,eval,loss,"))
            .count(),
        1
    );

    // ZeRO-1 and ZeRO-2 shard the optimizer (and the gradients) and take the same steps;
    // stage 2 keeps its moments on the host (here the CPU already).
    for stage in [1, 2] {
        let dir = tmp.path().join(format!("zero{stage}"));
        let zero = format!("training.distributed.zero_stage={stage}");
        let offload = format!("training.distributed.offload_optimizer={}", stage == 2);
        let args = two_ranks(&[&zero, &offload]);
        run_ok(runner(LONGLORA, &dir, &args).args(["--nproc", "2"]));
        assert_same_run(&two, &dir, 1e-5);
    }

    // ZeRO-3 shards the weights too, gathering each layer's around its checkpoint segment;
    // without checkpointing a layer's weights stay whole until the step's end. Shards and
    // moments on the host (here the CPU already) take the same steps.
    let zero3 = "training.distributed.zero_stage=3";
    for (name, extra) in [
        (
            "zero3",
            vec![zero3, "training.distributed.offload_params=true"],
        ),
        (
            "zero3-off",
            vec![zero3, "training.gradient_checkpointing=false"],
        ),
    ] {
        let dir = tmp.path().join(name);
        run_ok(runner(LONGLORA, &dir, &two_ranks(&extra)).args(["--nproc", "2"]));
        assert_same_run(&two, &dir, 1e-5);
    }
    // A ZeRO-3 run stopped at step 3 resumes from its step-2 checkpoint (whole weights and
    // moments) to the same end.
    let resumed = tmp.path().join("zero3-resumed");
    let args = two_ranks(&[zero3]);
    run_ok(runner(LONGLORA, &resumed, &args).args(["--nproc", "2", "--stop-after", "3"]));
    let o = run_ok(runner(LONGLORA, &resumed, &args).args(["--nproc", "2"]));
    assert!(stdout(&o).contains("resumed from step 2"), "{}", stdout(&o));
    assert_same_run(&tmp.path().join("zero3"), &resumed, 1e-6);
}

#[test]
fn two_ranks_train_an_iag_recipe_as_one_rank_with_twice_the_accumulation() {
    let tmp = tempfile::tempdir().unwrap();
    // The teacher trains beside the student (from scratch) instead of coming from its recipe's run.
    let extra = [
        "model.teacher.recipe=null",
        "model.teacher.train=true",
        "training.max_steps=6",
        "training.schedule.warmup_steps=1",
        "training.micro_batch_size=2",
        "logging.every_steps=1",
        "evaluation.every_steps=6",
        "training.schedule.warmup_steps=1",
        "evaluation.max_new_tokens=2",
    ];
    let recipe = "recipes/tiny/iag_distill.yaml";
    let (one, two) = one_and_two_ranks(recipe, &extra, tmp.path());
    assert_same_run(&one, &two, 1e-5);
    // ZeRO-3 over both T5s (the teacher trains here): each block's weights gathered in turn.
    let zero3 = tmp.path().join("zero3");
    let mut args = extra.to_vec();
    args.extend([
        "training.grad_accumulation=2",
        "training.distributed.devices=2",
        "training.distributed.zero_stage=3",
        "training.gradient_checkpointing=true",
    ]);
    run_ok(runner(recipe, &zero3, &args).args(["--nproc", "2"]));
    assert_same_run(&two, &zero3, 1e-5);
}

#[test]
fn torchrun_and_srun_launch_the_same_run_as_nproc() {
    let tmp = tempfile::tempdir().unwrap();
    let args = two_ranks(&[]);
    let nproc = tmp.path().join("nproc");
    run_ok(runner(LONGLORA, &nproc, &args).args(["--nproc", "2"]));

    // torchrun (torch's own, from .venv) runs the binary with its environment and agent store.
    let torchrun = tmp.path().join("torchrun");
    let o = run_ok(
        Command::new(".venv/bin/torchrun")
            .args(["--standalone", "--nproc-per-node", "2", "--no-python"])
            .arg(env!("CARGO_BIN_EXE_runner"))
            .args(["run", LONGLORA])
            .args(&args)
            .arg("--out")
            .arg(&torchrun)
            .args(["--device", "cpu"]),
    );
    assert!(stdout(&o).contains("trained 6 steps"), "{}", stdout(&o));
    assert_same_run(&nproc, &torchrun, 0.0);

    // srun: two tasks of a step on the one-node cluster the sweep tests use.
    let srun = tmp.path().join("srun");
    let o = crate::with_local_slurm(&tmp.path().join("slurm"), |conf| {
        Command::new("srun")
            .args(["-n", "2", "--cpus-per-task", "1", "--export", "ALL"])
            .arg(env!("CARGO_BIN_EXE_runner"))
            .args(["run", LONGLORA])
            .args(&args)
            .arg("--out")
            .arg(&srun)
            .args(["--device", "cpu"])
            .env("SLURM_CONF", conf)
            .output()
            .unwrap()
    });
    assert!(o.status.success(), "{}", stdout(&o));
    assert_same_run(&nproc, &srun, 0.0);
}

#[test]
fn a_killed_rank_stops_the_launch_and_the_rerun_resumes_to_the_same_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let args = two_ranks(&[]);
    let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));
    run_ok(runner(LONGLORA, &whole, &args).args(["--nproc", "2"]));

    let launch = runner(LONGLORA, &killed, &args)
        .args(["--nproc", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once a checkpoint is whole, SIGKILL rank 1 (the launcher's child with RANK=1).
    let started = Instant::now();
    while !killed.join("checkpoints/step-00000002").is_dir() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rank1 = rank_pid(launch.id(), 1);
    Command::new("kill")
        .args(["-9", &rank1.to_string()])
        .status()
        .unwrap();
    let o = launch.wait_with_output().unwrap();
    let text = stdout(&o);
    assert!(!o.status.success(), "{text}");
    assert!(text.contains("error: rank 1 of 2 failed"), "{text}");
    assert!(
        !killed.join("summary.json").exists(),
        "the killed run did not finish"
    );
    let o = run_ok(runner(LONGLORA, &killed, &args).args(["--nproc", "2"]));
    assert!(stdout(&o).contains("resumed from step"), "{}", stdout(&o));
    assert_same_run(&whole, &killed, 0.0);
}

/// The pid of the launcher's child whose environment says RANK=`rank`.
fn rank_pid(launcher: u32, rank: usize) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children"))
        .unwrap_or_default();
    for pid in children.split_whitespace() {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if env
            .split(|&b| b == 0)
            .any(|v| v == format!("RANK={rank}").as_bytes())
        {
            return pid.parse().unwrap();
        }
    }
    panic!("no child of {launcher} has RANK={rank}: {children}");
}

#[test]
fn a_world_size_the_plan_does_not_ask_for_is_refused_with_both_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    // devices: 2 in one process.
    let o = runner(
        LONGLORA,
        &tmp.path().join("a"),
        &["training.distributed.devices=2"],
    )
    .output()
    .unwrap();
    assert!(!o.status.success());
    let text = stdout(&o);
    assert!(
        text.contains("training.distributed.devices is 2, but this run has 1 rank(s)"),
        "{text}"
    );
    assert!(text.contains("--nproc 2"), "{text}");
    // devices: 1 under two ranks (as torchrun would start them), refused before any rendezvous.
    for rank in ["0", "1"] {
        let o = runner(LONGLORA, &tmp.path().join("b"), &[])
            .env("RANK", rank)
            .env("WORLD_SIZE", "2")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", "29999")
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(
            stdout(&o).contains("training.distributed.devices is 1, but this run has 2 rank(s)"),
            "{}",
            stdout(&o)
        );
    }
    // --nproc against the plan: refused before any rank starts.
    let o = runner(LONGLORA, &tmp.path().join("c"), &[])
        .args(["--nproc", "2"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains("--nproc 2, but training.distributed.devices is 1"),
        "{}",
        stdout(&o)
    );
    // ZeRO-3 does not shard QLoRA's 4-bit weights: refused by the plan, naming both keys.
    let o = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["plan", "recipes/tiny/qa_expert_qlora.yaml"])
        .args([
            "training.distributed.devices=2",
            "training.distributed.zero_stage=3",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let text = stdout(&o);
    assert!(
        text.contains("training.distributed.zero_stage")
            && text.contains("training.adapter.quantize")
            && text.contains("use zero_stage: 2"),
        "{text}"
    );
}

#[test]
fn sweep_trials_of_two_ranks_run_locally_and_as_slurm_job_steps_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = std::fs::canonicalize(LONGLORA).unwrap();
    let file = tmp.path().join("sweep.yaml");
    std::fs::write(
        &file,
        format!(
            "kind: sweep\nname: ranks\nrecipe: {}\nfixed:\n  training.max_steps: 4\n  training.schedule.warmup_steps: 1\n  training.micro_batch_size: 1\n  training.grad_accumulation: 1\n  training.distributed.devices: 2\n  evaluation.every_steps: 4\n  evaluation.passkey.trials: 1\nparameters:\n  training.optimizer.lr:\n    values: [1.0e-3, 3.0e-3]\nmetric:\n  name: eval/loss\n  goal: minimize\nmax_parallel: 1\n",
            recipe.display()
        ),
    )
    .unwrap();
    let sweep = |out: &Path, extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_runner"));
        c.arg("sweep")
            .arg(&file)
            .arg("--out")
            .arg(out)
            .args(["--device", "cpu"])
            .args(extra);
        run_ok(&mut c)
    };
    let table = |out: &Path| -> Vec<String> {
        let text = std::fs::read_to_string(out.join("trials.csv")).unwrap();
        let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
        let kept: Vec<usize> = (0..header.len())
            .filter(|&i| !["wall_seconds", "run_dir"].contains(&header[i]))
            .collect();
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                kept.iter().map(|&i| f[i]).collect::<Vec<_>>().join(",")
            })
            .collect()
    };
    let local = tmp.path().join("local");
    sweep(&local, &[]);
    let rows = table(&local);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows[1..].iter().all(|r| r.contains("finished")), "{rows:?}");
    let log = std::fs::read_dir(local.join("logs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("[rank 1] rank 1 of 2 done"), "{log}");
    // --gpus-per-task must match the ranks a trial's plan asks for.
    let o = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("sweep")
        .arg(&file)
        .arg("--out")
        .arg(tmp.path().join("refused"))
        .args(["--device", "cpu", "--gpus-per-task", "4"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains("training.distributed.devices is 2, but --gpus-per-task is 4"),
        "{}",
        stdout(&o)
    );

    let slurm = tmp.path().join("slurm-run");
    let o = crate::with_local_slurm(&tmp.path().join("slurm"), |conf| {
        crate::slurm_sweep(&file, &slurm, conf)
    });
    assert!(o.status.success(), "{}", stdout(&o));
    let script = std::fs::read_to_string(slurm.join("slurm/array.sh")).unwrap();
    assert!(
        script.contains("#SBATCH --ntasks=2") && script.contains("exec srun"),
        "{script}"
    );
    assert_eq!(table(&slurm), rows, "the local launcher's table");
}

#[test]
fn each_zero_stage_lowers_the_measured_peak_and_the_plan_estimates_it() {
    let tmp = tempfile::tempdir().unwrap();
    // 52M weights trained in full, so that moments and gradients outweigh the activations.
    let full = [
        "training.adapter={type: full}",
        "model.arch.num_hidden_layers=4",
    ];
    let mut peaks = Vec::new();
    for stage in [0, 1, 2] {
        let dir = tmp.path().join(format!("zero{stage}"));
        let (measured, estimate) = peak_of_a_wide_llama(&dir, &full, stage);
        // The estimate counts weights, gradients, moments and activations; the allocator's
        // slack and the update's temporaries come on top, never below.
        assert!(
            measured >= 0.8 * estimate && measured <= 2.0 * estimate,
            "stage {stage}: measured {measured:.3e} bytes, estimated {estimate:.3e}"
        );
        peaks.push((measured, estimate));
    }
    let (z0, z1, z2) = (peaks[0], peaks[1], peaks[2]);
    assert!(
        z0.1 > z1.1 && z1.1 > z2.1,
        "the estimate falls stage by stage: {peaks:?}"
    );
    // Stage 1 saves half the moments (0.21 GB here) but keeps an fp32 gradient shard beside
    // the whole gradients (0.10 GB); ranks map their large allocations, so the peaks repeat
    // within a few MB.
    assert!(z1.0 < z0.0 - 0.05e9, "stage 1 below stage 0: {peaks:?}");
    assert!(z2.0 < z1.0, "stage 2 below stage 1: {peaks:?}");

    // Stage 3 shards the weights: shown where frozen weights outweigh the rest (LoRA on a
    // 150M model of 12 layers, 0.6 GB of fp32 weights; one layer is whole at a time).
    let lora = ["model.arch.num_hidden_layers=12"];
    let peaks: Vec<(f64, f64)> = [2, 3]
        .into_iter()
        .map(|stage| {
            let dir = tmp.path().join(format!("lora-zero{stage}"));
            peak_of_a_wide_llama(&dir, &lora, stage)
        })
        .collect();
    let (z2, z3) = (peaks[0], peaks[1]);
    assert!(
        z3.1 < z2.1 - 0.1e9,
        "the estimate halves the weights: {peaks:?}"
    );
    assert!(
        z3.0 >= 0.8 * z3.1 && z3.0 <= 2.0 * z3.1,
        "stage 3: measured {:.3e} bytes, estimated {:.3e}",
        z3.0,
        z3.1
    );
    assert!(z3.0 < z2.0 - 0.1e9, "stage 3 below stage 2: {peaks:?}");
}

/// Two steps of the tiny recipe widened to 1024 (8 heads), with `extra`, on 2 ranks at ZeRO
/// `stage`: the measured peak per rank and `runner plan`'s estimate of it, in bytes.
fn peak_of_a_wide_llama(dir: &Path, extra: &[&str], stage: u8) -> (f64, f64) {
    let zero = format!("training.distributed.zero_stage={stage}");
    let mut args = vec![
        "model.arch.hidden_size=1024",
        "model.arch.intermediate_size=2752",
        "model.arch.num_attention_heads=8",
        "model.arch.num_key_value_heads=8",
        "training.max_steps=2",
        "training.schedule.warmup_steps=1",
        "training.micro_batch_size=1",
        "training.distributed.devices=2",
        "evaluation.every_steps=2",
        "evaluation.perplexity=null",
        "evaluation.passkey.trials=1",
        &zero,
    ];
    args.extend(extra);
    run_ok(runner(LONGLORA, dir, &args).args(["--nproc", "2"]));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let memory = &summary["memory_per_device"];
    (
        memory["measured_peak_bytes"].as_f64().unwrap(),
        memory["estimate_bytes"]["peak"].as_f64().unwrap(),
    )
}

#[test]
fn a_zero_2_run_of_two_ranks_resumes_on_one_rank_with_the_same_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let two = two_ranks(&["training.distributed.zero_stage=2"]);
    let one: Vec<&str> = SHORT
        .iter()
        .copied()
        .chain(["training.grad_accumulation=4"])
        .collect();
    let (whole, moved) = (tmp.path().join("whole"), tmp.path().join("moved"));
    run_ok(&mut runner(LONGLORA, &whole, &one));
    run_ok(runner(LONGLORA, &moved, &two).args(["--nproc", "2", "--stop-after", "3"]));
    // Another world size is another plan: refused unless asked for, naming what changed.
    let o = runner(LONGLORA, &moved, &one).output().unwrap();
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains("training.distributed.devices (2 → 1)"),
        "{}",
        stdout(&o)
    );
    // The checkpoint holds whole moments, whatever the ranks: one rank continues it.
    let o = run_ok(runner(LONGLORA, &moved, &one).arg("--force"));
    assert!(stdout(&o).contains("resumed from step 2"), "{}", stdout(&o));
    assert_same_run(&whole, &moved, 1e-5);
}

//! Sweeps: expansion (grid, paired, seeds, random), the median stopping rule, and whole sweeps
//! of the tiny LongLoRA recipe: results, re-running, deleting a trial, a killed sweep resumed,
//! and the same sweep through a real one-node Slurm cluster (scripts/slurm_local.sh).

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use runner::plan::common::Goal;
use runner::sweep::local::median_rule;
use runner::sweep::spec::SweepSpec;
use runner::sweep::trials::expand;
use serde_json::{json, Value};

fn spec(yaml: Value) -> SweepSpec {
    let mut base = json!({
        "kind": "sweep", "name": "s", "recipe": "r.yaml",
        "metric": {"name": "eval/loss", "goal": "minimize"}
    });
    base.as_object_mut()
        .unwrap()
        .extend(yaml.as_object().unwrap().clone());
    serde_json::from_value(base).unwrap()
}

#[test]
fn a_grid_crosses_parameters_with_paired_groups_and_seeds() {
    let s = spec(json!({
        "parameters": {"training.optimizer.lr": {"values": [0.001, 0.003]}},
        "paired": [{"training.max_steps": [10, 20], "training.schedule.warmup_steps": [1, 2]}],
        "seeds": [7, 8],
        "fixed": {"evaluation.every_steps": 5}
    }));
    let trials = expand(&s);
    assert_eq!(trials.len(), 2 * 2 * 2);
    // The first axis varies slowest, paired keys move together, seeds innermost.
    assert_eq!(
        trials[3].overrides(&s),
        [
            "evaluation.every_steps=5",
            "training.optimizer.lr=0.001",
            "training.max_steps=20",
            "training.schedule.warmup_steps=2",
            "seed=8"
        ]
    );
    assert_eq!(
        trials[4].configuration(),
        "training.optimizer.lr=0.003 training.max_steps=10 training.schedule.warmup_steps=1"
    );
    assert!(trials.iter().all(|t| t
        .params
        .iter()
        .filter(|(k, _)| k == "training.max_steps")
        .count()
        == 1));
}

#[test]
fn a_random_search_draws_within_its_ranges_and_repeats_itself() {
    let s = spec(json!({
        "method": "random", "count": 40, "seed": 3,
        "parameters": {
            "training.optimizer.lr": {"distribution": "log_uniform", "min": 1e-5, "max": 1e-2},
            "training.micro_batch_size": {"distribution": "int_uniform", "min": 1, "max": 4},
            "training.optimizer.weight_decay": {"values": [0.0, 0.1]}
        }
    }));
    let trials = expand(&s);
    assert_eq!(trials.len(), 40);
    assert_eq!(trials, expand(&s), "the sweep's seed fixes the draws");
    let values = |key: &str| -> Vec<Value> {
        trials
            .iter()
            .map(|t| t.params.iter().find(|(k, _)| k == key).unwrap().1.clone())
            .collect()
    };
    let lrs: Vec<f64> = values("training.optimizer.lr")
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(lrs.iter().all(|&x| (1e-5..=1e-2).contains(&x)));
    // Log-uniform: about as many draws below 1e-3.5 as above.
    let low = lrs.iter().filter(|&&x| x < 10f64.powf(-3.5)).count();
    assert!(
        (10..=30).contains(&low),
        "{low} of 40 below the log midpoint"
    );
    let sizes: Vec<i64> = values("training.micro_batch_size")
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert!(sizes.iter().all(|s| (1..=4).contains(s)));
    assert!(
        (1..=4).all(|s| sizes.contains(&s)),
        "every integer is drawn"
    );
    let decays = values("training.optimizer.weight_decay");
    assert!(decays.contains(&json!(0.0)) && decays.contains(&json!(0.1)));
    let other = spec(json!({"method": "random", "count": 40, "seed": 4,
        "parameters": {"training.optimizer.lr": {"distribution": "uniform", "min": 0.0, "max": 1.0}}}));
    assert_ne!(expand(&other)[0].params, trials[0].params);
}

#[test]
fn the_median_rule_stops_a_trial_worse_than_the_others_at_the_same_step() {
    let others = vec![
        vec![(10, 2.0), (20, 1.5)],
        vec![(10, 3.0), (20, 1.0)],
        vec![(10, 4.0)],
    ];
    // At step 10 the median of 2, 3, 4 is 3: a loss of 3.5 is worse, 2.5 is not.
    assert_eq!(
        median_rule(&[(10, 3.5)], &others, Goal::Minimize, 1),
        Some((10, 3.5, 3.0, 3))
    );
    assert_eq!(median_rule(&[(10, 2.5)], &others, Goal::Minimize, 1), None);
    // At step 20 only two others reached it: median (1.5 + 1.0) / 2.
    assert_eq!(
        median_rule(&[(10, 1.0), (20, 1.3)], &others, Goal::Minimize, 1),
        Some((20, 1.3, 1.25, 2))
    );
    assert_eq!(
        median_rule(&[(10, 3.5)], &others, Goal::Minimize, 2),
        None,
        "too early"
    );
    assert_eq!(
        median_rule(&[(30, 9.0)], &others, Goal::Minimize, 1),
        None,
        "no one to compare"
    );
    assert_eq!(
        median_rule(&[(10, 2.5)], &others, Goal::Maximize, 1),
        Some((10, 2.5, 3.0, 3)),
        "for accuracy, lower is worse"
    );
}

/// A 4-trial sweep (2 learning rates × 2 seeds) of the tiny LongLoRA recipe, 20 steps each.
fn write_sweep(dir: &Path) -> PathBuf {
    let recipe = std::fs::canonicalize("recipes/tiny/longlora_sft.yaml").unwrap();
    let text = format!(
        "kind: sweep\nname: t\nrecipe: {}\nfixed:\n  training.max_steps: 20\n  training.schedule.warmup_steps: 2\n  evaluation.every_steps: 10\nparameters:\n  training.optimizer.lr:\n    values: [1.0e-3, 3.0e-3]\nseeds: [1, 2]\nmetric:\n  name: eval/loss\n  goal: minimize\nmax_parallel: 2\n",
        recipe.display()
    );
    let path = dir.join("sweep.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn sweep(file: &Path, out: &Path, extra: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("sweep")
        .arg(file)
        .arg("--out")
        .arg(out)
        .args(["--device", "cpu"])
        .args(extra)
        .output()
        .unwrap();
    crate::assert_success(&o);
    o
}

/// trials.csv without what differs between equal sweeps (wall time, run directory).
fn table(out: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(out.join("trials.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            header
                .iter()
                .zip(l.split(','))
                .filter(|(h, _)| !["wall_seconds", "run_dir"].contains(h))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Waits until a trial of the sweep in `out` is training (after one finished, if `after_one`).
fn wait_for_a_running_trial(out: &Path, after_one: bool) {
    let started = Instant::now();
    loop {
        let record = std::fs::read_to_string(out.join("trials.json")).unwrap_or_default();
        let mid_trial = std::fs::read_dir(out.join("runs"))
            .map(|d| {
                d.flatten().any(|e| {
                    e.path().join("metrics.csv").is_file()
                        && !e.path().join("summary.json").is_file()
                })
            })
            .unwrap_or(false);
        if mid_trial && (!after_one || record.contains("\"finished\"")) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the sweep never got going"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn a_sweep_runs_once_resumes_after_a_kill_and_matches_its_slurm_run() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_sweep(tmp.path());

    // Uninterrupted, two at a time.
    let first = tmp.path().join("first");
    let o = sweep(&file, &first, &["--jobs", "2"]);
    assert!(
        stdout(&o).contains("4 trials, 0 done earlier, 4 to run"),
        "{}",
        stdout(&o)
    );
    let reference = table(&first);
    assert_eq!(reference.len(), 4);
    assert!(reference.iter().all(|r| r["status"] == "finished"));
    assert!(reference
        .iter()
        .all(|r| r["best eval/loss"].parse::<f64>().unwrap() < 6.3));
    let summary = std::fs::read_to_string(first.join("summary.md")).unwrap();
    assert!(
        summary.contains("## Best configuration") && summary.contains("training.optimizer.lr=")
    );
    assert!(summary.contains(" ± "), "mean ± std over the seeds");
    let svg = std::fs::read_to_string(first.join("plot.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<circle").count() == 4);
    assert_eq!(
        std::fs::read_dir(first.join("tensorboard"))
            .unwrap()
            .count(),
        4
    );

    // Again: nothing to do, the same table.
    let o = sweep(&file, &first, &[]);
    assert!(
        stdout(&o).contains("4 done earlier, 0 to run"),
        "{}",
        stdout(&o)
    );
    assert_eq!(table(&first), reference);
    // A deleted run directory: only that trial runs again, with the same result.
    let runs: Vec<PathBuf> = std::fs::read_dir(first.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let deleted = runs
        .iter()
        .find(|p| p.to_string_lossy().contains("/001-"))
        .unwrap();
    std::fs::remove_dir_all(deleted).unwrap();
    let o = sweep(&file, &first, &[]);
    assert!(
        stdout(&o).contains("3 done earlier, 1 to run") && stdout(&o).contains("trial 1 finished")
    );
    assert_eq!(table(&first), reference);

    // Killed (the whole process group, as a lost node) while a trial trains, then resumed.
    let second = tmp.path().join("second");
    let mut child = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("sweep")
        .arg(&file)
        .arg("--out")
        .arg(&second)
        .args(["--device", "cpu", "--jobs", "1"])
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_a_running_trial(&second, true);
    Command::new("kill")
        .args(["-9", "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    let _ = child.wait();
    let o = sweep(&file, &second, &[]);
    let resumed = stdout(&o);
    assert!(
        !resumed.contains("0 to run") && !resumed.contains("4 to run"),
        "{resumed}"
    );
    assert_eq!(
        table(&second),
        reference,
        "each trial once, with the uninterrupted metrics"
    );

    // Ctrl-C (SIGINT to the sweep alone): it stops its running trial, records it as
    // interrupted, says so, and a later run finishes the sweep with the same table.
    let third = tmp.path().join("third");
    let child = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("sweep")
        .arg(&file)
        .arg("--out")
        .arg(&third)
        .args(["--device", "cpu", "--jobs", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_a_running_trial(&third, false);
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let stopped = child.wait_with_output().unwrap();
    assert!(!stopped.status.success());
    assert!(
        stdout(&stopped).contains("interrupted"),
        "{}",
        stdout(&stopped)
    );
    let record = std::fs::read_to_string(third.join("trials.json")).unwrap();
    assert!(record.contains("\"interrupted\""), "{record}");
    sweep(&file, &third, &[]);
    assert_eq!(table(&third), reference);

    // The same sweep as a Slurm job array on a one-node cluster.
    let slurm_out = tmp.path().join("slurm-run");
    let (o, status) = crate::with_local_slurm(&tmp.path().join("slurm"), |conf| {
        let o = crate::slurm_sweep(&file, &slurm_out, conf);
        let status = Command::new(env!("CARGO_BIN_EXE_runner"))
            .arg("sweep")
            .arg(&file)
            .arg("--out")
            .arg(&slurm_out)
            .arg("--status")
            .env("SLURM_CONF", conf)
            .output()
            .unwrap();
        (o, status)
    });
    crate::assert_success(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("submitted Slurm job array"));
    assert_eq!(table(&slurm_out), reference, "the local launcher's table");
    assert!(
        stdout(&status).contains("Slurm job array"),
        "{}",
        stdout(&status)
    );
}

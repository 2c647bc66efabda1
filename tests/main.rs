//! The one integration-test binary (each test binary links libtorch, and linking is slow).

mod architecture;
mod bad_inputs;
mod cli;
mod data;
mod distributed;
mod estimates;
mod evaluation;
mod hostile;
mod iag;
mod identity;
mod meteor;
mod metrics;
mod models;
mod optimizer;
mod plans;
mod report;
mod schedules;
mod sweeps;
mod tensorboard;
mod training;
mod word_tokenize;
mod yaml;

/// Fails the test with the command's output unless it exited successfully.
pub fn assert_success(o: &std::process::Output) {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `runner run RECIPE` for `steps` steps (one of warmup, an evaluation at the end with short
/// generations) on the CPU into `out`, with `extra` overrides; fails the test unless it
/// succeeds.
pub fn run_briefly(recipe: &str, steps: u32, extra: &[&str], out: &std::path::Path) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["run", recipe])
        .arg(format!("training.max_steps={steps}"))
        .arg("training.schedule.warmup_steps=1")
        .arg(format!("evaluation.every_steps={steps}"))
        .arg("evaluation.max_new_tokens=3")
        .args(extra)
        .args(["--device", "cpu", "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert_success(&o);
}

/// Runs `body` with the `SLURM_CONF` of a one-node Slurm cluster (scripts/slurm_local.sh)
/// started in `dir` and stopped after. The cluster listens on fixed ports: one test at a time.
pub fn with_local_slurm<T>(dir: &std::path::Path, body: impl FnOnce(&std::path::Path) -> T) -> T {
    static SLURM: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = SLURM.lock().unwrap_or_else(|e| e.into_inner());
    let start = std::process::Command::new("scripts/slurm_local.sh")
        .arg("start")
        .arg(dir)
        .output()
        .unwrap();
    assert_success(&start);
    let result = body(&dir.join("slurm.conf"));
    let _ = std::process::Command::new("scripts/slurm_local.sh")
        .arg("stop")
        .arg(dir)
        .status();
    result
}

/// `runner sweep FILE --out OUT` on the CPU as a Slurm job array of the cluster at `conf`.
pub fn slurm_sweep(
    file: &std::path::Path,
    out: &std::path::Path,
    conf: &std::path::Path,
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("sweep")
        .arg(file)
        .arg("--out")
        .arg(out)
        .args([
            "--device",
            "cpu",
            "--launcher",
            "slurm",
            "--cpus-per-task",
            "1",
        ])
        .env("SLURM_CONF", conf)
        .output()
        .unwrap()
}

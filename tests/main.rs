//! The one integration-test binary (each test binary links libtorch, and linking is slow).

mod architecture;
mod bad_inputs;
mod cli;
mod data;
mod distributed;
mod estimates;
mod evaluation;
mod iag;
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

/// The one-node Slurm cluster of scripts/slurm_local.sh listens on fixed ports: one test at a
/// time starts it.
pub fn slurm_lock() -> std::sync::MutexGuard<'static, ()> {
    static SLURM: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SLURM.lock().unwrap_or_else(|e| e.into_inner())
}

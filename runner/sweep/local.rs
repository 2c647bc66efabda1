//! The local launcher: each trial is its own `runner run` process (a crash or an out-of-memory
//! kill ends that trial only), `jobs` at once; a trial of N data-parallel ranks is
//! `runner run --nproc N`. CPU threads are shared out (`OMP_NUM_THREADS`), and each concurrent
//! slot gets its own GPUs, one per rank, where there are GPUs (`CUDA_VISIBLE_DEVICES`).
//! The median stopping rule ends a trial whose latest evaluation is worse than the median of
//! the other trials at the same step.

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::record::{better, Status};
use super::spec::{EarlyTermination, Metric};
use crate::artifacts::metrics_csv;
use crate::plan::common::Goal;

/// One trial to run.
pub struct Job {
    /// Its index in the sweep's record.
    pub id: usize,
    /// Arguments to `runner` (`run RECIPE OVERRIDES… --out DIR`).
    pub args: Vec<String>,
    /// Data-parallel ranks (`--nproc` here, `srun`'s tasks under Slurm).
    pub ranks: usize,
    pub run_dir: PathBuf,
    /// Where its output goes.
    pub log: PathBuf,
}

pub struct Settings {
    pub jobs: usize,
    /// Threads per trial.
    pub threads: usize,
    /// GPUs on this machine (0: none).
    pub gpus: usize,
    pub termination: Option<EarlyTermination>,
    pub metric: Metric,
    /// Run directories of every trial of the sweep, finished ones included: the population the
    /// median rule compares against.
    pub peers: Vec<PathBuf>,
}

/// How a trial ended.
pub struct Ended {
    pub id: usize,
    pub status: Status,
    pub error: Option<String>,
    pub wall_seconds: f64,
}

struct Running {
    job: Job,
    child: Child,
    started: Instant,
    slot: usize,
}

/// Runs `jobs`, calling `ended` as each one ends (in the order they end). Returns early, with
/// the running trials reported as interrupted, once `stop` is set (Ctrl-C).
pub fn run(
    jobs: Vec<Job>,
    settings: &Settings,
    stop: &AtomicBool,
    mut ended: impl FnMut(Ended) -> Result<()>,
) -> Result<()> {
    let runner = std::env::current_exe().context("locating the runner executable")?;
    let mut pending: VecDeque<Job> = jobs.into();
    let mut running: Vec<Running> = Vec::new();
    let mut free: Vec<usize> = (0..settings.jobs.max(1)).rev().collect();
    let mut last_check = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            for mut r in running.drain(..) {
                let _ = r.child.kill();
                let _ = r.child.wait();
                ended(Ended {
                    id: r.job.id,
                    status: Status::Interrupted,
                    error: Some("interrupted".into()),
                    wall_seconds: r.started.elapsed().as_secs_f64(),
                })?;
            }
            return Ok(());
        }
        while let (Some(slot), false) = (free.last().copied(), pending.is_empty()) {
            free.pop();
            let job = pending.pop_front().expect("checked non-empty");
            let child = spawn(&runner, &job, settings, slot)?;
            running.push(Running {
                job,
                child,
                started: Instant::now(),
                slot,
            });
        }
        if running.is_empty() {
            return Ok(());
        }
        let mut i = 0;
        while i < running.len() {
            match running[i].child.try_wait()? {
                Some(exit) => {
                    let r = running.swap_remove(i);
                    free.push(r.slot);
                    let (status, error) = match exit.success() {
                        true => (Status::Finished, None),
                        false => (Status::Failed, Some(failure(&r.job, exit))),
                    };
                    ended(Ended {
                        id: r.job.id,
                        status,
                        error,
                        wall_seconds: r.started.elapsed().as_secs_f64(),
                    })?;
                }
                None => i += 1,
            }
        }
        if let Some(rule) = &settings.termination {
            if last_check.elapsed() >= Duration::from_secs(1) {
                last_check = Instant::now();
                let mut i = 0;
                while i < running.len() {
                    match below_median(&running[i].job.run_dir, settings, rule) {
                        Some(why) => {
                            let mut r = running.swap_remove(i);
                            let _ = r.child.kill();
                            let _ = r.child.wait();
                            free.push(r.slot);
                            ended(Ended {
                                id: r.job.id,
                                status: Status::Stopped,
                                error: Some(why),
                                wall_seconds: r.started.elapsed().as_secs_f64(),
                            })?;
                        }
                        None => i += 1,
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spawn(runner: &PathBuf, job: &Job, settings: &Settings, slot: usize) -> Result<Child> {
    if let Some(dir) = job.log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log = File::create(&job.log).with_context(|| format!("creating {}", job.log.display()))?;
    let mut command = Command::new(runner);
    command.args(&job.args);
    if job.ranks > 1 {
        command.args(["--nproc", &job.ranks.to_string()]);
    }
    command
        .env(
            "OMP_NUM_THREADS",
            (settings.threads / job.ranks.max(1)).max(1).to_string(),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if settings.gpus > 0 {
        // A slot's trial gets one GPU per rank.
        let gpus: Vec<String> = (0..job.ranks.max(1))
            .map(|r| ((slot * job.ranks.max(1) + r) % settings.gpus).to_string())
            .collect();
        command.env("CUDA_VISIBLE_DEVICES", gpus.join(","));
    }
    command
        .spawn()
        .with_context(|| format!("starting {}", runner.display()))
}

/// The exit status and the last lines of the trial's log.
fn failure(job: &Job, exit: std::process::ExitStatus) -> String {
    let log = std::fs::read_to_string(&job.log).unwrap_or_default();
    let tail: Vec<&str> = log
        .lines()
        .rev()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("step "))
        .take(3)
        .collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!("{exit}: {}", tail.join(" / "))
}

/// Why the trial at `run_dir` should stop under the median rule, if it should.
fn below_median(
    run_dir: &std::path::Path,
    settings: &Settings,
    rule: &EarlyTermination,
) -> Option<String> {
    let name = &settings.metric.name;
    let read = |dir: &std::path::Path| {
        metrics_csv::read(&dir.join("metrics.csv"))
            .map(|e| metrics_csv::series(&e, name))
            .unwrap_or_default()
    };
    let others: Vec<Vec<(u64, f64)>> = settings
        .peers
        .iter()
        .filter(|p| p.as_path() != run_dir)
        .map(|p| read(p))
        .collect();
    let own = read(run_dir);
    let (step, value, median, n) =
        median_rule(&own, &others, settings.metric.goal, rule.min_evaluations)?;
    Some(format!(
        "stopped at step {step}: {name} {value:.6} is worse than the median {median:.6} of {n} other trial(s)"
    ))
}

/// The median stopping rule on evaluation series `(step, value)`: once the trial has
/// `min_evaluations`, its latest value is compared with the median of the other trials'
/// values at the same step; a worse value stops it. Returns (step, value, median, how many
/// others) when it stops.
pub fn median_rule(
    own: &[(u64, f64)],
    others: &[Vec<(u64, f64)>],
    goal: Goal,
    min_evaluations: u32,
) -> Option<(u64, f64, f64, usize)> {
    if own.len() < min_evaluations as usize {
        return None;
    }
    let (step, value) = *own.last()?;
    let mut at_step: Vec<f64> = others
        .iter()
        .filter_map(|s| s.iter().rev().find(|(t, _)| *t == step).map(|x| x.1))
        .collect();
    if at_step.is_empty() {
        return None;
    }
    at_step.sort_by(f64::total_cmp);
    let n = at_step.len();
    let median = match n % 2 {
        1 => at_step[n / 2],
        _ => (at_step[n / 2 - 1] + at_step[n / 2]) / 2.0,
    };
    better(goal, median, value).then_some((step, value, median, n))
}

//! The Slurm launcher: the sweep's trials as one job array (`sbatch --parsable`, one trial per
//! array task, the task id being the trial's number, at most `max_parallel` at once), followed
//! with `squeue` until every task has left the queue. A trial finished when its run directory
//! holds `summary.json`; otherwise it failed, and its log says why. `runner sweep --status`
//! reads the submitted array back from `slurm/job.json`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::local::{Ended, Job};
use super::record::Status;
use super::spec::Slurm;
use crate::config::safe::{shell_quote, slurm_value_problem};
use crate::files::{read_json, write_atomic};

/// Slurm resources given on the command line; each one set replaces the sweep file's.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Flags {
    /// Slurm partition (over the sweep file's `slurm.partition`).
    #[arg(long)]
    pub partition: Option<String>,
    /// Slurm time limit per trial, HH:MM:SS.
    #[arg(long)]
    pub time: Option<String>,
    #[arg(long)]
    pub cpus_per_task: Option<u32>,
    #[arg(long)]
    pub gpus_per_task: Option<u32>,
    /// Slurm memory per trial, such as 16G.
    #[arg(long)]
    pub mem: Option<String>,
}

impl Flags {
    pub fn over(&self, file: Option<&Slurm>) -> Slurm {
        let base = file.cloned().unwrap_or(Slurm {
            partition: None,
            time: None,
            cpus_per_task: 1,
            gpus_per_task: 0,
            mem: None,
        });
        Slurm {
            partition: self.partition.clone().or(base.partition),
            time: self.time.clone().or(base.time),
            cpus_per_task: self.cpus_per_task.unwrap_or(base.cpus_per_task),
            gpus_per_task: self.gpus_per_task.unwrap_or(base.gpus_per_task),
            mem: self.mem.clone().or(base.mem),
        }
    }
}

/// What `--status` needs of a submitted array.
#[derive(Serialize, Deserialize)]
struct Submitted {
    job_id: String,
    trials: Vec<usize>,
}

const SUBMITTED: &str = "slurm/job.json";

/// The array job script: each task reads its trial's log path and `runner` arguments (one per
/// line) from `slurm/trial-<task id>.args`.
fn script(
    dir: &Path,
    runner: &Path,
    cwd: &Path,
    resources: &Slurm,
    array: &str,
    ranks: usize,
) -> String {
    let mut s = String::from("#!/bin/bash\n");
    s += &format!("#SBATCH --job-name=runner-sweep\n#SBATCH --array={array}\n");
    s += &format!("#SBATCH --output={}/logs/slurm-%A_%a.out\n", dir.display());
    s += &format!("#SBATCH --ntasks={}\n", ranks.max(1));
    s += &format!("#SBATCH --cpus-per-task={}\n", resources.cpus_per_task);
    if let Some(p) = &resources.partition {
        s += &format!("#SBATCH --partition={p}\n");
    }
    if let Some(t) = &resources.time {
        s += &format!("#SBATCH --time={t}\n");
    }
    if let Some(m) = &resources.mem {
        s += &format!("#SBATCH --mem={m}\n");
    }
    if resources.gpus_per_task > 0 {
        // One GPU per rank (the sweep checked that each trial has gpus_per_task ranks).
        s += "#SBATCH --gpus-per-task=1\n";
    }
    s += "set -euo pipefail\n";
    s += &format!("cd {}\n", shell_quote(&cwd.display().to_string()));
    s += "export OMP_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"\n";
    s += &format!(
        "mapfile -t ARGS < {}\"$SLURM_ARRAY_TASK_ID\"'.args'\n",
        shell_quote(&format!("{}/slurm/trial-", dir.display()))
    );
    // Several ranks are the tasks of one job step (runner reads srun's variables).
    let launch = match ranks > 1 {
        true => "srun --kill-on-bad-exit=1 --label ",
        false => "",
    };
    s += &format!(
        "exec {launch}{} \"${{ARGS[@]:1}}\" > \"${{ARGS[0]}}\" 2>&1\n",
        shell_quote(&runner.display().to_string())
    );
    s
}

fn absolute(p: &Path) -> Result<PathBuf> {
    match p.is_absolute() {
        true => Ok(p.to_path_buf()),
        false => Ok(std::env::current_dir()?.join(p)),
    }
}

/// Submits `jobs` as one array and follows it to the end, calling `ended` per trial.
pub fn run(
    dir: &Path,
    jobs: Vec<Job>,
    resources: &Slurm,
    max_parallel: u32,
    mut ended: impl FnMut(Ended) -> Result<()>,
) -> Result<()> {
    for (key, value) in resources.text_values() {
        if let Some(problem) = value.and_then(slurm_value_problem) {
            bail!("--{key}: {problem}\n  hint: write the value as sbatch takes it on its command line");
        }
    }
    let dir = absolute(dir)?;
    let cwd = std::env::current_dir()?;
    let runner = std::env::current_exe().context("locating the runner executable")?;
    // `#SBATCH` lines are read by sbatch, not the shell: a line break would start a new one.
    for path in [&dir, &cwd, &runner] {
        if path.display().to_string().contains(['\n', '\r']) {
            bail!(
                "{:?}: a path with a line break cannot go into a Slurm job script",
                path
            );
        }
    }
    let slurm_dir = dir.join("slurm");
    std::fs::create_dir_all(dir.join("logs"))?;
    std::fs::create_dir_all(&slurm_dir)?;
    for job in &jobs {
        let mut lines = vec![absolute(&job.log)?.display().to_string()];
        lines.extend(job.args.iter().cloned());
        if lines.iter().any(|l| l.contains('\n')) {
            bail!(
                "trial {}: an argument holds a line break, which the job array cannot pass",
                job.id
            );
        }
        write_atomic(
            &slurm_dir.join(format!("trial-{}.args", job.id)),
            (lines.join("\n") + "\n").as_bytes(),
        )?;
    }
    let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    let array = format!("{}%{}", ids.join(","), max_parallel.max(1));
    let ranks = jobs.first().map_or(1, |j| j.ranks);
    if let Some(other) = jobs.iter().find(|j| j.ranks != ranks) {
        bail!(
            "trial {} has {} ranks and trial {} has {ranks}: one job array runs trials of one size\n  hint: sweep training.distributed.devices in separate sweeps",
            other.id,
            other.ranks,
            jobs[0].id
        );
    }
    let script_path = slurm_dir.join("array.sh");
    write_atomic(
        &script_path,
        script(&dir, &runner, &cwd, resources, &array, ranks).as_bytes(),
    )?;
    let output = Command::new("sbatch")
        .arg("--parsable")
        .arg(&script_path)
        .output()
        .context("running sbatch (is Slurm installed and is this a submit host?)")?;
    if !output.status.success() {
        bail!(
            "sbatch refused the job array: {}\n  hint: check the partition and resources (--partition, --time, --mem)",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let job_id = String::from_utf8_lossy(&output.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    write_atomic(
        &dir.join(SUBMITTED),
        &serde_json::to_vec_pretty(&Submitted {
            job_id: job_id.clone(),
            trials: jobs.iter().map(|j| j.id).collect(),
        })?,
    )?;
    eprintln!("submitted Slurm job array {job_id} ({} trials)", jobs.len());
    let started = Instant::now();
    let mut open: Vec<Job> = jobs;
    while !open.is_empty() {
        std::thread::sleep(Duration::from_secs(2));
        let queued = queued_tasks(&job_id)?;
        let mut i = 0;
        while i < open.len() {
            if queued.contains(&open[i].id) {
                i += 1;
                continue;
            }
            let job = open.swap_remove(i);
            let finished = job.run_dir.join("summary.json").is_file();
            let wall = read_json(&job.run_dir.join("summary.json"), "")
                .ok()
                .and_then(|s| s["train_seconds"].as_f64())
                .unwrap_or_else(|| started.elapsed().as_secs_f64());
            ended(Ended {
                id: job.id,
                status: if finished {
                    Status::Finished
                } else {
                    Status::Failed
                },
                error: (!finished).then(|| {
                    let log = std::fs::read_to_string(&job.log).unwrap_or_default();
                    let last = log.lines().rev().find(|l| !l.trim().is_empty());
                    format!(
                        "Slurm task {job_id}_{} ended without a summary: {}",
                        job.id,
                        last.unwrap_or("no output")
                    )
                }),
                wall_seconds: wall,
            })?;
        }
    }
    Ok(())
}

/// The array tasks of `job_id` still pending or running.
fn queued_tasks(job_id: &str) -> Result<BTreeSet<usize>> {
    let output = Command::new("squeue")
        .args(["-h", "-r", "-j", job_id, "-o", "%i"])
        .output()
        .context("running squeue")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        // squeue forgets a job some time after it ends, and then says the id is invalid.
        let err = String::from_utf8_lossy(&output.stderr);
        if err.contains("Invalid job id") {
            return Ok(BTreeSet::new());
        }
        bail!("squeue failed: {}", err.trim());
    }
    Ok(text
        .lines()
        .filter_map(|l| l.trim().rsplit('_').next()?.parse().ok())
        .collect())
}

/// The submitted array's tasks as squeue shows them, if the sweep was submitted to Slurm.
pub fn status(dir: &Path) -> Result<Option<String>> {
    let Ok(submitted) = read_json(&dir.join(SUBMITTED), "") else {
        return Ok(None);
    };
    let submitted: Submitted = serde_json::from_value(submitted)?;
    let output = Command::new("squeue")
        .args(["-h", "-r", "-j", &submitted.job_id, "-o", "%i %T %M"])
        .output();
    let queue = match output {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => String::new(),
    };
    Ok(Some(match queue.is_empty() {
        true => format!(
            "Slurm job array {}: no task queued or running",
            submitted.job_id
        ),
        false => format!(
            "Slurm job array {} (task, state, time):\n{queue}",
            submitted.job_id
        ),
    }))
}

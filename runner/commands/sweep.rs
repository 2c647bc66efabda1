//! `runner sweep SWEEP`: expand the sweep into trials, skip those an earlier invocation
//! finished (matched by plan hash, while their run directory exists), run the rest locally or
//! as a Slurm job array, and render the results (`crate::sweep::results`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};

use super::run::Target;
use crate::document::{document, Document};
use crate::methods::inputs::file_digests;
use crate::plan::layout::InputPath;
use crate::sweep::record::{self, Record, Status};
use crate::sweep::results;
use crate::sweep::spec::SweepSpec;
use crate::sweep::trials::{as_overrides, expand, Trial};
use crate::sweep::{local, slurm};
use crate::train::run_dir::changed_files;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Launcher {
    Local,
    Slurm,
}

/// `runner sweep SWEEP`.
#[derive(clap::Args)]
pub struct Options {
    /// The sweep file.
    pub sweep: PathBuf,
    /// Trials at once (default: the sweep's max_parallel).
    #[arg(long)]
    pub jobs: Option<usize>,
    #[arg(long, value_enum, default_value = "local")]
    pub launcher: Launcher,
    /// The results folder (default: results/sweeps/<name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Show each trial's state (and the Slurm queue), run nothing.
    #[arg(long)]
    pub status: bool,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Target,
    /// Slurm resources given on the command line, over the sweep file's.
    #[command(flatten)]
    pub slurm: slurm::Flags,
}

/// One trial with everything needed to run and record it.
struct Planned {
    trial: Trial,
    overrides: Vec<String>,
    hash: String,
    run_dir: PathBuf,
    /// Data-parallel ranks of the trial (its `training.distributed.devices`).
    ranks: usize,
    /// The digests of the files the trial reads (`file:PATH`), to tell a finished trial whose
    /// data changed since.
    files: Digests,
}

pub fn run(options: &Options, out: &mut dyn Write) -> std::io::Result<i32> {
    let path = options.sweep.as_path();
    let spec = match document(path, &[]) {
        Ok(Document::Sweep(spec)) => *spec,
        Ok(_) => {
            writeln!(
                out,
                "error: {} is not a sweep file (kind: sweep)\n  hint: train a recipe with `runner run`",
                path.display()
            )?;
            return Ok(super::USAGE);
        }
        Err(errors) => {
            super::report(&errors, out)?;
            return Ok(super::INVALID);
        }
    };
    let result = match options.status {
        true => status(path, &spec, options),
        false => sweep(path, &spec, options, out),
    };
    super::finish(result, out)
}

fn results_dir(spec: &SweepSpec, options: &Options) -> PathBuf {
    options
        .out
        .clone()
        .unwrap_or_else(|| Path::new("results/sweeps").join(&spec.name))
}

/// The base recipe, as the sweep file names it (relative to the sweep file).
fn recipe_path(path: &Path, spec: &SweepSpec) -> PathBuf {
    path.parent().unwrap_or(Path::new("")).join(&spec.recipe)
}

/// (`file:PATH`, digest) of the files a plan reads.
type Digests = Vec<(String, String)>;

/// Every trial with its plan hash and run directory.
fn plan(path: &Path, spec: &SweepSpec, dir: &Path) -> Result<Vec<Planned>> {
    let recipe = recipe_path(path, spec);
    // Trials mostly read the same files: each set of paths is digested once.
    let mut digested: Vec<(Vec<InputPath>, Digests)> = Vec::new();
    expand(spec)
        .into_iter()
        .enumerate()
        .map(|(i, trial)| {
            let overrides = trial.overrides(spec);
            let plan = crate::plan::resolve(&recipe, &overrides).map_err(|errors| {
                anyhow!(
                    "trial {i} ({}) does not resolve: {}",
                    overrides.join(" "),
                    errors[0].message
                )
            })?;
            let run_dir = dir.join("runs").join(format!("{i:03}-{}", &plan.hash[..8]));
            let paths = plan.recipe.as_kind().input_paths();
            let files = match digested.iter().find(|(p, _)| *p == paths) {
                Some((_, files)) => files.clone(),
                None => {
                    let files = file_digests(&plan)?;
                    digested.push((paths, files.clone()));
                    files
                }
            };
            Ok(Planned {
                files,
                trial,
                overrides,
                ranks: plan.recipe.training().distributed.devices as usize,
                hash: plan.hash,
                run_dir,
            })
        })
        .collect()
}

/// The earlier record of a trial, if it ended for good and its run directory is still there.
fn done<'a>(earlier: &'a [Record], p: &Planned) -> Option<&'a Record> {
    earlier
        .iter()
        .find(|r| r.plan_hash == p.hash)
        .filter(|r| r.status.is_done() && Path::new(&r.run_dir).is_dir())
}

fn record(i: usize, p: &Planned, status: Status) -> Record {
    Record {
        trial: i,
        plan_hash: p.hash.clone(),
        params: p.trial.params.clone(),
        seed: p.trial.seed,
        status,
        metric: None,
        metrics: Default::default(),
        wall_seconds: 0.0,
        run_dir: p.run_dir.display().to_string(),
        error: None,
    }
}

fn sweep(path: &Path, spec: &SweepSpec, options: &Options, out: &mut dyn Write) -> Result<String> {
    let dir = results_dir(spec, options);
    let planned = plan(path, spec, &dir)?;
    check_ranks(
        &planned,
        options.slurm.over(spec.slurm.as_ref()).gpus_per_task,
    )?;
    let earlier = record::load(&dir)?;
    let mut records: Vec<Record> = Vec::new();
    let mut todo: Vec<usize> = Vec::new();
    // Trials whose data changed since they ran: trained anew (their old run kept beside).
    let mut anew: Vec<usize> = Vec::new();
    for (i, p) in planned.iter().enumerate() {
        let changed = changed_files(&p.run_dir, &p.files);
        if !changed.is_empty() {
            writeln!(out, "trial {i}: {}; training it anew", changed.join("; "))?;
            anew.push(i);
        }
        match done(&earlier, p).filter(|_| changed.is_empty()) {
            Some(r) => records.push(Record {
                trial: i,
                ..r.clone()
            }),
            None => {
                records.push(record(i, p, Status::Interrupted));
                todo.push(i);
            }
        }
    }
    let skipped = planned.len() - todo.len();
    writeln!(
        out,
        "sweep {}: {} trials, {} done earlier, {} to run",
        spec.name,
        planned.len(),
        skipped,
        todo.len()
    )?;
    record::save_spec(&dir, spec)?;
    record::save(&dir, &records)?;
    if !todo.is_empty() {
        let jobs: Vec<local::Job> = todo
            .iter()
            .map(|&i| {
                let force = anew.contains(&i);
                job(path, spec, &planned[i], &dir, i, options.device, force)
            })
            .collect();
        let mut finish =
            |id: usize, status: Status, error: Option<String>, wall: f64| -> Result<()> {
                let p = &planned[id];
                let (metric, metrics) = results::measure(&p.run_dir, &spec.metric);
                let r = &mut records[id];
                *r = Record {
                    status,
                    metric,
                    metrics,
                    wall_seconds: wall,
                    error,
                    ..record(id, p, status)
                };
                let _ = writeln!(
                    out,
                    "trial {id} {}: {} {}{}",
                    status.name(),
                    spec.metric.name,
                    metric.map_or("–".into(), |m| format!("{m:.6}")),
                    r.error
                        .as_deref()
                        .map_or(String::new(), |e| format!(" ({e})"))
                );
                record::save(&dir, &records)
            };
        match options.launcher {
            Launcher::Local => {
                let stop = Arc::new(AtomicBool::new(false));
                let flag = stop.clone();
                // A second handler cannot be installed in one process (tests call in-process
                // only through the binary, so this is the first).
                let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let parallel = options.jobs.unwrap_or(spec.max_parallel as usize).max(1);
                let settings = local::Settings {
                    jobs: parallel,
                    threads: (cores / parallel).max(1),
                    gpus: match options.device {
                        Target::Cpu => 0,
                        _ => tch::Cuda::device_count().max(0) as usize,
                    },
                    termination: spec.early_termination.clone(),
                    metric: spec.metric.clone(),
                    peers: planned.iter().map(|p| p.run_dir.clone()).collect(),
                };
                local::run(jobs, &settings, &stop, |e| {
                    finish(e.id, e.status, e.error, e.wall_seconds)
                })?;
                if stop.load(Ordering::SeqCst) {
                    results::render(&dir, spec, &records)?;
                    bail!("interrupted: finished trials are kept; run the sweep again to finish the rest");
                }
            }
            Launcher::Slurm => {
                let resources = options.slurm.over(spec.slurm.as_ref());
                slurm::run(&dir, jobs, &resources, spec.max_parallel, |e| {
                    finish(e.id, e.status, e.error, e.wall_seconds)
                })?;
            }
        }
    }
    results::render(&dir, spec, &records)?;
    let best = results::aggregates(spec.metric.goal, &records)
        .first()
        .map(|a| {
            format!(
                "best: {} ({} {:.6})",
                as_overrides(&a.configuration),
                spec.metric.name,
                a.mean
            )
        })
        .unwrap_or_else(|| "no trial measured the metric".into());
    Ok(format!(
        "{best}\nresults in {}: trials.csv, summary.md, plot.svg, tensorboard/",
        dir.display()
    ))
}

/// A trial runs as `training.distributed.devices` ranks (`runner run --nproc N` locally, `srun`
/// under Slurm); `--gpus-per-task N` gives each trial N GPUs, one per rank, so its plans must
/// ask for N devices.
fn check_ranks(planned: &[Planned], gpus_per_task: u32) -> Result<()> {
    for (i, p) in planned.iter().enumerate() {
        if gpus_per_task > 0 && p.ranks != gpus_per_task as usize {
            bail!(
                "trial {i}: training.distributed.devices is {}, but --gpus-per-task is {gpus_per_task} (one GPU per rank)\n  hint: add `training.distributed.devices: {gpus_per_task}` to the sweep's `fixed`, or set --gpus-per-task {}",
                p.ranks,
                p.ranks
            );
        }
    }
    Ok(())
}

/// The `runner run` command line of one trial.
fn job(
    path: &Path,
    spec: &SweepSpec,
    p: &Planned,
    dir: &Path,
    i: usize,
    device: Target,
    force: bool,
) -> local::Job {
    let mut args = vec![
        "run".to_string(),
        recipe_path(path, spec).display().to_string(),
    ];
    args.extend(p.overrides.iter().cloned());
    args.push("--out".into());
    args.push(p.run_dir.display().to_string());
    if force {
        args.push("--force".into());
    }
    args.push("--device".into());
    args.push(
        match device {
            Target::Auto => "auto",
            Target::Cpu => "cpu",
            Target::Cuda => "cuda",
        }
        .into(),
    );
    let name = p
        .run_dir
        .file_name()
        .map_or_else(|| i.to_string(), |n| n.to_string_lossy().to_string());
    local::Job {
        id: i,
        args,
        ranks: p.ranks,
        run_dir: p.run_dir.clone(),
        log: dir.join("logs").join(format!("{name}.log")),
    }
}

/// Progress: trials by status, and what Slurm says of a submitted array.
fn status(path: &Path, spec: &SweepSpec, options: &Options) -> Result<String> {
    let dir = results_dir(spec, options);
    let planned = plan(path, spec, &dir)?;
    let earlier = record::load(&dir)?;
    let mut lines = vec![format!("sweep {} ({} trials)", spec.name, planned.len())];
    for (i, p) in planned.iter().enumerate() {
        let state = match earlier.iter().find(|r| r.plan_hash == p.hash) {
            Some(r) if r.status.is_done() && !Path::new(&r.run_dir).is_dir() => {
                "to run (run directory deleted)".to_string()
            }
            Some(r)
                if r.status == Status::Interrupted && p.run_dir.join("metrics.csv").is_file() =>
            {
                let (m, _) = results::measure(&p.run_dir, &spec.metric);
                format!(
                    "running or interrupted ({} so far: {})",
                    spec.metric.name,
                    m.map_or("–".into(), |m| format!("{m:.6}"))
                )
            }
            Some(r) => format!(
                "{} ({})",
                r.status.name(),
                r.metric.map_or("–".into(), |m| format!("{m:.6}"))
            ),
            None => "to run".into(),
        };
        let seed = p.trial.seed.map_or(String::new(), |s| format!(" seed={s}"));
        let trial = format!("{}{seed}", p.trial.configuration());
        lines.push(format!("  {i:3}  {trial:<48}  {state}"));
    }
    if let Some(queue) = slurm::status(&dir).context("asking Slurm")? {
        lines.push(queue);
    }
    Ok(lines.join("\n"))
}

//! The training loop every recipe kind shares: micro-batches with gradient accumulation, AdamW
//! with the plan's schedule and clipping, evaluation, checkpoints with retention, early
//! stopping, exact resume, and the run's artifacts.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use tch::Tensor;

use super::log::MetricsLog;
use super::memory;
use super::optimizer::AdamW;
use super::parallel::DataParallel;
use super::run_dir::{changed_inputs, RunDir, RunState};
use super::schedule::LrSchedule;
use super::task::{self, EvalShare, Evaluation, Task};
use super::zero::{FirstGradient, Update};
use crate::artifacts::tensorboard::HParamValue;
use crate::data::loader::Share;
use crate::digest::FILE_INPUT;
use crate::files::{read_json, write_atomic};
use crate::models::{Checkpointing, Gather, Tape};
use crate::plan::estimate::{estimate, part_totals, GroupCount};
use crate::plan::inventory::Group;
use crate::plan::Plan;

/// How `runner run` was asked to run a plan.
pub struct RunOptions {
    /// The run directory; None derives it from the plan (`output.dir`, name, hash).
    pub out: Option<PathBuf>,
    /// Continue a run directory of another plan.
    pub force: bool,
    /// Stop after this many optimizer steps, as if killed there (tests).
    pub stop_after: Option<u64>,
}

/// What a finished run reports.
pub struct Summary {
    pub dir: PathBuf,
    pub steps: u64,
    pub final_loss: f64,
    pub best: Option<(f64, u64)>,
    pub resumed_from: Option<u64>,
}

/// The run directory a plan writes to by default: `output.dir` with `{name}`, plus the
/// first 8 characters of the plan hash, so changed plans never share a directory.
pub fn default_dir(plan: &Plan) -> PathBuf {
    let out = plan.recipe.output();
    let dir = out.dir.replace("{name}", plan.recipe.name());
    PathBuf::from(format!("{dir}-{}", &plan.hash[..8]))
}

/// The summary of `dir` when it holds a finished run of `plan` from these `inputs` (the runs
/// it builds on and its files' digests; inputs a task adds when built are not compared here):
/// such a run is reported without building its task or reading its data again.
pub fn finished_run(plan: &Plan, dir: &Path, inputs: &[(String, String)]) -> Option<Summary> {
    let summary = read_json(&dir.join(SUMMARY), "").ok()?;
    // A run stopped early (`--stop-after`) has a summary too, but more steps to train.
    if summary["finished"] != json!(true) {
        return None;
    }
    let record = read_json(&dir.join("plan.json"), "").ok()?;
    if record["hash"].as_str() != Some(plan.hash.as_str()) {
        return None;
    }
    let mut then = record["inputs"].as_object()?.clone();
    then.retain(|k, _| k.starts_with(FILE_INPUT) || inputs.iter().any(|(n, _)| n == k));
    if !changed_inputs(&then, inputs).is_empty() {
        return None;
    }
    let steps = summary["steps"].as_u64()?;
    let best = &summary["best"];
    Some(Summary {
        dir: dir.to_path_buf(),
        steps,
        final_loss: summary["final_train_loss"].as_f64().unwrap_or(f64::NAN),
        best: best["value"].as_f64().zip(best["step"].as_u64()),
        resumed_from: Some(steps),
    })
}

/// Trains `task` as `plan` says, as one of `dp`'s ranks. `inputs` name the runs this one
/// builds on (a teacher) by plan hash; they are recorded, and a run directory trained from
/// other inputs is not resumed. Rank 0 alone writes to the run directory.
pub fn train(
    plan: &Plan,
    task: &dyn Task,
    options: &RunOptions,
    inputs: &[(String, String)],
    dp: &DataParallel,
) -> Result<Summary> {
    let recipe = &plan.recipe;
    let t = recipe.training();
    let dir = options.out.clone().unwrap_or_else(|| default_dir(plan));
    let main = dp.is_main();
    let opened = match main {
        true => Some(RunDir::open(&dir, plan, inputs, options.force)?),
        false => None,
    };
    // The other ranks read the checkpoint once rank 0 has checked the directory.
    dp.barrier()?;
    let (run, checkpoint) = match opened {
        Some(opened) => opened,
        None => RunDir::existing(&dir)?,
    };
    let params = task::trainable(task);
    if params.is_empty() {
        bail!("nothing to train: no parameter requires a gradient\n  hint: check training.adapter");
    }
    let mut state = RunState::default();
    let resumed_from = checkpoint.as_ref().map(|c| c.state.step);
    // The checkpoint resumed from was verified; a newer one that failed verification is not it.
    let resumed_dir = checkpoint.as_ref().map(|c| c.dir.clone());
    if let Some(c) = checkpoint.as_ref().filter(|c| c.state.finished) {
        // A finished run is reported, not trained again.
        let summary = Summary {
            dir: run.path.clone(),
            steps: c.state.step,
            final_loss: c.state.loss.unwrap_or(f64::NAN),
            best: c.state.best,
            resumed_from,
        };
        if !main || run.path.join(SUMMARY).exists() {
            return Ok(summary);
        }
        // Killed after its last checkpoint, before its result was written (summary.json is
        // written last): write the result from that checkpoint.
        let state = c.state.clone();
        let c = checkpoint.expect("matched above");
        restore(&params, c.trainable)
            .with_context(|| format!("completing from {}", c.dir.display()))?;
        write_result(plan, task, &summary, &state, options, inputs, None)?;
        return Ok(summary);
    }
    let saved_moments = match checkpoint {
        Some(c) => {
            restore(&params, c.trainable)
                .with_context(|| format!("resuming from {}", c.dir.display()))?;
            state = c.state;
            Some(c.optimizer)
        }
        None => None,
    };
    dp.broadcast(&params.iter().map(|(_, p)| p).collect::<Vec<_>>())?;
    // What the process held before the weights, so that the measured peak is training's own.
    let base = memory::usage(task.device()).map(|(now, _)| now.saturating_sub(weight_bytes(task)));
    // Under ZeRO-3 this shards the weights, now equal on every rank.
    let mut optimizer = Update::new(AdamW::new(&t.optimizer), &params, task, dp)?;
    if let Some(moments) = saved_moments {
        optimizer.load_state(moments, state.step, dp)?;
    }
    let accumulation = t.grad_accumulation as u64;
    let batches = task.loader().batches_per_epoch() as u64;
    let per_epoch = batches.div_ceil(accumulation);
    let total = total_steps(t.max_steps, t.epochs, batches, accumulation);
    let schedule = LrSchedule::new(&t.schedule, t.optimizer.lr, total);
    let evaluation = recipe.evaluation();
    let eval_every = match (evaluation.every_steps, evaluation.every_epochs) {
        (Some(steps), _) => Some(steps),
        (None, Some(epochs)) => Some(((epochs * per_epoch as f64).round() as u64).max(1)),
        (None, None) => None,
    };
    let logging = recipe.logging();
    let output = recipe.output();
    let mut log = match main {
        true => MetricsLog::open(&run.path, logging.csv, logging.tensorboard, resumed_from)?,
        false => MetricsLog::silent(),
    };
    let (best_name, maximize) = task.best_metric();
    if resumed_from.is_none() {
        log.hparams(
            &hparams(plan),
            &["train/loss", &format!("eval/{best_name}")],
        )?;
    }
    let checkpointing = match t.gradient_checkpointing {
        true => Checkpointing::Recompute,
        false => Checkpointing::Off,
    };
    if resumed_from.is_none() && evaluation.at_start {
        optimizer.whole(dp, || evaluate(task, &mut log, &run.path, 0, dp))?;
    }
    // Each step's global batch: `accumulation` micro-batches for each rank, this rank's share.
    let share = Share {
        period: accumulation * dp.size() as u64,
        mine: dp.micro_batches(accumulation),
    };
    let batches = task.loader().stream(state.position, share.clone());
    let mut last_checkpoint: Option<PathBuf> = resumed_dir;
    // The peak of the steps, not of loading (ZeRO-3 held whole weights until it sharded them).
    memory::reset_peak(task.device());
    let mut peak_memory: Option<f64> = None;
    let started = Instant::now();
    let seconds_before = state.seconds;
    while state.step < total {
        let step_start = Instant::now();
        let lr = schedule.lr(state.step);
        let (mut loss_sum, mut tokens, mut samples) = (0.0, 0i64, 0i64);
        optimizer.begin_step(dp)?;
        let gatherer = optimizer.gatherer(dp)?;
        for micro in 0..share.period {
            let (next, batch) = batches
                .recv()
                .map_err(|_| anyhow!("the data stream ended unexpectedly"))?;
            let position = state.position;
            state.position = next;
            let Some(batch) = batch else {
                continue;
            };
            let batch = batch.to_device(task.device());
            tokens += batch.tokens();
            samples += batch.input_ids.size()[0];
            let seed = step_seed(recipe.seed(), state.step, micro);
            let tape = Tape::training(checkpointing, seed)
                .gathering(gatherer.as_ref().map(|g| g as &dyn Gather));
            let loss = task.loss(&batch, &tape, state.step);
            // A failed collective leaves the loss void: report it, not the loss.
            tape.failure()?;
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                bail!(
                    "step {}: the loss is {value} (micro-batch {} of epoch {})\n  hint: lower training.optimizer.lr or use fp32; the last good checkpoint is {}",
                    state.step + 1,
                    position.offset,
                    position.epoch,
                    last_checkpoint.as_ref().map_or("none (no checkpoint yet)".into(), |p| p.display().to_string())
                );
                // Every checkpoint was written with finite weights (checked each step).
            }
            tape.backward(&(loss / accumulation as f64));
            tape.failure()?;
            loss_sum += value / accumulation as f64;
        }
        if state.step == 0 {
            check_gradients(&optimizer.first_gradients(&params, dp)?)?;
        }
        // A kind's own training metrics (CoE's per-task losses) are rank 0's micro-batches'.
        let step_metrics = task.step_metrics();
        let grad_norm = optimizer.step(&params, lr, t.max_grad_norm, dp)?;
        let last_good = || {
            last_checkpoint
                .as_ref()
                .map_or("none (no checkpoint yet)".into(), |p| {
                    p.display().to_string()
                })
        };
        if !grad_norm.is_finite() {
            if !t.skip_nonfinite_steps {
                bail!(
                    "step {}: the gradient norm is {grad_norm}; the step was not applied\n  hint: lower training.optimizer.lr or use fp32 (or set training.skip_nonfinite_steps to skip such steps); the last good checkpoint is {}",
                    state.step + 1,
                    last_good()
                );
            }
            state.skipped_steps += 1;
            log.warn(&format!(
                "step {}: gradient norm {grad_norm}, step skipped ({} so far)",
                state.step + 1,
                state.skipped_steps
            ));
        } else if !optimizer.weights_finite(&params, dp)? {
            bail!(
                "step {}: the update made weights non-finite (gradient norm {grad_norm})\n  hint: lower training.optimizer.lr; the last good checkpoint is {}",
                state.step + 1,
                last_good()
            );
        }
        // The global batch's loss (each rank's is the mean of its micro-batches) and counts.
        let totals = dp.sum(&[loss_sum, tokens as f64, samples as f64])?;
        let loss_sum = totals[0] / dp.size() as f64;
        let (tokens, samples) = (totals[1] as i64, totals[2] as i64);
        state.step += 1;
        state.tokens += tokens;
        state.loss = Some(loss_sum);
        let step_time = step_start.elapsed().as_secs_f64();
        if state.step % logging.every_steps == 0 || state.step == total {
            // The largest over the ranks of the most memory held since the start, less the base.
            let peak = memory::usage(task.device())
                .zip(base)
                .map_or(0.0, |((_, peak), base)| peak.saturating_sub(base) as f64);
            let peak = dp.max(&[peak])?[0];
            peak_memory = Some(peak);
            let mut metrics = vec![
                ("loss".into(), loss_sum),
                ("lr".into(), lr),
                ("grad_norm".into(), grad_norm),
                ("tokens_per_s".into(), tokens as f64 / step_time),
                ("samples_per_s".into(), samples as f64 / step_time),
                ("step_time_s".into(), step_time),
                ("epoch".into(), state.position.epoch as f64),
                ("peak_memory_gib".into(), peak / GIB),
            ];
            metrics.extend(step_metrics);
            log.record(state.step, "train", &metrics)?;
        }
        log.progress(&format!(
            "step {}/{total}  loss {loss_sum:.4}  lr {lr:.2e}  {:.0} tok/s",
            state.step,
            tokens as f64 / step_time
        ));
        let last = state.step == total;
        let (mut stop, mut improved) = (false, false);
        let due = eval_every.is_some_and(|n| state.step % n == 0) || last;
        if let Some(evaluation) = due
            .then(|| optimizer.whole(dp, || evaluate(task, &mut log, &run.path, state.step, dp)))
            .transpose()?
            .flatten()
        {
            state.last_evaluation = Some((state.step, evaluation.metrics.clone()));
            if let Some(&(_, value)) = evaluation.metrics.iter().find(|(n, _)| n == best_name) {
                let better = state.best.is_none_or(|(best, _)| {
                    let delta = t.early_stopping.as_ref().map_or(0.0, |e| e.min_delta);
                    match maximize {
                        true => value > best + delta,
                        false => value < best - delta,
                    }
                });
                if better {
                    state.best = Some((value, state.step));
                    state.since_best = 0;
                    improved = true;
                } else {
                    state.since_best += 1;
                }
                stop = t
                    .early_stopping
                    .as_ref()
                    .is_some_and(|e| state.since_best >= e.patience);
            }
        }
        // Rank 0 evaluated; every rank stops and saves with it.
        let decided = dp.from_main(&[f64::from(u8::from(stop)), f64::from(u8::from(improved))])?;
        let (stop, improved) = (decided[0] == 1.0, decided[1] == 1.0);
        let save_now = output
            .checkpoint_every_steps
            .is_some_and(|n| state.step % n == 0);
        // The best weights get a checkpoint of their own when they are to be kept.
        if save_now || last || stop || (improved && output.keep_best) {
            state.seconds = seconds_before + started.elapsed().as_secs_f64();
            state.finished = last || stop;
            let keep = output.keep_last as usize;
            // Under ZeRO the moments (and under ZeRO-3 the weights) are gathered from every
            // rank; rank 0 writes.
            let moments = optimizer.state(dp)?;
            let saved = optimizer.whole(dp, || {
                main.then(|| run.save(&params, &moments, &state, keep, output.keep_best))
                    .transpose()
            })?;
            if saved.is_some() {
                last_checkpoint = saved;
            }
        }
        if stop || options.stop_after.is_some_and(|s| state.step >= s) {
            break;
        }
    }
    log.end_progress();
    optimizer.finish(dp)?;
    state.seconds = seconds_before + started.elapsed().as_secs_f64();
    let summary = Summary {
        dir: run.path.clone(),
        steps: state.step,
        final_loss: state.loss.unwrap_or(f64::NAN),
        best: state.best,
        resumed_from,
    };
    if !main {
        return Ok(summary);
    }
    write_result(plan, task, &summary, &state, options, inputs, peak_memory)?;
    Ok(summary)
}

/// The trained weights (`adapter/` or `model/`), then the row of the table of runs and
/// `summary.json`, the mark that the run is whole.
fn write_result(
    plan: &Plan,
    task: &dyn Task,
    summary: &Summary,
    state: &RunState,
    options: &RunOptions,
    inputs: &[(String, String)],
    peak_memory: Option<f64>,
) -> Result<()> {
    task.save(&summary.dir)?;
    write_summary(
        plan,
        task,
        summary,
        state,
        runs_table(options),
        inputs,
        peak_memory,
    )
}

/// A finished run's mark, written after everything else it writes.
const SUMMARY: &str = "summary.json";

/// The table of runs: results/runs.csv, or beside an explicit --out directory.
fn runs_table(options: &RunOptions) -> PathBuf {
    match &options.out {
        Some(out) => out.parent().unwrap_or(Path::new(".")).join("runs.csv"),
        None => PathBuf::from("results/runs.csv"),
    }
}

/// Evaluates at `step` and, on rank 0, logs the metrics, the samples and the evaluation's
/// files, and returns the evaluation. A kind that shares its evaluation has every rank evaluate
/// its part, the parts' sums added up; another evaluates on rank 0 alone.
fn evaluate(
    task: &dyn Task,
    log: &mut MetricsLog,
    dir: &Path,
    step: u64,
    dp: &DataParallel,
) -> Result<Option<Evaluation>> {
    let shared = task.shares_evaluation() && dp.size() > 1;
    if !shared && !dp.is_main() {
        return Ok(None);
    }
    let share = match shared {
        true => EvalShare {
            rank: dp.rank(),
            size: dp.size(),
        },
        false => EvalShare::whole(),
    };
    let mut evaluation = task.evaluate(share)?;
    let sums: Vec<f64> = (evaluation.partials.iter())
        .flat_map(|p| [p.sum, p.weight])
        .collect();
    let sums = match shared {
        true => dp.sum(&sums)?,
        false => sums,
    };
    for (p, whole) in evaluation.partials.iter_mut().zip(sums.chunks(2)) {
        (p.sum, p.weight) = (whole[0], whole[1]);
        evaluation.metrics.push((p.name.clone(), p.value()));
    }
    if !dp.is_main() {
        return Ok(None);
    }
    log.record(step, "eval", &evaluation.metrics)?;
    for (tag, text) in &evaluation.samples {
        log.text(step, &format!("eval/{tag}"), text)?;
    }
    for (name, contents) in &evaluation.files {
        write_atomic(&dir.join(name), contents.as_bytes())?;
    }
    Ok(Some(evaluation))
}

/// Optimizer steps: `max_steps`, or the steps that consume `epochs` passes of `batches`
/// micro-batches (accumulated `accumulation` at a time), whichever ends first.
fn total_steps(
    max_steps: Option<u64>,
    epochs: Option<f64>,
    batches: u64,
    accumulation: u64,
) -> u64 {
    let micro = |e: f64| (e * batches as f64).ceil() as u64;
    let by_epochs = epochs.map(|e| micro(e).div_ceil(accumulation.max(1)));
    match (max_steps, by_epochs) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => batches.div_ceil(accumulation.max(1)),
    }
}

/// The dropout seed of one micro-batch: a function of the plan seed and the position in
/// training only, so a resumed run draws the masks the uninterrupted one drew.
fn step_seed(seed: u64, step: u64, micro: u64) -> i64 {
    let mixed = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(step.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(micro);
    (mixed >> 1) as i64
}

/// Copies a checkpoint's trainable tensors into the parameters.
pub fn restore(params: &[(String, Tensor)], saved: Vec<(String, Tensor)>) -> Result<()> {
    let mut saved: std::collections::BTreeMap<String, Tensor> = saved.into_iter().collect();
    for (name, p) in params {
        let t = saved
            .remove(name)
            .ok_or_else(|| anyhow!("the checkpoint has no `{name}`\n  hint: it was written by another plan; use another --out"))?;
        let mut p = p.shallow_clone();
        tch::no_grad(|| p.f_copy_(&t))?;
    }
    Ok(())
}

/// After the first backward pass, every trainable parameter must have a finite gradient, and a
/// non-zero one unless it is a LoRA A whose B is still zero (PEFT's init makes that so).
pub fn check_gradients(first: &[FirstGradient]) -> Result<()> {
    let mut bad = Vec::new();
    for g in first {
        let name = &g.name;
        let problem = if !g.defined {
            Some("no gradient")
        } else if !g.finite {
            Some("a non-finite gradient")
        } else if g.zero {
            let partner = name.replace("lora_A", "lora_B");
            let b_is_zero =
                partner != *name && first.iter().any(|b| b.name == partner && b.weight_zero);
            (!b_is_zero).then_some("a zero gradient")
        } else {
            None
        };
        if let Some(problem) = problem {
            bad.push(format!("{name} ({problem})"));
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    let shown = bad[..bad.len().min(8)].join(", ");
    bail!(
        "step 0: {} trainable parameter(s) got no usable gradient: {shown}{}\n  hint: a parameter the loss does not reach trains nothing — check training.adapter (targets, also_train) and that the loss covers some tokens",
        bad.len(),
        if bad.len() > 8 { ", …" } else { "" }
    )
}

/// The plan values worth comparing runs by, for TensorBoard's HParams view.
fn hparams(plan: &Plan) -> Vec<(String, HParamValue)> {
    let t = plan.recipe.training();
    let mut params = vec![
        (
            "kind".to_string(),
            HParamValue::Text(plan.recipe.kind().into()),
        ),
        ("lr".into(), HParamValue::Number(t.optimizer.lr)),
        (
            "weight_decay".into(),
            HParamValue::Number(t.optimizer.weight_decay),
        ),
        (
            "micro_batch_size".into(),
            HParamValue::Number(t.micro_batch_size as f64),
        ),
        (
            "grad_accumulation".into(),
            HParamValue::Number(t.grad_accumulation as f64),
        ),
        (
            "precision".into(),
            HParamValue::Text(format!("{:?}", t.precision).to_lowercase()),
        ),
        (
            "gradient_checkpointing".into(),
            HParamValue::Bool(t.gradient_checkpointing),
        ),
        (
            "seed".into(),
            HParamValue::Number(plan.recipe.seed() as f64),
        ),
        (
            "plan_hash".into(),
            HParamValue::Text(plan.hash[..12].into()),
        ),
    ];
    if let crate::plan::training::Adapter::Lora { rank, alpha, .. } = &t.adapter {
        params.push(("lora_rank".into(), HParamValue::Number(*rank as f64)));
        params.push(("lora_alpha".into(), HParamValue::Number(*alpha)));
    }
    params
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Bytes of every weight the task holds (frozen ones too).
fn weight_bytes(task: &dyn Task) -> u64 {
    task.stores().iter().map(|(_, store)| store.bytes()).sum()
}

/// One row appended to the table of runs (once per run directory), then `summary.json` in the
/// run directory: last, as the mark that the run's results are all written.
/// `peak_memory` is the measured peak of a rank (bytes beyond what the process held before its
/// weights), written beside the plan's estimate.
fn write_summary(
    plan: &Plan,
    task: &dyn Task,
    s: &Summary,
    state: &RunState,
    index: PathBuf,
    inputs: &[(String, String)],
    peak_memory: Option<f64>,
) -> Result<()> {
    let estimate = estimate(&plan.recipe).memory_per_device;
    let counts: Vec<GroupCount> = task
        .stores()
        .into_iter()
        .flat_map(|(prefix, store)| {
            store.counts().into_iter().map(move |c| GroupCount {
                part: prefix.trim_end_matches('.').to_string(),
                group: Group::name(c.group).to_string(),
                total: c.total.max(0) as u64,
                trainable: c.trainable.max(0) as u64,
            })
        })
        .collect();
    let last_evaluation = state.last_evaluation.as_ref().map(|(step, metrics)| {
        let metrics: serde_json::Map<_, _> =
            metrics.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        json!({ "step": step, "metrics": metrics })
    });
    let summary = json!({
        "name": plan.recipe.name(),
        "kind": plan.recipe.kind(),
        "plan_hash": plan.hash,
        "steps": s.steps,
        "finished": state.finished,
        "final_train_loss": s.final_loss,
        "last_evaluation": last_evaluation,
        "best": s.best.map(|(value, step)| json!({ "metric": task.best_metric().0, "value": value, "step": step })),
        "resumed_from_step": s.resumed_from,
        "inputs": inputs.iter().filter(|(k, _)| !k.starts_with(FILE_INPUT)).map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "files": inputs.iter().filter_map(|(k, v)| Some((k.strip_prefix(FILE_INPUT)?.to_string(), json!(v)))).collect::<serde_json::Map<_, _>>(),
        "tokens": state.tokens,
        "memory_per_device": {
            "measured_peak_bytes": peak_memory,
            "estimate_bytes": {
                "weights": estimate.weights,
                "gradients": estimate.gradients,
                "optimizer": estimate.optimizer,
                "activations": if plan.recipe.training().gradient_checkpointing { estimate.activations_checkpointed } else { estimate.activations },
                "peak": estimate.peak,
            },
        },
        "train_seconds": state.seconds,
        "skipped_steps": state.skipped_steps,
        "device": format!("{:?}", task.device()),
        "parameter_totals": part_totals(&counts).iter().map(|p| json!({ "model": p.part, "total": p.total, "trainable": p.trainable, "adapters": p.adapters })).collect::<Vec<_>>(),
        "parameters": counts.iter().map(|c| json!({ "model": c.part, "group": c.group, "total": c.total, "trainable": c.trainable })).collect::<Vec<_>>(),
        "versions": { "runner": env!("CARGO_PKG_VERSION"), "tch": "0.24.0", "libtorch": "2.11.0" },
    });
    append_run_row(&index, plan, s, state)?;
    write_atomic(
        &s.dir.join(SUMMARY),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )
}

fn append_run_row(path: &Path, plan: &Plan, s: &Summary, state: &RunState) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let new = !path.exists();
    let (best_value, best_step) = s.best.map_or((String::new(), String::new()), |(v, st)| {
        (v.to_string(), st.to_string())
    });
    let row = format!(
        "{},{},{},{},{},{},{best_value},{best_step},{:.1}",
        plan.recipe.name(),
        plan.recipe.kind(),
        &plan.hash[..12],
        s.dir.display(),
        s.steps,
        s.final_loss,
        state.seconds
    );
    // A run completed after a kill may have appended its row already: the same row but for
    // the seconds (its last checkpoint's). A run trained anew in the directory is a new row.
    let same =
        |line: &str| line.rsplit_once(',').map(|(a, _)| a) == row.rsplit_once(',').map(|(a, _)| a);
    if !new && std::fs::read_to_string(path)?.lines().any(same) {
        return Ok(());
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot append to {}", path.display()))?;
    let mut text = String::new();
    if new {
        text +=
            "name,kind,plan_hash,dir,steps,final_train_loss,best_value,best_step,train_seconds\n";
    }
    text += &row;
    text += "\n";
    f.write_all(text.as_bytes())?;
    f.flush()?;
    Ok(())
}

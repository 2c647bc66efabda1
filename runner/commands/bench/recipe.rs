//! `runner bench RECIPE`: step time, tokens/s and peak memory of the plan's training step, and
//! of the same model, batch and precision in PyTorch (transformers + PEFT, run by
//! `scripts/bench_pytorch.py` in the same invocation, `pytorch.rs`), as ratios.
//!
//! Both sides train on the same batch (`Task::bench_batch`: random tokens filling
//! `micro_batch_size × max_length` for `longlora_sft`, the first real micro-batch for the
//! others), from the same weights, with the plan's optimizer, clipping, precision,
//! checkpointing and adapter; their first losses are reported side by side. S²-Attn is turned
//! off on the runner side: transformers has no such attention, and the point is the same model.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde_json::{json, Value};
use tch::Device;

use super::pytorch;
use crate::commands::finish;
use crate::commands::run::{launch_ranks, Target};
use crate::distributed::world::World;
use crate::methods::{self, inputs::InputRuns};
use crate::models::Checkpointing;
use crate::models::{Gather, Tape};
use crate::plan::Plan;
use crate::train::memory::{reset_peak, usage};
use crate::train::optimizer::AdamW;
use crate::train::parallel::DataParallel;
use crate::train::zero::Update;

const MIB: f64 = 1024.0 * 1024.0;

/// `runner bench recipe RECIPE [KEY=VALUE…]`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    recipe: PathBuf,
    /// Overrides, KEY.PATH=VALUE.
    overrides: Vec<String>,
    #[arg(long, default_value_t = 10)]
    steps: u64,
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Skip the PyTorch side.
    #[arg(long)]
    no_pytorch: bool,
    #[arg(long, value_enum, default_value = "auto")]
    device: Target,
    /// Time the step of N local data-parallel ranks (the plan's training.distributed.devices
    /// must be N); tokens/s counts every rank's batch.
    #[arg(long, value_name = "N")]
    nproc: Option<usize>,
    /// Keep what only the paper's method has (LongLoRA's S²-Attn) on the runner side; the
    /// PyTorch side, which has no such thing, runs without it.
    #[arg(long)]
    keep_method: bool,
    /// Also write the figures as JSON to FILE (rank 0).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

impl Args {
    pub fn run(&self, out: &mut dyn Write) -> std::io::Result<i32> {
        let options = BenchOptions {
            steps: self.steps,
            warmup: self.warmup,
            pytorch: !self.no_pytorch,
            target: self.device,
            keep_method: self.keep_method,
        };
        match self.nproc.filter(|&n| n > 1) {
            Some(n) => {
                match crate::commands::resolve_or_report(&self.recipe, &self.overrides, out)? {
                    Ok(plan) => launch_ranks(n, &plan, out),
                    Err(code) => Ok(code),
                }
            }
            None => run(
                &self.recipe,
                &self.overrides,
                options,
                self.json.as_deref(),
                out,
            ),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    pub steps: u64,
    pub warmup: u64,
    /// Also run the PyTorch script.
    pub pytorch: bool,
    pub target: Target,
    /// Keep the method's own parts (`--keep-method`).
    pub keep_method: bool,
}

pub fn run(
    recipe: &Path,
    overrides: &[String],
    options: BenchOptions,
    json: Option<&Path>,
    out: &mut dyn Write,
) -> std::io::Result<i32> {
    match crate::commands::resolve_or_report(recipe, overrides, out)? {
        Ok(plan) => {
            let written = bench(&plan, options).and_then(|(report, record)| {
                if let (Some(path), Some(mut record)) = (json, record) {
                    record["recipe_file"] = json!(recipe.display().to_string());
                    record["overrides"] = json!(overrides);
                    let text = serde_json::to_string_pretty(&record)?;
                    crate::files::write_atomic(path, text.as_bytes())?;
                }
                Ok(report)
            });
            finish(written, out)
        }
        Err(code) => Ok(code),
    }
}

/// The report, and on rank 0 the same figures as JSON.
fn bench(plan: &Plan, options: BenchOptions) -> Result<(String, Option<Value>)> {
    if plan.recipe.training().distributed.devices > 1 {
        crate::train::memory::map_large_allocations();
    }
    let world = World::from_env()?;
    let device = options.target.device_of_rank(world.local_rank)?;
    let dp = DataParallel::join(world, device, &plan.recipe.training().distributed)?;
    let mut plan = plan.clone();
    if !options.keep_method {
        plan.recipe.as_kind_mut().as_in_pytorch();
    }
    let inputs = methods::inputs::gather(&plan, InputRuns::IfPresent)?;
    let task = methods::build(&plan, &inputs, device)?;
    let batch = task.bench_batch();
    // On the CPU the peak counts from what the process holds besides the models (libraries, the
    // data, METEOR's WordNet), which the PyTorch script, reading one batch, does not load: the
    // resident set now, less the models' bytes. The script measures itself the same way.
    // Counted now: ZeRO-3 empties the stores' weights once the optimizer is made.
    crate::models::store::release_freed_memory();
    let stores = task.stores();
    let model_bytes: u64 = stores.iter().map(|(_, s)| s.bytes()).sum();
    let parameters: i64 = stores
        .iter()
        .flat_map(|(_, s)| s.iter().map(|(_, t, _)| t.numel() as i64))
        .sum();
    let besides_models = match device {
        Device::Cpu => usage(device).map_or(0, |(now, _)| now.saturating_sub(model_bytes)),
        _ => 0,
    };
    let t = plan.recipe.training();
    let (batch_size, seq_len) = batch.input_ids.size2()?;
    let params = crate::train::task::trainable(task.as_ref());
    let trainable: i64 = params.iter().map(|(_, t)| t.numel() as i64).sum();
    // Before the first step (and before ZeRO-3 frees the weights): what PyTorch starts from.
    let reference = match options.pytorch && dp.is_main() {
        true => Some(pytorch::prepare(&plan, task.as_ref(), &batch)?),
        false => None,
    };
    let mut optimizer = Update::new(AdamW::new(&t.optimizer), &params, task.as_ref(), &dp)?;
    let mode = match t.gradient_checkpointing {
        true => Checkpointing::Recompute,
        false => Checkpointing::Off,
    };
    let mut times = Vec::new();
    let mut phases = Phases::default();
    let mut losses = Vec::new();
    // The step's peak: what the task holds plus what a step adds, not the building's transients
    // (QLoRA quantises dense weights at load).
    reset_peak(device);
    for step in 0..options.warmup + options.steps {
        let timed = step >= options.warmup;
        let mut clock = Clock::start(device);
        optimizer.begin_step(&dp)?;
        let loss = {
            let gatherer = optimizer.gatherer(&dp)?;
            let tape = Tape::training(mode, step as i64)
                .gathering(gatherer.as_ref().map(|g| g as &dyn Gather));
            let loss = task.loss(&batch, &tape, step);
            tape.failure()?;
            phases.forward.extend(clock.lap(timed));
            tape.backward(&loss);
            tape.failure()?;
            phases.backward.extend(clock.lap(timed));
            loss
        };
        optimizer.step(&params, t.optimizer.lr, t.max_grad_norm, &dp)?;
        losses.push(loss.double_value(&[]));
        phases.update.extend(clock.lap(timed));
        times.extend(clock.total(timed));
    }
    if !dp.is_main() {
        return Ok((format!("rank {} of {} done", dp.rank(), dp.size()), None));
    }
    // Every rank trains its own batch of the same size.
    let tokens = (batch_size * seq_len) as f64 * dp.size() as f64;
    let ours = json!({
        "step_time_s": median(&mut times),
        "phases_s": phases.medians(),
        "tokens_per_s": tokens / median(&mut times),
        "peak_memory_mib": usage(device).map(|(_, peak)| peak.saturating_sub(besides_models) as f64 / MIB),
        "loss_first": losses.first(),
        "loss_last": losses.last(),
        "trainable_params": trainable,
    });
    let mut report = format!(
        "bench {} ({}), batch {batch_size} × {seq_len} tokens × {} rank(s) of {} thread(s), ZeRO stage {}, {:?}, checkpointing {}, {} timed steps after {} warmup, device {device:?}\n",
        plan.recipe.name(),
        &plan.hash[..8],
        dp.size(),
        tch::get_num_threads(),
        dp.zero_stage,
        t.precision,
        t.gradient_checkpointing,
        options.steps,
        options.warmup
    );
    report += &format!(
        "{:<10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>12}\n",
        "", "step s", "forward", "backward", "update", "tokens/s", "peak MiB"
    );
    report += &row("runner", &ours);
    let (mut theirs, mut missing) = (Value::Null, Value::Null);
    match reference {
        Some(Ok(prepared)) => {
            theirs = pytorch::run(
                &prepared,
                device,
                (options.warmup, options.steps),
                dp.size(),
            )?;
            report += &row("pytorch", &theirs);
            report += &comparison(&ours, &theirs, prepared.same_weights);
            if options.keep_method {
                report += "(runner keeps the recipe's method, PyTorch runs without it)\n";
            }
        }
        Some(Err(why)) => {
            report += &format!("(no PyTorch reference: {why})");
            missing = json!(why);
        }
        None => {}
    }
    let record = json!({
        "recipe": plan.recipe.name(),
        "kind": plan.recipe.kind(),
        "plan_hash": plan.hash,
        "device": format!("{device:?}"),
        "batch": [batch_size, seq_len],
        "ranks": dp.size(),
        "threads": tch::get_num_threads(),
        "precision": t.precision,
        "gradient_checkpointing": t.gradient_checkpointing,
        "keep_method": options.keep_method,
        "parameters": parameters,
        "runner": ours,
        "pytorch": theirs,
        "no_pytorch_reference": missing,
    });
    Ok((report.trim_end().to_string(), Some(record)))
}

/// The ratios, and whether both sides computed the same thing: their first losses (the same
/// weights and batch give the same loss, up to dropout and rounding) and trainable parameters.
fn comparison(ours: &Value, theirs: &Value, same_weights: bool) -> String {
    let ratio = |key: &str| {
        ours[key].as_f64().unwrap_or(f64::NAN) / theirs[key].as_f64().unwrap_or(f64::NAN)
    };
    let loss = |r: &Value| r["loss_first"].as_f64().unwrap_or(f64::NAN);
    let (a, b) = (loss(ours), loss(theirs));
    format!(
        "runner / pytorch: step time {:.2}×, tokens/s {:.2}×, peak memory {:.2}×\n\
         first loss: runner {a:.6}, pytorch {b:.6} ({}); trainable parameters: runner {}, pytorch {}\n",
        ratio("step_time_s"),
        ratio("tokens_per_s"),
        ratio("peak_memory_mib"),
        match same_weights {
            true => format!("relative difference {:.1e}, same weights and batch", (a - b).abs() / b.abs()),
            false => "different random weights: the 4-bit base stays in runner".to_string(),
        },
        ours["trainable_params"],
        theirs["trainable_params"],
    )
}

fn row(name: &str, r: &Value) -> String {
    let f = |k: &str| {
        r[k].as_f64()
            .map_or("n/a".to_string(), |v| format!("{v:.4}"))
    };
    let phase = |k: &str| {
        r["phases_s"][k]
            .as_f64()
            .map_or("n/a".to_string(), |v| format!("{v:.4}"))
    };
    format!(
        "{name:<10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>12}\n",
        f("step_time_s"),
        phase("forward"),
        phase("backward"),
        phase("update"),
        f("tokens_per_s"),
        f("peak_memory_mib")
    )
}

/// Each timed step's forward (to the loss; ZeRO-3's gathers, and the fused head's gradient
/// products, which PyTorch makes in its backward), backward (with checkpointing's
/// recomputation) and update (ZeRO's reductions, clipping, AdamW): where a step's time goes,
/// on both sides.
#[derive(Default)]
struct Phases {
    forward: Vec<f64>,
    backward: Vec<f64>,
    update: Vec<f64>,
}

impl Phases {
    fn medians(&mut self) -> Value {
        json!({
            "forward": median(&mut self.forward),
            "backward": median(&mut self.backward),
            "update": median(&mut self.update),
        })
    }
}

/// Wall-clock laps of one step; on CUDA each lap waits for the device first, so that a phase's
/// time is its kernels' and not only their launches.
struct Clock {
    device: Device,
    start: Instant,
    lap: Instant,
}

impl Clock {
    fn start(device: Device) -> Clock {
        sync(device);
        let now = Instant::now();
        Clock {
            device,
            start: now,
            lap: now,
        }
    }

    /// Seconds since the last lap, when the step is timed.
    fn lap(&mut self, timed: bool) -> Option<f64> {
        sync(self.device);
        let now = Instant::now();
        let lap = now - std::mem::replace(&mut self.lap, now);
        timed.then_some(lap.as_secs_f64())
    }

    /// Seconds since the start, when the step is timed.
    fn total(&self, timed: bool) -> Option<f64> {
        timed.then(|| self.lap.duration_since(self.start).as_secs_f64())
    }
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    match xs.len() {
        0 => f64::NAN,
        n => xs[n / 2],
    }
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

//! `runner bench RECIPE`: step time, tokens/s and peak memory of the plan's training step, and
//! of the same model, batch and precision in PyTorch (transformers + PEFT, run by
//! `scripts/bench_pytorch.py` in the same invocation), as ratios.
//!
//! Both sides train on one random batch of `micro_batch_size × max_length` tokens with the
//! plan's optimizer, clipping, precision, checkpointing and adapter. S²-Attn is turned off on
//! the runner side: transformers has no such attention, and the point is the same model.
//! `iag_distill` and `coe_multitask` recipes are timed on their first real batch, runner side
//! only for now.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};
use tch::Device;

use super::peak_rss_kib;
use crate::commands::finish;
use crate::commands::run::{launch_ranks, Target};
use crate::distributed::world::World;
use crate::methods::{self, inputs::InputRuns};
use crate::models::Checkpointing;
use crate::models::{Gather, Tape};
use crate::plan::Plan;
use crate::train::memory::reset_peak;
use crate::train::optimizer::AdamW;
use crate::train::parallel::DataParallel;
use crate::train::zero::Update;

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
}

impl Args {
    pub fn run(&self, out: &mut dyn Write) -> std::io::Result<i32> {
        let options = BenchOptions {
            steps: self.steps,
            warmup: self.warmup,
            pytorch: !self.no_pytorch,
            target: self.device,
        };
        match self.nproc.filter(|&n| n > 1) {
            Some(n) => {
                match crate::commands::resolve_or_report(&self.recipe, &self.overrides, out)? {
                    Ok(plan) => launch_ranks(n, &plan, out),
                    Err(code) => Ok(code),
                }
            }
            None => run(&self.recipe, &self.overrides, options, out),
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
}

pub fn run(
    recipe: &Path,
    overrides: &[String],
    options: BenchOptions,
    out: &mut dyn Write,
) -> std::io::Result<i32> {
    match crate::commands::resolve_or_report(recipe, overrides, out)? {
        Ok(plan) => finish(bench(&plan, options), out),
        Err(code) => Ok(code),
    }
}

fn bench(plan: &Plan, options: BenchOptions) -> Result<String> {
    if plan.recipe.training().distributed.devices > 1 {
        crate::train::memory::map_large_allocations();
    }
    let world = World::from_env()?;
    let device = options.target.device_of_rank(world.local_rank)?;
    let dp = DataParallel::join(world, device, &plan.recipe.training().distributed)?;
    let rss_before = peak_rss_kib()?;
    let mut plan = plan.clone();
    plan.recipe.as_kind_mut().as_in_pytorch();
    let inputs = methods::inputs::gather(&plan, InputRuns::IfPresent)?;
    let task = methods::build(&plan, &inputs, device)?;
    let batch = task.bench_batch();
    let t = plan.recipe.training();
    let (batch_size, seq_len) = batch.input_ids.size2()?;
    let params = crate::train::task::trainable(task.as_ref());
    let mut optimizer = Update::new(AdamW::new(&t.optimizer), &params, task.as_ref(), &dp)?;
    let mode = match t.gradient_checkpointing {
        true => Checkpointing::Recompute,
        false => Checkpointing::Off,
    };
    let mut times = Vec::new();
    let mut losses = Vec::new();
    // The step's peak: what the task holds plus what a step adds, not the building's transients
    // (QLoRA quantises dense weights at load).
    reset_peak(device);
    for step in 0..options.warmup + options.steps {
        sync(device);
        let start = Instant::now();
        optimizer.begin_step(&dp)?;
        let loss = {
            let gatherer = optimizer.gatherer(&dp)?;
            let tape = Tape::training(mode, step as i64)
                .gathering(gatherer.as_ref().map(|g| g as &dyn Gather));
            let loss = task.loss(&batch, &tape, step);
            tape.failure()?;
            tape.backward(&loss);
            tape.failure()?;
            loss
        };
        optimizer.step(&params, t.optimizer.lr, t.max_grad_norm, &dp)?;
        losses.push(loss.double_value(&[]));
        sync(device);
        if step >= options.warmup {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    if !dp.is_main() {
        return Ok(format!("rank {} of {} done", dp.rank(), dp.size()));
    }
    // Every rank trains its own batch of the same size.
    let tokens = (batch_size * seq_len) as f64 * dp.size() as f64;
    let ours = json!({
        "step_time_s": median(&mut times),
        "tokens_per_s": tokens / median(&mut times),
        "peak_memory_mib": match device {
            Device::Cpu => json!((peak_rss_kib()? - rss_before) as f64 / 1024.0),
            _ => Value::Null,
        },
        "loss_first": losses.first(),
        "loss_last": losses.last(),
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
        "{:<10} {:>12} {:>12} {:>16}\n",
        "", "step s", "tokens/s", "peak MiB"
    );
    report += &row("runner", &ours);
    match (task.pytorch_reference(), options.pytorch) {
        (Some(reference), true) => {
            let theirs = pytorch(reference, device, options, dp.size())?;
            report += &row("pytorch", &theirs);
            let ratio = |key: &str| {
                ours[key].as_f64().unwrap_or(f64::NAN) / theirs[key].as_f64().unwrap_or(f64::NAN)
            };
            report += &format!(
                "runner / pytorch: step time {:.2}×, tokens/s {:.2}×, peak memory {:.2}×",
                ratio("step_time_s"),
                ratio("tokens_per_s"),
                ratio("peak_memory_mib")
            );
        }
        (None, true) => {
            report += &format!(
                "(no PyTorch reference for {} yet: scripts/bench_pytorch.py runs the Llama family)",
                plan.recipe.kind()
            )
        }
        (_, false) => {}
    }
    Ok(report.trim_end().to_string())
}

fn row(name: &str, r: &Value) -> String {
    let f = |k: &str| {
        r[k].as_f64()
            .map_or("n/a".to_string(), |v| format!("{v:.4}"))
    };
    format!(
        "{name:<10} {:>12} {:>12} {:>16}\n",
        f("step_time_s"),
        f("tokens_per_s"),
        f("peak_memory_mib")
    )
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

/// Runs scripts/bench_pytorch.py on the task's reference model and batch and reads its JSON
/// line; with several ranks, under torchrun as as many DDP ranks (rank 0 reports).
fn pytorch(mut spec: Value, device: Device, options: BenchOptions, ranks: usize) -> Result<Value> {
    spec["warmup_steps"] = json!(options.warmup);
    spec["steps"] = json!(options.steps);
    spec["device"] = json!(if device == Device::Cpu { "cpu" } else { "cuda" });
    spec["threads"] = json!(tch::get_num_threads());
    let mut command = match ranks {
        1 => Command::new(".venv/bin/python"),
        n => {
            let mut c = Command::new(".venv/bin/torchrun");
            c.args(["--standalone", "--nproc-per-node", &n.to_string()]);
            c
        }
    };
    // Every torchrun rank reads the spec, so it goes in a file rather than on stdin.
    let spec_file = std::env::temp_dir().join(format!("runner-bench-{}.json", std::process::id()));
    std::fs::write(&spec_file, spec.to_string())
        .with_context(|| format!("cannot write {}", spec_file.display()))?;
    let child = command
        .arg("scripts/bench_pytorch.py")
        .arg(&spec_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start .venv/bin/python scripts/bench_pytorch.py (run from the repository root after ./dev run)")?;
    let output = child.wait_with_output();
    let _ = std::fs::remove_file(&spec_file);
    let output = output?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|_| {
        anyhow!(
            "the PyTorch benchmark failed: {}{}\n  hint: it needs transformers and peft in .venv (pip install -r scripts/fixtures-requirements.txt)",
            text,
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

//! `runner run RECIPE [KEY=VALUE…]`: resolves the plan, builds its task, trains, and leaves the
//! run's artifacts; an existing run directory of the same plan is resumed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use tch::Device;

use crate::distributed::{launch, world::World};
use crate::methods;
use crate::plan::Plan;
use crate::train::parallel::DataParallel;
use crate::train::trainer::RunOptions;

/// `runner run RECIPE [KEY=VALUE…]`.
#[derive(clap::Args)]
pub struct Args {
    recipe: PathBuf,
    /// Overrides, KEY.PATH=VALUE.
    overrides: Vec<String>,
    /// The run directory (default: output.dir, name and plan hash).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue a run directory that holds another plan.
    #[arg(long)]
    force: bool,
    #[arg(long, value_enum, default_value = "auto")]
    device: Target,
    /// Start N data-parallel ranks on this machine (as torchrun would); the plan's
    /// training.distributed.devices must be N.
    #[arg(long, value_name = "N")]
    nproc: Option<usize>,
    /// Stop after this many optimizer steps as if interrupted (for resume tests).
    #[arg(long, hide = true)]
    stop_after: Option<u64>,
}

impl Args {
    pub fn run(&self, out: &mut dyn Write) -> std::io::Result<i32> {
        let options = RunOptions {
            out: self.out.clone(),
            force: self.force,
            stop_after: self.stop_after,
        };
        match self.nproc {
            Some(n) if n > 1 => self.launch(n, out),
            _ => run(&self.recipe, &self.overrides, self.device, &options, out),
        }
    }

    /// `--nproc N`: checks the plan once, then runs these arguments as N ranks.
    fn launch(&self, nproc: usize, out: &mut dyn Write) -> std::io::Result<i32> {
        match super::resolve_or_report(&self.recipe, &self.overrides, out)? {
            Ok(plan) => launch_ranks(nproc, &plan, out),
            Err(code) => Ok(code),
        }
    }
}

/// Runs this process's command line, less `--nproc`, as `nproc` local ranks of `plan`, whose
/// `training.distributed.devices` must be `nproc`; a failed rank is named.
pub fn launch_ranks(nproc: usize, plan: &Plan, out: &mut dyn Write) -> std::io::Result<i32> {
    let devices = plan.recipe.training().distributed.devices as usize;
    if devices != nproc {
        writeln!(out, "error: --nproc {nproc}, but training.distributed.devices is {devices}\n  hint: add training.distributed.devices={nproc}, or launch {devices} rank(s)")?;
        return Ok(super::USAGE);
    }
    let args = without_nproc(std::env::args_os().skip(1));
    let outcome = match launch::local(nproc, &args, out) {
        Ok(outcome) => outcome,
        Err(e) => return super::finish(Err(e), out),
    };
    match outcome.failed {
        None => Ok(super::OK),
        Some((rank, status, error)) => {
            let error = error.strip_prefix("error: ").unwrap_or(&error).to_string();
            writeln!(out, "error: rank {rank} of {nproc} failed ({status}): {error}\n  hint: its output above is prefixed [rank {rank}]; the other ranks were stopped")?;
            Ok(status.code().filter(|&c| c != 0).unwrap_or(super::USAGE))
        }
    }
}

/// The command line less `--nproc N` (or `--nproc=N`), for the ranks.
fn without_nproc(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut kept = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        match arg.to_str() {
            Some("--nproc") => skip_value = true,
            Some(a) if a.starts_with("--nproc=") => {}
            _ => kept.push(arg),
        }
    }
    kept
}

/// Where to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The first GPU when CUDA is available, else the CPU.
    Auto,
    Cpu,
    Cuda,
}

impl Target {
    pub fn device(self) -> Result<Device> {
        self.device_of_rank(0)
    }

    /// The device of the rank with this local rank: its own GPU.
    pub fn device_of_rank(self, local_rank: usize) -> Result<Device> {
        let gpus = tch::Cuda::device_count().max(0) as usize;
        Ok(match self {
            Target::Cuda | Target::Auto if local_rank < gpus => Device::Cuda(local_rank),
            Target::Auto if gpus == 0 => Device::Cpu,
            Target::Cpu => Device::Cpu,
            Target::Cuda if gpus == 0 => bail!(
                "--device cuda: CUDA is not available here\n  hint: `runner doctor` says what libtorch sees"
            ),
            Target::Cuda | Target::Auto => bail!(
                "local rank {local_rank} trains on cuda:{local_rank}, but {gpus} GPU(s) are visible\n  hint: start at most {gpus} rank(s) per node, or --device cpu"
            ),
        })
    }
}

pub fn run(
    recipe: &Path,
    overrides: &[String],
    target: Target,
    options: &RunOptions,
    out: &mut dyn Write,
) -> std::io::Result<i32> {
    let plan = match super::resolve_or_report(recipe, overrides, out)? {
        Ok(plan) => plan,
        Err(code) => return Ok(code),
    };
    super::finish(train(&plan, target, options), out)
}

/// Trains `plan` (its input runs first where they are missing) as this process's rank, and
/// says what it did.
fn train(plan: &Plan, target: Target, options: &RunOptions) -> Result<String> {
    if plan.recipe.training().distributed.devices > 1 {
        // Before the models are built, so that their weights are mapped too.
        crate::train::memory::map_large_allocations();
    }
    let world = World::from_env()?;
    let device = target.device_of_rank(world.local_rank)?;
    let dp = DataParallel::join(world, device, &plan.recipe.training().distributed)?;
    let summary = methods::train(plan, device, options, &dp)?;
    if !dp.is_main() {
        return Ok(format!("rank {} of {} done", dp.rank(), dp.size()));
    }
    let dir: PathBuf = summary.dir.clone();
    let mut report = format!(
        "trained {} steps{} in {}\nfinal train loss {:.4}",
        summary.steps,
        summary
            .resumed_from
            .map_or(String::new(), |s| format!(" (resumed from step {s})")),
        dir.display(),
        summary.final_loss
    );
    if let Some((value, step)) = summary.best {
        report += &format!("\nbest eval value {value:.4} at step {step}");
    }
    Ok(report)
}

//! `runner run RECIPE [KEY=VALUE…]`: resolves the plan, builds its task, trains, and leaves the
//! run's artifacts; an existing run directory of the same plan is resumed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use tch::Device;

use crate::methods;
use crate::plan::Plan;
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
        run(&self.recipe, &self.overrides, self.device, &options, out)
    }
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
        Ok(match self {
            Target::Auto => Device::cuda_if_available(),
            Target::Cpu => Device::Cpu,
            Target::Cuda if tch::Cuda::is_available() => Device::Cuda(0),
            Target::Cuda => bail!(
                "--device cuda: CUDA is not available here\n  hint: `runner doctor` says what libtorch sees"
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

/// Trains `plan` (its input runs first where they are missing) and says what it did.
fn train(plan: &Plan, target: Target, options: &RunOptions) -> Result<String> {
    let summary = methods::train(plan, target.device()?, options)?;
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

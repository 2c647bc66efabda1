//! `runner run RECIPE [KEY=VALUE…]`: resolves the plan, builds its task, trains, and leaves the
//! run's artifacts; an existing run directory of the same plan is resumed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::Device;

use crate::methods;
use crate::plan::recipe::Recipe;
use crate::plan::resolve::resolve;
use crate::train::trainer::{self, RunOptions};

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

fn train(
    plan: &crate::plan::resolve::Plan,
    target: Target,
    options: &RunOptions,
) -> Result<String> {
    let device = target.device()?;
    let summary = match &plan.recipe {
        Recipe::LongloraSft(r) => {
            let task = methods::longlora::build(r, device)?;
            trainer::train(plan, &task, options, &[])?
        }
        Recipe::IagDistill(r) => {
            let (teacher, inputs) = match &r.model.teacher.recipe {
                Some(path) => {
                    let (dir, hash) = teacher_run(path, target)?;
                    (Some(dir), vec![("teacher".to_string(), hash)])
                }
                None => (None, Vec::new()),
            };
            let task = methods::iag::build(r, teacher.as_deref(), device)?;
            trainer::train(plan, &task, options, &inputs)?
        }
        Recipe::CoeMultitask(r) => {
            // The weights are an input like a teacher: a run trained with other weights is
            // not resumed with these. A recipe in their place means its run's error rates
            // (trained first when it has no finished run).
            let mut r = r.clone();
            let mut inputs = Vec::new();
            if let Some(weights) = &r.data.category_weights {
                let file = match weights.ends_with(".yaml") || weights.ends_with(".yml") {
                    true => {
                        let (dir, hash) = finished_run(weights, target, "data.category_weights")?;
                        inputs.push(("category_weights_run".to_string(), hash));
                        dir.join("error_rates.json")
                    }
                    false => PathBuf::from(weights),
                };
                let bytes = std::fs::read(&file).with_context(|| {
                    format!("data.category_weights: reading {}\n  hint: a run writes error_rates.json when it trains the answering task (method.tasks.answer > 0)", file.display())
                })?;
                inputs.push((
                    "category_weights".to_string(),
                    blake3::hash(&bytes).to_hex().to_string(),
                ));
                r.data.category_weights = Some(file.display().to_string());
            }
            let task = methods::coe::build(&r, device)?;
            trainer::train(plan, &task, options, &inputs)?
        }
    };
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

/// The trained teacher of a teacher recipe: its finished run's `teacher/` folder and the
/// teacher plan's hash, training the recipe first when it has no finished run of that plan.
fn teacher_run(recipe: &str, target: Target) -> Result<(PathBuf, String)> {
    let (dir, hash) = finished_run(recipe, target, "model.teacher.recipe")?;
    let teacher = dir.join("teacher");
    if !teacher.join("config.json").is_file() {
        bail!(
            "{}: the teacher recipe's run has no trained teacher\n  hint: a teacher recipe trains its teacher (model.teacher.train: true)",
            dir.display()
        );
    }
    Ok((teacher, hash))
}

/// The run directory and plan hash of another recipe (named by the key `key`), training it
/// first when it has no finished run of that plan.
fn finished_run(recipe: &str, target: Target, key: &str) -> Result<(PathBuf, String)> {
    let path = Path::new(recipe);
    let plan = resolve(path, &[]).map_err(|errors| {
        anyhow::anyhow!(
            "{key} {}: {} errors\n  hint: run `runner validate` on it",
            path.display(),
            errors.len()
        )
    })?;
    let dir = trainer::default_dir(&plan);
    if !dir.join("summary.json").is_file() {
        eprintln!(
            "training {key}'s recipe {} first, into {}",
            path.display(),
            dir.display()
        );
        let options = RunOptions {
            out: None,
            force: false,
            stop_after: None,
        };
        train(&plan, target, &options)?;
    }
    Ok((dir, plan.hash))
}

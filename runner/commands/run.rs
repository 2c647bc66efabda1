//! `runner run RECIPE [KEY=VALUE…]`: resolves the plan, builds its task, trains, and leaves the
//! run's artifacts; an existing run directory of the same plan is resumed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::Device;

use crate::methods;
use crate::plan::recipe::CoeRecipe;
use crate::plan::recipe::Recipe;
use crate::plan::{resolve, Plan};
use crate::train::trainer::{self, RunOptions};

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
    super::finish(train(&plan, target, options, &[]), out)
}

/// Where a run's input recipes (a teacher, an earlier DataEngine round) get their finished runs.
#[derive(Clone, Copy)]
pub enum InputRuns<'a> {
    /// A missing one is trained first on `target`. `waiting` names the recipes already being
    /// trained for one another, outermost first, so that a cycle is refused, not recursed.
    Train {
        target: Target,
        waiting: &'a [String],
    },
    /// Each must have a finished run already.
    Existing,
}

/// Trains `plan`, whose run the recipes in `waiting` (outermost first) need as an input.
fn train(plan: &Plan, target: Target, options: &RunOptions, waiting: &[String]) -> Result<String> {
    let device = target.device()?;
    let waiting = [waiting, &[plan.recipe.name().to_string()]].concat();
    let inputs = InputRuns::Train {
        target,
        waiting: &waiting,
    };
    let summary = match &plan.recipe {
        Recipe::LongloraSft(r) => {
            let task = methods::longlora::build(r, device)?;
            trainer::train(plan, &task, options, &[])?
        }
        Recipe::IagDistill(r) => {
            let (teacher, inputs) = match &r.model.teacher.recipe {
                Some(path) => {
                    let (dir, hash) = teacher_run(path, inputs)?;
                    (Some(dir), vec![("teacher".to_string(), hash)])
                }
                None => (None, Vec::new()),
            };
            let task = methods::iag::build(r, teacher.as_deref(), device)?;
            trainer::train(plan, &task, options, &inputs)?
        }
        Recipe::CoeMultitask(r) => {
            let (r, inputs) = with_category_weights(r, inputs)?;
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

/// `r` with its `data.category_weights` made a file: a recipe there means its finished run's
/// `error_rates.json`. The weights are an input like a teacher, recorded by hash (and the
/// weighting run by plan hash), so a run trained with other weights is not resumed with these.
pub fn with_category_weights(
    r: &CoeRecipe,
    runs: InputRuns,
) -> Result<(CoeRecipe, Vec<(String, String)>)> {
    let mut r = r.clone();
    let mut inputs = Vec::new();
    let Some(weights) = r.data.category_weights.clone() else {
        return Ok((r, inputs));
    };
    let file = match weights.ends_with(".yaml") || weights.ends_with(".yml") {
        true => {
            let key = "data.category_weights";
            let plan = resolve_input(&weights, key)?;
            match &plan.recipe {
                Recipe::CoeMultitask(other) if other.method.tasks.answer > 0.0 => {}
                _ => bail!(
                    "{key}: {weights} is not a coe_multitask recipe that trains the answering task, so its run writes no error_rates.json\n  hint: name a recipe with method.tasks.answer > 0, or an error_rates.json file"
                ),
            }
            if plan.recipe.name() == r.name {
                bail!("{key}: {weights} is this recipe itself\n  hint: name the earlier round's recipe");
            }
            let (dir, hash) = finished_run(&plan, runs, key, &weights)?;
            inputs.push(("category_weights_run".to_string(), hash));
            dir.join("error_rates.json")
        }
        false => PathBuf::from(&weights),
    };
    let bytes = std::fs::read(&file).with_context(|| {
        format!("data.category_weights: reading {}\n  hint: a run writes error_rates.json when it trains the answering task (method.tasks.answer > 0)", file.display())
    })?;
    inputs.push((
        "category_weights".to_string(),
        blake3::hash(&bytes).to_hex().to_string(),
    ));
    r.data.category_weights = Some(file.display().to_string());
    Ok((r, inputs))
}

/// The trained teacher of a teacher recipe: its finished run's `teacher/` folder and the
/// teacher plan's hash, training the recipe first when it has no finished run of that plan.
fn teacher_run(recipe: &str, runs: InputRuns) -> Result<(PathBuf, String)> {
    let key = "model.teacher.recipe";
    let (dir, hash) = finished_run(&resolve_input(recipe, key)?, runs, key, recipe)?;
    let teacher = dir.join("teacher");
    if !teacher.join("config.json").is_file() {
        bail!(
            "{}: the teacher recipe's run has no trained teacher\n  hint: a teacher recipe trains its teacher (model.teacher.train: true)",
            dir.display()
        );
    }
    Ok((teacher, hash))
}

/// The plan of a recipe another recipe names under `key`.
fn resolve_input(recipe: &str, key: &str) -> Result<Plan> {
    resolve(Path::new(recipe), &[]).map_err(|errors| {
        let first = errors.first().map_or(String::new(), |e| format!(", first:\n{e}"));
        anyhow::anyhow!(
            "{key} {recipe}: {} error(s) in that recipe{first}\n  hint: `runner validate {recipe}` lists them all",
            errors.len()
        )
    })
}

/// The run directory and plan hash of `plan` (a recipe named by `key`), training it first
/// when it has no finished run and `runs` allows.
fn finished_run(
    plan: &Plan,
    runs: InputRuns,
    key: &str,
    recipe: &str,
) -> Result<(PathBuf, String)> {
    let dir = trainer::default_dir(plan);
    if !dir.join("summary.json").is_file() {
        let InputRuns::Train { target, waiting } = runs else {
            bail!("{key}: {recipe} has no finished run in {}\n  hint: train it first: runner run {recipe}", dir.display());
        };
        let name = plan.recipe.name();
        if waiting.iter().any(|w| w == name) {
            bail!(
                "{key}: {recipe} is needed by the run it needs: {} -> {name}\n  hint: break the cycle; an input recipe must not name, directly or through others, the recipe it serves",
                waiting.join(" -> ")
            );
        }
        eprintln!(
            "training {key}'s recipe {recipe} first, into {}",
            dir.display()
        );
        let options = RunOptions {
            out: None,
            force: false,
            stop_after: None,
        };
        self::train(plan, target, &options, waiting)?;
    }
    Ok((dir, plan.hash.clone()))
}

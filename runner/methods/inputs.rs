//! What a run reads besides its plan, recorded so that a run trained from other inputs is not
//! resumed with these: the finished runs of other recipes (an IAG teacher recipe's trained
//! teacher, an earlier DataEngine round's `error_rates.json` or model), each by its plan's hash
//! (weights by their content), a missing one trained first when the caller allows it; and the
//! content digests of the files the plan names (data, tokenizers, weights, listed images).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::data::input_files;
use crate::digest;
use crate::plan::{resolve, Plan};
use crate::train::run_dir::{self, RunDir};
use crate::train::task::{self, Task};
use crate::train::trainer;

/// The content digest of every file `plan` reads (data, tokenizers, weights folders, listed
/// images), as inputs named `file:PATH`; cached, so unchanged files are not read again.
pub fn file_digests(plan: &Plan) -> Result<Vec<(String, String)>> {
    let files = input_files::files(&plan.recipe.as_kind().input_paths());
    let digests = digest::digests(&files)?;
    Ok(digests
        .into_iter()
        .map(|(path, digest)| (format!("{}{path}", digest::FILE_INPUT), digest))
        .collect())
}

/// Where a plan's input runs come from.
#[derive(Clone, Copy)]
pub enum InputRuns<'a> {
    /// A missing one is trained first, by `train` (given the plan and `waiting`). `waiting`
    /// names the recipes already being trained for one another, outermost first, so that a
    /// cycle is refused, not recursed.
    Train {
        train: &'a dyn Fn(&Plan, &[String]) -> Result<()>,
        waiting: &'a [String],
    },
    /// Each must have a finished run already.
    Existing,
    /// The finished ones that exist; a missing one is left out (`runner bench`: a random
    /// teacher stands in, since a step's time does not depend on the teacher's weights).
    IfPresent,
}

/// The finished runs of a plan's input recipes, by the key that names them.
#[derive(Default)]
pub struct Inputs {
    runs: Vec<(&'static str, PathBuf)>,
    /// (name, plan hash) of each, recorded in the run directory.
    pub hashes: Vec<(String, String)>,
}

impl Inputs {
    /// The run directory of the input recipe named under `key`, if it was gathered.
    pub fn run(&self, key: &str) -> Option<&Path> {
        self.runs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, dir)| dir.as_path())
    }
}

/// The finished runs of `plan`'s input recipes, from `runs`.
pub fn gather(plan: &Plan, runs: InputRuns) -> Result<Inputs> {
    let mut inputs = Inputs::default();
    for input in plan.recipe.as_kind().input_recipes() {
        let input_plan = resolve_input(&input.path, input.key)?;
        if matches!(runs, InputRuns::IfPresent) && !finished(&input_plan) {
            continue;
        }
        let (dir, hash) = input_run(&input_plan, runs, input.key, &input.path)?;
        inputs.runs.push((input.key, dir));
        inputs.hashes.push((input.name.to_string(), hash));
    }
    Ok(inputs)
}

/// Loads the trained weights of the finished run in `run` (its last checkpoint) into `task`,
/// which starts from them: a DataEngine round from the last round's model. A run resumed from
/// its own checkpoint restores that one over these.
pub fn start_from(task: &dyn Task, run: &Path) -> Result<()> {
    let runs = RunDir {
        path: run.to_path_buf(),
    };
    let Some((_, last)) = runs.checkpoints()?.pop() else {
        bail!("{}: the run has no checkpoint to start from", run.display());
    };
    let saved = run_dir::load(&last)?;
    trainer::restore(&task::trainable(task), saved.trainable).with_context(|| {
        format!(
            "starting from {}: the weights do not fit this model",
            last.display()
        )
    })
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

/// Whether `plan` has a finished run trained from the files it names now (a teacher whose data
/// changed is trained again, or refused naming the file).
fn finished(plan: &Plan) -> bool {
    let files = file_digests(plan).unwrap_or_default();
    trainer::finished_run(plan, &trainer::default_dir(plan), &files).is_some()
}

/// The run directory and plan hash of `plan` (a recipe named by `key`), training it first
/// when it has no finished run and `runs` allows.
fn input_run(plan: &Plan, runs: InputRuns, key: &str, recipe: &str) -> Result<(PathBuf, String)> {
    let dir = trainer::default_dir(plan);
    if !finished(plan) {
        let InputRuns::Train { train, waiting } = runs else {
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
        train(plan, waiting)?;
    }
    Ok((dir, plan.hash.clone()))
}

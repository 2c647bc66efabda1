//! What the commands that use a trained model share: a run directory's plan and latest
//! checkpoint (or a recipe's plan, untrained), and restoring the checkpoint into a task.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use crate::config::{Node, Origin, Value};
use crate::plan::recipe::Recipe;
use crate::plan::resolve::hash;
use crate::plan::Plan;
use crate::train::run_dir::{self, RunDir};
use crate::train::task::{self, Task};
use crate::train::trainer;

/// `model` is a run directory (its plan, which must be of `kind`, and latest checkpoint) or a
/// recipe (its plan, no checkpoint).
pub fn plan_and_checkpoint(model: &Path, kind: &str) -> Result<(Plan, Option<PathBuf>)> {
    match model.is_dir() {
        true => {
            let path = model.join("plan.json");
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!("cannot read {}\n  hint: give a run directory (made by `runner run`) or a recipe", path.display())
            })?;
            let record: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not valid JSON", path.display()))?;
            let recipe = Recipe::from_json(kind, record["plan"].clone())
                .map_err(|e| anyhow!("{}: not a {kind} plan: {e}", path.display()))?;
            let run = RunDir {
                path: model.to_path_buf(),
            };
            let latest = run.checkpoints()?.pop().map(|(_, dir)| dir);
            // The run's plan as it was recorded (no YAML tree: nothing is located from it).
            let plan = Plan {
                hash: hash(&recipe),
                tree: Node::new(Value::Map(Vec::new()), Origin::start_of(&path)),
                source: path,
                recipe,
                warnings: Vec::new(),
            };
            Ok((plan, latest))
        }
        false => {
            let plan = crate::plan::resolve(model, &[]).map_err(|errors| {
                anyhow!(
                    "{}: {} errors\n  hint: run `runner validate` on it",
                    model.display(),
                    errors.len()
                )
            })?;
            Ok((plan, None))
        }
    }
}

/// Loads `checkpoint`'s trained weights into `task`; says where the weights came from.
pub fn restore(task: &dyn Task, model: &Path, checkpoint: Option<&Path>) -> Result<String> {
    Ok(match checkpoint {
        Some(dir) => {
            let saved = run_dir::load(dir)?;
            trainer::restore(&task::trainable(task), saved.trainable)?;
            format!("{} ({})", model.display(), dir.display())
        }
        None => format!(
            "{} (untrained: the plan's starting weights)",
            model.display()
        ),
    })
}

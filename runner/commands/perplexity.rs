//! `runner perplexity RUN_DIR|RECIPE --data FILE --lengths L,…`: LongLoRA's sliding-window
//! perplexity (`eval.py`: windows every `stride` tokens) of a `longlora_sft` run's trained
//! model (its latest checkpoint) or, given a recipe, of the model its plan starts from.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::run::Target;
use crate::methods::longlora;
use crate::plan::recipe::Recipe;
use crate::train::run_dir::{self, RunDir};
use crate::train::task;
use crate::train::trainer;

pub fn run(
    model: &Path,
    data: &Path,
    lengths: &[usize],
    stride: usize,
    target: Target,
    out: &mut dyn Write,
) -> std::io::Result<i32> {
    super::finish(perplexity(model, data, lengths, stride, target), out)
}

fn perplexity(
    model: &Path,
    data: &Path,
    lengths: &[usize],
    stride: usize,
    target: Target,
) -> Result<String> {
    let (recipe, checkpoint) = match model.is_dir() {
        true => {
            let path = model.join("plan.json");
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!("cannot read {}\n  hint: give a run directory (made by `runner run`) or a recipe", path.display())
            })?;
            let record: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not valid JSON", path.display()))?;
            let recipe = Recipe::from_json("longlora_sft", record["plan"].clone())
                .map_err(|e| anyhow!("{}: not a longlora_sft plan: {e}", path.display()))?;
            let run = RunDir {
                path: model.to_path_buf(),
            };
            let latest = run.checkpoints()?.pop().map(|(_, dir)| dir);
            (recipe, latest)
        }
        false => {
            let plan = crate::plan::resolve(model, &[]).map_err(|errors| {
                anyhow!(
                    "{}: {} errors\n  hint: run `runner validate` on it",
                    model.display(),
                    errors.len()
                )
            })?;
            (plan.recipe, None)
        }
    };
    let Recipe::LongloraSft(recipe) = &recipe else {
        bail!("perplexity is measured for longlora_sft runs and recipes");
    };
    let task = longlora::build(recipe, target.device()?)?;
    let source = match &checkpoint {
        Some(dir) => {
            let saved = run_dir::load(dir)?;
            trainer::restore(&task::trainable(&task), saved.trainable)?;
            format!("{} ({})", model.display(), dir.display())
        }
        None => format!(
            "{} (untrained: the plan's starting weights)",
            model.display()
        ),
    };
    let mut report = format!(
        "perplexity of {} on {}, stride {stride}\n",
        source,
        data.display()
    );
    for (length, ppl) in task.perplexity_of(data, lengths, stride)? {
        match ppl {
            Some(p) => report += &format!("  {length:>7} tokens  {p:.4}\n"),
            None => {
                report += &format!("  {length:>7} tokens  (the data is shorter than one window)\n")
            }
        }
    }
    Ok(report.trim_end().to_string())
}

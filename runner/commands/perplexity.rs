//! `runner perplexity RUN_DIR|RECIPE --data FILE --lengths L,…`: LongLoRA's sliding-window
//! perplexity (`eval.py`: windows every `stride` tokens) of a `longlora_sft` run's trained
//! model (its latest checkpoint) or, given a recipe, of the model its plan starts from.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::run::Target;
use crate::methods;
use crate::methods::inputs::Inputs;
use crate::methods::longlora::LongloraTask;
use crate::train::task::AsAny;

/// `runner perplexity MODEL --data FILE --lengths L,…`.
#[derive(clap::Args)]
pub struct Args {
    /// A run directory (its latest checkpoint) or a recipe.
    model: PathBuf,
    /// Texts: .txt lines, or JSON/JSONL strings or {text} objects.
    #[arg(long)]
    data: PathBuf,
    /// Context lengths, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    lengths: Vec<usize>,
    /// Tokens between window starts (LongLoRA: 256).
    #[arg(long, default_value_t = 256)]
    stride: usize,
    #[arg(long, value_enum, default_value = "auto")]
    device: Target,
}

impl Args {
    pub fn run(&self, out: &mut dyn Write) -> std::io::Result<i32> {
        run(
            &self.model,
            &self.data,
            &self.lengths,
            self.stride,
            self.device,
            out,
        )
    }
}

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
    let (plan, checkpoint) = super::trained::plan_and_checkpoint(model, "longlora_sft")?;
    let built = methods::build(&plan, &Inputs::default(), target.device()?)?;
    // The task's own type, not the box's.
    let Some(task) = AsAny::as_any(built.as_ref()).downcast_ref::<LongloraTask>() else {
        bail!("perplexity is measured for longlora_sft runs and recipes");
    };
    let source = super::trained::restore(task, model, checkpoint.as_deref())?;
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

//! `runner generate RUN_DIR|RECIPE --data ITEMS --out DIR [--gold]`: a `coe_multitask` run's
//! generations for ScienceQA-style items, as CoE's chain (question, then a rationale from it,
//! then distractors from both) or each task from the gold inputs (`--gold`). Each task's
//! predictions go to `DIR/<task>.jsonl` (`{id, prediction}`) and its references, with the
//! items' other fields, to `DIR/<task>.references.jsonl`, ready for `runner score`. Lines are
//! written as items finish; run again, it writes only what the files do not have yet.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::run::Target;
use crate::data::scienceqa::{self, Task as CoeTask};
use crate::methods;
use crate::methods::coe::CoeMultitask;
use crate::methods::inputs::{gather, InputRuns};
use crate::train::task::AsAny;

/// `runner generate MODEL --data ITEMS --out DIR [--gold]`.
#[derive(clap::Args)]
pub struct Options {
    /// A run directory (its latest checkpoint) or a recipe (untrained).
    pub model: PathBuf,
    /// ScienceQA-style items (JSON or JSONL).
    #[arg(long)]
    pub data: PathBuf,
    /// Folder for <task>.jsonl and <task>.references.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    /// Each task from the item's own question instead of the chain.
    #[arg(long)]
    pub gold: bool,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Target,
}

pub fn run(options: &Options, out: &mut dyn std::io::Write) -> std::io::Result<i32> {
    super::finish(generate(options), out)
}

/// The ids a predictions file already holds (none when it does not exist).
fn done_ids(path: &Path) -> Result<HashSet<String>> {
    let Ok(file) = File::open(path) else {
        return Ok(HashSet::new());
    };
    let mut ids = HashSet::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        // A line cut by a kill is dropped: its item is generated again.
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if let Some(id) = v.get("id").and_then(Value::as_str) {
                ids.insert(id.to_string());
            }
        }
    }
    Ok(ids)
}

fn append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

fn generate(options: &Options) -> Result<String> {
    let (plan, checkpoint) = super::trained::plan_and_checkpoint(&options.model, "coe_multitask")?;
    let built = methods::build(
        &plan,
        &gather(&plan, InputRuns::Existing)?,
        options.device.device()?,
    )?;
    // The task's own type, not the box's.
    let Some(task) = AsAny::as_any(built.as_ref()).downcast_ref::<CoeMultitask>() else {
        bail!("runner generate runs coe_multitask models");
    };
    let source = super::trained::restore(task, &options.model, checkpoint.as_deref())?;
    let items = scienceqa::read(&options.data)?;
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    let tasks: Vec<CoeTask> = task.tasks().to_vec();
    if tasks.contains(&CoeTask::Answer) {
        if let Some(item) = items.iter().find(|i| i.answer_index().is_none()) {
            bail!(
                "{}: item {}: its answer {:?} is not one of its choices {:?}, which the run's answering task needs\n  hint: give each item `choices` that include the answer",
                options.data.display(),
                item.id,
                item.answer,
                item.choices
            );
        }
    }
    let file = |t: CoeTask, what: &str| options.out.join(format!("{}{what}.jsonl", t.name()));
    // Per task, the items its file already has (a kill can leave the tasks of one item
    // unevenly written: only the missing ones are written again).
    let done: Vec<HashSet<String>> = tasks
        .iter()
        .map(|t| done_ids(&file(*t, "")))
        .collect::<Result<_>>()?;
    let referenced: Vec<HashSet<String>> = tasks
        .iter()
        .map(|t| done_ids(&file(*t, ".references")))
        .collect::<Result<_>>()?;
    let mut predictions = Vec::new();
    let mut references = Vec::new();
    for t in &tasks {
        predictions.push(append(&file(*t, ""))?);
        references.push(append(&file(*t, ".references"))?);
    }
    let (mut generated, mut skipped) = (0, 0);
    // The first few items' outputs, shown in the report.
    let mut shown = String::new();
    for item in &items {
        if done.iter().all(|d| d.contains(&item.id)) {
            skipped += 1;
            continue;
        }
        let outputs: Vec<String> = match options.gold {
            true => tasks
                .iter()
                .map(|t| task.reply(*t, item))
                .collect::<Result<_>>()?,
            false => {
                // Answering is not a link of the chain: it answers the item's own question.
                let [question, rationale, distractors] = task.chain(item)?;
                tasks
                    .iter()
                    .map(|t| match t {
                        CoeTask::Question => Ok(question.clone()),
                        CoeTask::Rationale => Ok(rationale.clone()),
                        CoeTask::Distractor => Ok(distractors.clone()),
                        CoeTask::Answer => task.reply(*t, item),
                    })
                    .collect::<Result<_>>()?
            }
        };
        for (k, t) in tasks.iter().enumerate() {
            if !referenced[k].contains(&item.id) {
                let mut reference = item.fields.clone();
                reference.insert("id".into(), json!(item.id));
                reference.insert("reference".into(), json!(t.target(item)));
                writeln!(references[k], "{}", Value::Object(reference))?;
                references[k].flush()?;
            }
            if !done[k].contains(&item.id) {
                writeln!(
                    predictions[k],
                    "{}",
                    json!({"id": item.id, "prediction": outputs[k]})
                )?;
                predictions[k].flush()?;
            }
        }
        if generated < 3 {
            shown += &format!("\n[{}] answer: {}\n", item.id, item.answer);
            for (t, output) in tasks.iter().zip(&outputs) {
                shown += &format!("  {:<10} → {}\n", t.name(), output.replace('\n', " "));
            }
        }
        generated += 1;
    }
    let first = tasks.first().map_or("question", |t| t.name());
    Ok(format!(
        "{generated} items generated ({}), {skipped} already done, from {source}\n{shown}in {}: {}\nscore with: runner score --predictions {dir}/{first}.jsonl --references {dir}/{first}.references.jsonl --by subject,grade,context_type",
        if options.gold { "each task from the gold inputs" } else { "CoE's chain" },
        options.out.display(),
        tasks.iter().map(|t| format!("{}.jsonl", t.name())).collect::<Vec<_>>().join(", "),
        dir = options.out.display(),
    ))
}

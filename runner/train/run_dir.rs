//! A run directory: the plan it runs, its checkpoints, and the state that lets a killed run
//! continue exactly where its last whole checkpoint left it.
//!
//! ```text
//! <run>/plan.yaml            the resolved plan (itself a valid recipe), with its hash
//! <run>/plan.json            the same, canonical, to compare with on resume
//! <run>/checkpoints/step-N/  trainable.safetensors, optimizer.safetensors, state.json
//! ```
//! A checkpoint is written into `step-N.partial` and renamed when whole, so a run killed at
//! any moment leaves only whole checkpoints.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::Tensor;

use crate::config::emit;
use crate::data::loader::Position;
use crate::digest::{FILE_INPUT, MISSING};
use crate::files::write_atomic;
use crate::models::hf_folder::write_safetensors;
use crate::plan::Plan;

/// Everything besides tensors that a resumed run needs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Optimizer steps taken.
    pub step: u64,
    /// Where the data stream continues.
    pub position: Position,
    /// The best evaluation so far: (value, step).
    pub best: Option<(f64, u64)>,
    /// Evaluations since the best one (early stopping).
    pub since_best: u32,
    /// Training tokens seen.
    pub tokens: i64,
    /// Seconds of training so far, across resumes.
    pub seconds: f64,
    /// The training loss of the last step.
    pub loss: Option<f64>,
    /// Training ended here (all steps, or early stopping): running the plan again only reports.
    #[serde(default)]
    pub finished: bool,
    /// Steps whose gradient was not finite and were skipped (`training.skip_nonfinite_steps`).
    #[serde(default)]
    pub skipped_steps: u64,
    /// The latest evaluation: its step and metrics, for `summary.json`.
    #[serde(default)]
    pub last_evaluation: Option<(u64, Vec<(String, f64)>)>,
}

pub struct Checkpoint {
    pub dir: PathBuf,
    pub trainable: Vec<(String, Tensor)>,
    pub optimizer: Vec<(String, Tensor)>,
    pub state: RunState,
}

pub struct RunDir {
    pub path: PathBuf,
}

const CHECKPOINTS: &str = "checkpoints";

impl RunDir {
    /// Opens (creating) the run directory of `plan`. An existing directory must hold the same
    /// plan trained from the same `inputs` (name → plan hash of a run it builds on, such as a
    /// teacher), unless `force`; its latest whole checkpoint is returned for resuming.
    pub fn open(
        path: &Path,
        plan: &Plan,
        inputs: &[(String, String)],
        force: bool,
    ) -> Result<(RunDir, Option<Checkpoint>)> {
        let run = RunDir {
            path: path.to_path_buf(),
        };
        let json = plan.recipe.to_json();
        let stored = path.join("plan.json");
        if stored.is_file() {
            let before: Value = serde_json::from_str(&fs::read_to_string(&stored)?)
                .with_context(|| format!("{}: not valid JSON", stored.display()))?;
            if before["hash"].as_str() != Some(plan.hash.as_str()) && !force {
                let mut changed = Vec::new();
                differences("", &before["plan"], &json, &mut changed);
                if changed.is_empty() {
                    changed.push(format!(
                        "no setting: plan.json's hash {} was edited (this plan's is {})",
                        before["hash"], plan.hash
                    ));
                }
                let ranks = match changed.iter().any(|c| c.starts_with("training.distributed.")) {
                    true => "; checkpoints hold whole optimizer state, so --force continues on another number of ranks (keep micro_batch_size × grad_accumulation × devices to keep the global batch)",
                    false => "",
                };
                bail!(
                    "{} holds a run of another plan; changed: {}\n  hint: choose another --out, or pass --force to continue it with the new plan{ranks}",
                    path.display(),
                    changed.join(", ")
                );
            }
            let written = path.join("plan.yaml");
            if let (Some(recorded), Ok(text)) = (before["plan_yaml"].as_str(), fs::read(&written)) {
                if blake3::hash(&text).to_hex().as_str() != recorded && !force {
                    bail!(
                        "{} was edited after the run wrote it; a run follows its recipe, and plan.yaml only records it\n  hint: put the change in the recipe (or an override) and run that with another --out, or pass --force to continue this run with the recipe's plan (plan.yaml is then written again)",
                        written.display()
                    );
                }
            }
            let changed = before["inputs"]
                .as_object()
                .map(|then| changed_inputs(then, inputs))
                .unwrap_or_default();
            if !changed.is_empty() {
                if !force {
                    bail!(
                        "{} was trained from other inputs: {}\n  hint: its results would not be this data's; pass --force to train it anew (the old run is kept beside it), or choose another --out",
                        path.display(),
                        changed.join("; ")
                    );
                }
                let kept = supersede(path)?;
                eprintln!(
                    "inputs changed ({}): training anew; the old run is kept as {}",
                    changed.join("; "),
                    kept.display()
                );
            }
        }
        fs::create_dir_all(path.join(CHECKPOINTS))
            .with_context(|| format!("cannot create {}", path.display()))?;
        let header = format!(
            "# plan of {}\n# hash: {}\n",
            plan.source.display(),
            plan.hash
        );
        let plan_yaml = header + &emit::to_yaml(&json);
        write_atomic(&path.join("plan.yaml"), plan_yaml.as_bytes())?;
        let record = serde_json::json!({
            "hash": plan.hash,
            "inputs": inputs_map(inputs),
            "plan": json,
            "plan_yaml": blake3::hash(plan_yaml.as_bytes()).to_hex().as_str(),
        });
        write_atomic(&stored, serde_json::to_string_pretty(&record)?.as_bytes())?;
        run.latest()
    }

    /// A run directory another rank opened (and checked), with its latest whole checkpoint;
    /// nothing is written.
    pub fn existing(path: &Path) -> Result<(RunDir, Option<Checkpoint>)> {
        RunDir {
            path: path.to_path_buf(),
        }
        .latest()
    }

    /// The newest checkpoint that verifies (its files' digests, finite weights); one that does
    /// not is skipped, saying so on stderr, for the one before it.
    fn latest(self) -> Result<(RunDir, Option<Checkpoint>)> {
        for (_, dir) in self.checkpoints()?.into_iter().rev() {
            match load(&dir) {
                Ok(checkpoint) => return Ok((self, Some(checkpoint))),
                Err(e) => eprintln!(
                    "warning: skipping checkpoint {}: {e:#}; resuming from the one before",
                    dir.display()
                ),
            }
        }
        Ok((self, None))
    }

    /// Whole checkpoints, oldest first, with their step.
    pub fn checkpoints(&self) -> Result<Vec<(u64, PathBuf)>> {
        let mut found = Vec::new();
        for entry in fs::read_dir(self.path.join(CHECKPOINTS))? {
            let path = entry?.path();
            let step = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("step-"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(step) = step {
                found.push((step, path));
            }
        }
        found.sort();
        Ok(found)
    }

    /// Writes a whole checkpoint, then removes the ones neither among the `keep_last` newest
    /// nor the best (when `keep_best`).
    pub fn save(
        &self,
        trainable: &[(String, Tensor)],
        optimizer: &[(String, Tensor)],
        state: &RunState,
        keep_last: usize,
        keep_best: bool,
    ) -> Result<PathBuf> {
        let root = self.path.join(CHECKPOINTS);
        let dir = root.join(format!("step-{:08}", state.step));
        let partial = root.join(format!("step-{:08}.partial", state.step));
        if partial.exists() {
            fs::remove_dir_all(&partial)?;
        }
        fs::create_dir_all(&partial)?;
        let refs = |t: &[(String, Tensor)]| -> Vec<(String, Tensor)> {
            t.iter().map(|(n, t)| (n.clone(), t.detach())).collect()
        };
        let (weights, moments) = (refs(trainable), refs(optimizer));
        write_safetensors(
            &partial.join("trainable.safetensors"),
            &weights.iter().collect::<Vec<_>>(),
        )?;
        write_safetensors(
            &partial.join("optimizer.safetensors"),
            &moments.iter().collect::<Vec<_>>(),
        )?;
        write_atomic(
            &partial.join("state.json"),
            serde_json::to_string_pretty(state)?.as_bytes(),
        )?;
        // Written last inside the checkpoint: what a resume verifies the files against.
        let digests: serde_json::Map<String, Value> = CHECKED
            .iter()
            .map(|name| {
                Ok((
                    (*name).to_string(),
                    Value::from(digest(&partial.join(name))?),
                ))
            })
            .collect::<Result<_>>()?;
        write_atomic(
            &partial.join(DIGESTS),
            serde_json::to_string_pretty(&digests)?.as_bytes(),
        )?;
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::rename(&partial, &dir).with_context(|| format!("cannot write {}", dir.display()))?;
        let best = state.best.filter(|_| keep_best).map(|(_, step)| step);
        let all = self.checkpoints()?;
        let newest: Vec<u64> = all
            .iter()
            .rev()
            .take(keep_last.max(1))
            .map(|(s, _)| *s)
            .collect();
        for (step, path) in all {
            if !newest.contains(&step) && Some(step) != best {
                fs::remove_dir_all(&path)?;
            }
        }
        Ok(dir)
    }
}

/// The files of a checkpoint whose digests it records.
const CHECKED: [&str; 3] = [
    "trainable.safetensors",
    "optimizer.safetensors",
    "state.json",
];
const DIGESTS: &str = "digests.json";

/// blake3 of a file, hex.
fn digest(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(blake3::hash(&bytes).to_hex().to_string())
}

/// Reads a whole checkpoint directory (`checkpoints/step-N`), verified: each file has the
/// digest recorded when it was written (checkpoints older than digests are taken as they are),
/// and every weight and moment is finite.
pub fn load(dir: &Path) -> Result<Checkpoint> {
    let digests = dir.join(DIGESTS);
    if digests.is_file() {
        let recorded: Value = serde_json::from_str(&fs::read_to_string(&digests)?)
            .with_context(|| format!("{}: not valid JSON", digests.display()))?;
        for name in CHECKED {
            if recorded[name].as_str() != Some(digest(&dir.join(name))?.as_str()) {
                bail!("{name} is not the file that was written (its digest differs)");
            }
        }
    }
    let read = |name: &str| {
        let path = dir.join(name);
        let tensors = Tensor::read_safetensors(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if let Some((bad, _)) = tensors
            .iter()
            .find(|(_, t)| t.isfinite().all().int64_value(&[]) == 0)
        {
            bail!("{}: `{bad}` holds non-finite values", path.display());
        }
        Ok(tensors)
    };
    let state_path = dir.join("state.json");
    let state: RunState = serde_json::from_str(&fs::read_to_string(&state_path)?)
        .with_context(|| format!("{}: not a run state", state_path.display()))?;
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        trainable: read("trainable.safetensors")?,
        optimizer: read("optimizer.safetensors")?,
        state,
    })
}

/// What differs between the inputs a run was trained from and `now`, each said of its file or
/// run. A record from before file digests were kept (no `file:` entries) is compared on runs
/// only.
pub fn changed_inputs(
    then: &serde_json::Map<String, Value>,
    now: &[(String, String)],
) -> Vec<String> {
    let files_recorded = then.keys().any(|k| k.starts_with(FILE_INPUT));
    let now_map = inputs_map(now);
    let mut keys: Vec<&str> = then.keys().map(String::as_str).collect();
    keys.extend(now_map.keys().copied());
    keys.sort_unstable();
    keys.dedup();
    let mut changed = Vec::new();
    for key in keys {
        let (before, after) = (
            then.get(key).and_then(Value::as_str),
            now_map.get(key).copied(),
        );
        if before == after {
            continue;
        }
        let Some(file) = key.strip_prefix(FILE_INPUT) else {
            changed.push(format!(
                "{key}: another run ({} then, {} now)",
                before.unwrap_or("none"),
                after.unwrap_or("none")
            ));
            continue;
        };
        if !files_recorded {
            continue;
        }
        changed.push(match (before, after) {
            (_, Some(MISSING)) | (Some(_), None) => format!("{file} is gone"),
            (None | Some(MISSING), Some(_)) => format!("{file} was added"),
            (Some(_), Some(_)) => format!("{file} changed"),
            (None, None) => unreachable!("a key is in one of the two"),
        });
    }
    changed
}

/// What changed in the files the run in `dir` was trained from, against their digests `now`
/// (`file:PATH` inputs); empty when nothing did or `dir` holds no record of them.
pub fn changed_files(dir: &Path, now: &[(String, String)]) -> Vec<String> {
    let Ok(record) = crate::files::read_json(&dir.join("plan.json"), "") else {
        return Vec::new();
    };
    let Some(then) = record["inputs"].as_object() else {
        return Vec::new();
    };
    let mut then = then.clone();
    then.retain(|k, _| k.starts_with(FILE_INPUT));
    changed_inputs(&then, now)
}

/// Moves a run directory aside to `<dir>.superseded-N`, so that training anew loses nothing.
fn supersede(path: &Path) -> Result<PathBuf> {
    let mut n = 1;
    let kept = loop {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".superseded-{n}"));
        let kept = PathBuf::from(name);
        if !kept.exists() {
            break kept;
        }
        n += 1;
    };
    fs::rename(path, &kept)
        .with_context(|| format!("cannot move {} aside to {}", path.display(), kept.display()))?;
    Ok(kept)
}

fn inputs_map(inputs: &[(String, String)]) -> std::collections::BTreeMap<&str, &str> {
    inputs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Dotted keys whose values differ between two plans.
fn differences(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                differences(
                    &key,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{prefix} ({a} → {b})")),
        _ => {}
    }
}

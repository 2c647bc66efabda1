//! The PyTorch side of `runner bench recipe`: `scripts/bench_pytorch.py` builds the task's model
//! in transformers (+ PEFT), loads the weights runner starts from and trains on the batch runner
//! times, both handed over as safetensors files beside the spec, so that the two sides run the
//! same arithmetic from the same numbers and their first losses can be set side by side.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};
use tch::{Device, Tensor};

use crate::data::batch::Batch;
use crate::models::adapters::lora::LoraSpec;
use crate::models::hf_folder::write_safetensors;
use crate::plan::Plan;
use crate::train::task::Task;

/// The spec and its files, in a folder of their own that goes when this does.
pub struct Prepared {
    spec: Value,
    dir: PathBuf,
    /// Whether the script starts from runner's weights (not with a 4-bit base, which
    /// transformers cannot read from runner's layout: it then starts from its own random ones).
    pub same_weights: bool,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes the spec's files for `task`'s reference: the task's weights as they are now (call it
/// before the first step) and `batch`. `Err` (outer) is a failure, `Ok(Err)` why the task
/// has no reference.
pub fn prepare(
    plan: &Plan,
    task: &dyn Task,
    batch: &Batch,
) -> Result<std::result::Result<Prepared, String>> {
    let reference = match task.pytorch_reference() {
        Ok(r) => r,
        Err(why) => return Ok(Err(why)),
    };
    let dir = std::env::temp_dir().join(format!("runner-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut prepared = Prepared {
        spec: Value::Null,
        dir,
        same_weights: task.stores().iter().all(|(_, s)| !s.has_four_bit()),
    };
    let weights = prepared.dir.join("weights.safetensors");
    if prepared.same_weights {
        let tensors: Vec<(String, Tensor)> = task
            .stores()
            .into_iter()
            .flat_map(|(prefix, store)| {
                store
                    .iter()
                    .map(move |(name, t, _)| (format!("{prefix}{name}"), t.shallow_clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        write_safetensors(&weights, &tensors.iter().collect::<Vec<_>>())?;
    }
    let batch_file = prepared.dir.join("batch.safetensors");
    let named = [
        ("input_ids", &batch.input_ids),
        ("attention_mask", &batch.attention_mask),
        ("labels", &batch.labels),
    ];
    let tensors: Vec<(String, Tensor)> = named
        .into_iter()
        .chain(batch.extra.iter().map(|(n, t)| (*n, t)))
        .map(|(n, t)| (n.to_string(), t.shallow_clone()))
        .collect();
    write_safetensors(&batch_file, &tensors.iter().collect::<Vec<_>>())?;

    let t = plan.recipe.training();
    let lora = LoraSpec::of(&t.adapter).map(|l| {
        json!({
            "rank": l.rank, "alpha": l.alpha, "dropout": l.dropout, "targets": l.targets,
            "also_train": l.also_train,
        })
    });
    let mut spec = reference;
    let path = |p: &PathBuf| json!(p.display().to_string());
    spec["weights"] = match prepared.same_weights {
        true => path(&weights),
        false => Value::Null,
    };
    spec["batch"] = path(&batch_file);
    spec["precision"] = serde_json::to_value(t.precision)?;
    spec["gradient_checkpointing"] = json!(t.gradient_checkpointing);
    spec["lora"] = json!(lora);
    spec["lr"] = json!(t.optimizer.lr);
    spec["weight_decay"] = json!(t.optimizer.weight_decay);
    spec["betas"] = json!(t.optimizer.betas);
    spec["eps"] = json!(t.optimizer.eps);
    spec["max_grad_norm"] = json!(t.max_grad_norm);
    spec["seed"] = json!(plan.recipe.seed());
    prepared.spec = spec;
    Ok(Ok(prepared))
}

/// Runs scripts/bench_pytorch.py on the prepared spec and reads its JSON line; with several
/// ranks, under torchrun as that many DDP ranks (rank 0 reports). `warmup` untimed steps come
/// before the `steps` timed ones, as on runner's side.
pub fn run(
    prepared: &Prepared,
    device: Device,
    (warmup, steps): (u64, u64),
    ranks: usize,
) -> Result<Value> {
    let mut spec = prepared.spec.clone();
    spec["warmup_steps"] = json!(warmup);
    spec["steps"] = json!(steps);
    spec["device"] = json!(if device == Device::Cpu { "cpu" } else { "cuda" });
    spec["threads"] = json!(tch::get_num_threads());
    let mut command = match ranks {
        1 => Command::new(".venv/bin/python"),
        n => {
            let mut c = Command::new(".venv/bin/torchrun");
            c.args(["--standalone", "--nproc-per-node", &n.to_string()]);
            c
        }
    };
    // Every torchrun rank reads the spec, so it goes in a file rather than on stdin.
    let spec_file = prepared.dir.join("spec.json");
    std::fs::write(&spec_file, spec.to_string())
        .with_context(|| format!("cannot write {}", spec_file.display()))?;
    let output = command
        .arg("scripts/bench_pytorch.py")
        .arg(&spec_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start .venv/bin/python scripts/bench_pytorch.py (run from the repository root after ./dev run)")?
        .wait_with_output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|_| {
        anyhow!(
            "the PyTorch benchmark failed: {}{}\n  hint: it needs transformers and peft in .venv (pip install -r scripts/fixtures-requirements.txt)",
            text,
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

//! What a recipe kind gives the trainer: a model to train (its parameters in a store), the
//! loss of a batch, an evaluation, and how to save the result. Everything else (steps,
//! accumulation, optimizer, checkpoints, logs) is the trainer's and the same for every kind.

use std::path::Path;

use anyhow::Result;
use tch::{Device, Tensor};

use crate::data::batch::Batch;
use crate::data::loader::Loader;
use crate::models::{ParamStore, Tape};

/// Metrics and text samples of one evaluation.
#[derive(Clone, Debug, Default)]
pub struct Evaluation {
    /// Metric name → value; the plan's best metric is one of them.
    pub metrics: Vec<(String, f64)>,
    /// Tag → text (generations, for a look at what the model does).
    pub samples: Vec<(String, String)>,
    /// File name → contents, written into the run directory (replacing the last evaluation's).
    pub files: Vec<(String, String)>,
}

/// A task as its own type, for the commands that use what one kind offers (`runner generate`:
/// CoE's chain; `runner perplexity`: LongLoRA's windows).
pub trait AsAny {
    fn as_any(&self) -> &dyn std::any::Any;
}

impl<T: std::any::Any> AsAny for T {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

pub trait Task: AsAny {
    /// The weights of every model the task trains or uses, each with the prefix its names
    /// get in checkpoints (`""` for the main model); trainable ones require gradients.
    fn stores(&self) -> Vec<(&'static str, &ParamStore)>;
    fn device(&self) -> Device;
    /// The training micro-batches.
    fn loader(&self) -> &Loader;
    /// Mean loss of one micro-batch (on the task's device), through `tape`, at optimizer step
    /// `step` (losses may anneal).
    fn loss<'a>(&'a self, batch: &Batch, tape: &Tape<'a>, step: u64) -> Tensor;
    /// Training metrics of the step whose micro-batches `loss` has seen since the last call
    /// (a multitask kind's loss per task), logged beside the step's loss.
    fn step_metrics(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
    /// Evaluates on the validation data.
    fn evaluate(&self) -> Result<Evaluation>;
    /// The metric that picks the best checkpoint, and whether larger is better.
    fn best_metric(&self) -> (&'static str, bool);
    /// Saves the trained result (an HF folder, or a PEFT adapter) in `dir`.
    fn save(&self, dir: &Path) -> Result<()>;
    /// (name, content hash) of what the task read besides the plan that identifies its run
    /// (an earlier round's category weights); recorded with the run's inputs.
    fn input_hashes(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// The micro-batch `runner bench` times: the first training micro-batch, on the device.
    fn bench_batch(&self) -> Batch {
        let loader = self.loader();
        let indices: Vec<usize> = (0..loader.batch_size.min(loader.len)).collect();
        (loader.make)(&indices).to_device(self.device())
    }
    /// The same model and batch for `scripts/bench_pytorch.py` (transformers + PEFT), where
    /// there is one.
    fn pytorch_reference(&self) -> Option<serde_json::Value> {
        None
    }
}

/// Every trainable parameter of a task, named with its store's prefix.
pub fn trainable(task: &dyn Task) -> Vec<(String, Tensor)> {
    task.stores()
        .into_iter()
        .flat_map(|(prefix, store)| {
            store
                .trainable()
                .into_iter()
                .map(move |(name, t)| (format!("{prefix}{name}"), t))
        })
        .collect()
}

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
    /// Metric name → value; the plan's best metric is one of them (or of `partials`).
    pub metrics: Vec<(String, f64)>,
    /// Metrics as sums over the items evaluated, read once the ranks' sums are added up.
    pub partials: Vec<Partial>,
    /// Tag → text (generations, for a look at what the model does).
    pub samples: Vec<(String, String)>,
    /// File name → contents, written into the run directory (replacing the last evaluation's).
    pub files: Vec<(String, String)>,
}

/// The part of the validation data a rank evaluates: the i-th item (or batch, where a batch's
/// mean is part of a metric) when i mod size = rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalShare {
    pub rank: usize,
    pub size: usize,
}

impl EvalShare {
    /// Every item (one rank, or a kind that does not share its evaluation).
    pub fn whole() -> EvalShare {
        EvalShare { rank: 0, size: 1 }
    }

    pub fn takes(&self, item: usize) -> bool {
        item % self.size.max(1) == self.rank
    }
}

/// A metric as a sum over the items a rank evaluated and their weight (tokens, items, trials):
/// the ranks' sums and weights add up to those of the whole data.
#[derive(Clone, Debug)]
pub struct Partial {
    pub name: String,
    pub sum: f64,
    pub weight: f64,
    pub reading: Reading,
}

/// How a partial's sum and weight give the metric (a zero weight reads as one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    Mean,
    /// 100 × the mean.
    Percent,
    /// e^mean (a perplexity from summed losses).
    ExpOfMean,
}

impl Partial {
    pub fn new(name: impl Into<String>, sum: f64, weight: f64, reading: Reading) -> Partial {
        Partial {
            name: name.into(),
            sum,
            weight,
            reading,
        }
    }

    pub fn value(&self) -> f64 {
        let weight = self.weight.max(1.0);
        match self.reading {
            Reading::Mean => self.sum / weight,
            Reading::Percent => 100.0 * self.sum / weight,
            Reading::ExpOfMean => (self.sum / weight).exp(),
        }
    }
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
    /// Evaluates on the validation data: on `share` of its items when the kind shares its
    /// evaluation over the ranks (its metrics then come as `partials`), else on all of them.
    fn evaluate(&self, share: EvalShare) -> Result<Evaluation>;
    /// Whether `evaluate` takes a share of the items, so that every rank evaluates its part.
    fn shares_evaluation(&self) -> bool {
        false
    }
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
        (loader.make)(&loader.first_batch()).to_device(self.device())
    }
    /// The same model in transformers for `scripts/bench_pytorch.py`: its `task` and `model`
    /// (the other keys of the spec come from the plan's training section), or why there is
    /// none.
    fn pytorch_reference(&self) -> std::result::Result<serde_json::Value, String> {
        Err("no PyTorch reference for this kind".to_string())
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

//! The layout every recipe kind shares: the same top-level sections, with kind-specific model,
//! data, evaluation and method sections; and what a kind adds to them ([`RecipeKind`]), which
//! each kind implements in its own file under `kinds/`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checks::Checker;
use super::common::{EvalSchedule, Logging, Output};
use super::parts::Part;
use super::training::Training;

/// The layout every recipe kind shares. `K` is the kind marker, `M` the models, `D` the data,
/// `E` the evaluation and `X` the method section specific to the paper.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "{K}Recipe")]
pub struct RecipeOf<K, M, D, E: Default, X> {
    /// The recipe kind, which decides the model, data, evaluation and method sections.
    pub kind: K,
    /// The run's name; also names its output directory.
    pub name: String,
    /// What this recipe reproduces, and from where.
    #[serde(default)]
    pub description: Option<String>,
    /// Seed of every random choice: initialisation, data order, dropout.
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub model: M,
    pub data: D,
    pub training: Training,
    #[serde(default)]
    pub evaluation: E,
    pub method: X,
    #[serde(default)]
    pub logging: Logging,
    #[serde(default)]
    pub output: Output,
}

fn default_seed() -> u64 {
    42
}

/// The sections every kind has, read the same way whatever the kind.
pub trait Shared {
    /// Every value, defaults filled, as JSON with sorted keys.
    fn to_json(&self) -> serde_json::Value;
    fn name(&self) -> &str;
    fn seed(&self) -> u64;
    fn training(&self) -> &Training;
    fn logging(&self) -> &Logging;
    fn output(&self) -> &Output;
    /// When evaluation runs (the fields every kind's `evaluation` section has).
    fn evaluation(&self) -> EvalSchedule;
}

/// A kind's `evaluation` section: its schedule, beside whatever the kind measures.
pub trait Evaluation {
    fn schedule(&self) -> EvalSchedule;
}

impl<K, M, D, E, X> Shared for RecipeOf<K, M, D, E, X>
where
    K: Serialize,
    M: Serialize,
    D: Serialize,
    E: Serialize + Default + Evaluation,
    X: Serialize,
{
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("recipes serialize: plain structs with string keys")
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn seed(&self) -> u64 {
        self.seed
    }
    fn training(&self) -> &Training {
        &self.training
    }
    fn logging(&self) -> &Logging {
        &self.logging
    }
    fn output(&self) -> &Output {
        &self.output
    }
    fn evaluation(&self) -> EvalSchedule {
        self.evaluation.schedule()
    }
}

/// Implements [`Evaluation`] for a kind's evaluation section, which has the schedule's fields
/// (`every_steps`, `every_epochs`, `at_start`) beside its own.
macro_rules! evaluation_schedule {
    ($section:ty) => {
        impl $crate::plan::layout::Evaluation for $section {
            fn schedule(&self) -> $crate::plan::common::EvalSchedule {
                $crate::plan::common::EvalSchedule {
                    every_steps: self.every_steps,
                    every_epochs: self.every_epochs,
                    at_start: self.at_start,
                }
            }
        }
    };
}
pub(crate) use evaluation_schedule;

/// What a recipe kind adds to the shared sections; each kind implements it in `kinds/`.
pub trait RecipeKind: Shared {
    /// The kind's own rules: the cross-key rules a schema cannot say, and every rule a run
    /// of the kind would otherwise find only when it starts.
    fn check(&self, c: &mut Checker);
    /// The models the recipe builds.
    fn parts(&self) -> Vec<Part>;
    /// Recipes whose finished runs this one reads (a teacher, an earlier DataEngine round).
    fn input_recipes(&self) -> Vec<InputRecipe> {
        Vec::new()
    }
    /// The files and folders a run of this recipe reads (data, tokenizers, weights, images);
    /// their content digests are part of the run's identity.
    fn input_paths(&self) -> Vec<InputPath>;
    /// What a run of this recipe leaves for other recipes' runs to read, besides its own
    /// artifacts (a trained teacher, error rates).
    fn leaves(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Leaves out what only the paper's method has, so `runner bench` times the same model as
    /// its PyTorch reference does.
    fn as_in_pytorch(&mut self) {}
}

/// A path a recipe names whose content a run reads.
#[derive(Clone, Debug, PartialEq)]
pub enum InputPath {
    File(String),
    /// Every file under it (an HF folder: config, weights, tokenizer); a file, if it is one.
    Folder(String),
    /// The images a ScienceQA-style data file lists (`image`), under `root`.
    ImagesOf {
        data: String,
        root: String,
    },
}

/// A recipe another recipe names, and what it reads from that recipe's run.
pub struct InputRecipe {
    /// The key that names it (`model.teacher.recipe`).
    pub key: &'static str,
    /// What its run is recorded as in this run's inputs (`teacher`).
    pub name: &'static str,
    pub path: String,
    /// What the input's run must leave (one of its `RecipeKind::leaves`).
    pub needs: &'static str,
    /// What kind of recipe leaves it, for the error when this one does not.
    pub from: &'static str,
}

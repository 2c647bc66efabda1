//! A recipe: the same top-level sections for every kind, with kind-specific model, data,
//! evaluation and method sections.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Logging, Output};
use super::kinds::{coe, iag, longlora};
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

pub type IagRecipe = RecipeOf<iag::Kind, iag::Models, iag::Data, iag::Evaluation, iag::Method>;
pub type LongloraRecipe = RecipeOf<
    longlora::Kind,
    longlora::Model,
    longlora::Data,
    longlora::Evaluation,
    longlora::Method,
>;
pub type CoeRecipe = RecipeOf<coe::Kind, coe::Model, coe::Data, coe::Evaluation, coe::Method>;

/// A typed recipe of any kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Recipe {
    IagDistill(IagRecipe),
    LongloraSft(LongloraRecipe),
    CoeMultitask(CoeRecipe),
}

/// The `kind` values of recipes, as written in YAML.
pub const KINDS: [&str; 3] = ["iag_distill", "longlora_sft", "coe_multitask"];

impl Recipe {
    /// Type a checked JSON tree as the recipe of `kind`.
    pub fn from_json(kind: &str, json: serde_json::Value) -> Result<Recipe, serde_json::Error> {
        Ok(match kind {
            "iag_distill" => Recipe::IagDistill(serde_json::from_value(json)?),
            "longlora_sft" => Recipe::LongloraSft(serde_json::from_value(json)?),
            _ => Recipe::CoeMultitask(serde_json::from_value(json)?),
        })
    }

    /// Every value, defaults filled, as JSON with sorted keys.
    pub fn to_json(&self) -> serde_json::Value {
        let value = match self {
            Recipe::IagDistill(r) => serde_json::to_value(r),
            Recipe::LongloraSft(r) => serde_json::to_value(r),
            Recipe::CoeMultitask(r) => serde_json::to_value(r),
        };
        value.expect("recipes serialize: plain structs with string keys")
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Recipe::IagDistill(_) => KINDS[0],
            Recipe::LongloraSft(_) => KINDS[1],
            Recipe::CoeMultitask(_) => KINDS[2],
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Recipe::IagDistill(r) => &r.name,
            Recipe::LongloraSft(r) => &r.name,
            Recipe::CoeMultitask(r) => &r.name,
        }
    }

    pub fn seed(&self) -> u64 {
        match self {
            Recipe::IagDistill(r) => r.seed,
            Recipe::LongloraSft(r) => r.seed,
            Recipe::CoeMultitask(r) => r.seed,
        }
    }

    pub fn logging(&self) -> &Logging {
        match self {
            Recipe::IagDistill(r) => &r.logging,
            Recipe::LongloraSft(r) => &r.logging,
            Recipe::CoeMultitask(r) => &r.logging,
        }
    }

    pub fn output(&self) -> &Output {
        match self {
            Recipe::IagDistill(r) => &r.output,
            Recipe::LongloraSft(r) => &r.output,
            Recipe::CoeMultitask(r) => &r.output,
        }
    }

    /// When evaluation runs: (every N optimizer steps, every fraction of an epoch).
    pub fn evaluation_interval(&self) -> (Option<u64>, Option<f64>) {
        match self {
            Recipe::IagDistill(r) => (r.evaluation.every_steps, r.evaluation.every_epochs),
            Recipe::LongloraSft(r) => (r.evaluation.every_steps, r.evaluation.every_epochs),
            Recipe::CoeMultitask(r) => (r.evaluation.every_steps, r.evaluation.every_epochs),
        }
    }

    /// Whether the untrained model is evaluated at step 0.
    pub fn evaluation_at_start(&self) -> bool {
        match self {
            Recipe::IagDistill(r) => r.evaluation.at_start,
            Recipe::LongloraSft(r) => r.evaluation.at_start,
            Recipe::CoeMultitask(r) => r.evaluation.at_start,
        }
    }

    pub fn training(&self) -> &Training {
        match self {
            Recipe::IagDistill(r) => &r.training,
            Recipe::LongloraSft(r) => &r.training,
            Recipe::CoeMultitask(r) => &r.training,
        }
    }
}

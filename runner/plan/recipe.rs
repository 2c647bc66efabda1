//! A typed recipe of any kind: the one enum over the kinds, and the `kind` names they go by.
//! Everything else about a recipe goes through the kind ([`RecipeKind`]).

use super::common::{EvalSchedule, Logging, Output};
pub use super::kinds::coe::CoeRecipe;
pub use super::kinds::iag::IagRecipe;
pub use super::kinds::longlora::LongloraRecipe;
pub use super::layout::{InputRecipe, RecipeKind, RecipeOf};
use super::parts::Part;
use super::training::Training;

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

    /// The recipe as its kind.
    pub fn as_kind(&self) -> &dyn RecipeKind {
        match self {
            Recipe::IagDistill(r) => r,
            Recipe::LongloraSft(r) => r,
            Recipe::CoeMultitask(r) => r,
        }
    }

    pub fn as_kind_mut(&mut self) -> &mut dyn RecipeKind {
        match self {
            Recipe::IagDistill(r) => r,
            Recipe::LongloraSft(r) => r,
            Recipe::CoeMultitask(r) => r,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Recipe::IagDistill(_) => KINDS[0],
            Recipe::LongloraSft(_) => KINDS[1],
            Recipe::CoeMultitask(_) => KINDS[2],
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        self.as_kind().to_json()
    }

    pub fn name(&self) -> &str {
        self.as_kind().name()
    }

    pub fn seed(&self) -> u64 {
        self.as_kind().seed()
    }

    pub fn training(&self) -> &Training {
        self.as_kind().training()
    }

    pub fn logging(&self) -> &Logging {
        self.as_kind().logging()
    }

    pub fn output(&self) -> &Output {
        self.as_kind().output()
    }

    /// When evaluation runs.
    pub fn evaluation(&self) -> EvalSchedule {
        self.as_kind().evaluation()
    }

    pub fn parts(&self) -> Vec<Part> {
        self.as_kind().parts()
    }
}

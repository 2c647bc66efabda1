//! Sections shared by every recipe kind: logging, output, when evaluation runs and how the best
//! checkpoint is chosen.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where metrics go while the run trains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    /// Log training loss and learning rate every this many optimizer steps.
    #[serde(default = "ten")]
    #[schemars(range(min = 1))]
    pub every_steps: u64,
    /// Write TensorBoard event files in the run directory.
    #[serde(default = "yes")]
    pub tensorboard: bool,
    /// Write metrics.csv in the run directory.
    #[serde(default = "yes")]
    pub csv: bool,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            every_steps: 10,
            tensorboard: true,
            csv: true,
        }
    }
}

fn ten() -> u64 {
    10
}

fn yes() -> bool {
    true
}

/// Where the run writes, and which checkpoints it keeps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// The run directory; `{name}` is replaced by the recipe's name.
    #[serde(default = "default_dir")]
    #[schemars(extend("format" = "path"))]
    pub dir: String,
    /// Save a checkpoint every this many optimizer steps (and at the end); null saves only at the end.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub checkpoint_every_steps: Option<u64>,
    /// How many of the most recent checkpoints to keep.
    #[serde(default = "two")]
    #[schemars(range(min = 1))]
    pub keep_last: u32,
    /// Also keep the checkpoint with the best evaluation metric.
    #[serde(default = "yes")]
    pub keep_best: bool,
}

impl Default for Output {
    fn default() -> Self {
        Output {
            dir: default_dir(),
            checkpoint_every_steps: None,
            keep_last: 2,
            keep_best: true,
        }
    }
}

fn default_dir() -> String {
    "results/runs/{name}".into()
}

fn two() -> u32 {
    2
}

/// Whether a larger or a smaller metric is better.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    Maximize,
    Minimize,
}

/// When evaluation runs: the fields every kind's `evaluation` section has.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalSchedule {
    /// Every this many optimizer steps.
    pub every_steps: Option<u64>,
    /// Every this fraction of an epoch.
    pub every_epochs: Option<f64>,
    /// Also the untrained model before the first step (step 0), as the baseline.
    pub at_start: bool,
}

/// The tokenizer.json a model reads: `tokenizer` when given, else the one in its HF `folder`;
/// `None` when there is neither.
pub fn tokenizer_file(tokenizer: Option<&str>, folder: Option<&str>) -> Option<PathBuf> {
    match (tokenizer, folder) {
        (Some(t), _) => Some(PathBuf::from(t)),
        (None, Some(dir)) => Some(Path::new(dir).join("tokenizer.json")),
        (None, None) => None,
    }
}

/// Whether a path that may name a file or a recipe names a recipe.
pub fn is_recipe(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}

//! The sweep file (`kind: sweep`): one base recipe, the axes to vary, and how to search them.
//! Validated here like a recipe; run by `runner sweep`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::plan::common::Goal;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "Sweep")]
pub enum Kind {
    Sweep,
}

/// A sweep over one recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SweepSpec")]
pub struct SweepSpec {
    pub kind: Kind,
    /// Names the results folder, results/sweeps/<name>.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The base recipe, relative to this file.
    pub recipe: String,
    /// Overrides applied to every trial (KEY.PATH: value).
    #[serde(default)]
    pub fixed: BTreeMap<String, serde_json::Value>,
    /// `grid` (every combination) or `random` (`count` draws).
    #[serde(default)]
    pub method: Method,
    /// Trials drawn by `random`.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub count: Option<u32>,
    /// Seed of the random search (not of the trials).
    #[serde(default)]
    pub seed: u64,
    /// Independent axes: a recipe key and its values or range.
    #[serde(default)]
    pub parameters: BTreeMap<String, Parameter>,
    /// Groups of keys that vary together: each key lists one value per setting, all lists equally long.
    #[serde(default)]
    pub paired: Vec<BTreeMap<String, Vec<serde_json::Value>>>,
    /// Seed replicates: each configuration runs once per seed (sets the recipe's `seed`).
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub seeds: Vec<u64>,
    /// The most trials the sweep may have: above 1,000 it must be set, so that a sweep that
    /// size is meant.
    #[serde(default)]
    pub max_trials: Option<u64>,
    pub metric: Metric,
    /// Trials run at once by the local launcher.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub max_parallel: u32,
    /// Stop trials that fall behind (the median stopping rule).
    #[serde(default)]
    pub early_termination: Option<EarlyTermination>,
    /// Resources of each trial when launched on Slurm.
    #[serde(default)]
    pub slurm: Option<Slurm>,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "SweepMethod")]
pub enum Method {
    #[default]
    Grid,
    Random,
}

/// One axis: `values: [...]`, or a `distribution` between `min` and `max` (random search).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    #[serde(default)]
    pub values: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub distribution: Option<Distribution>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    Uniform,
    LogUniform,
    IntUniform,
}

/// The metric a sweep ranks trials by, as the run's evaluation logs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SweepMetric")]
pub struct Metric {
    /// The metric's name, such as eval/loss or eval/exact_match.
    pub name: String,
    pub goal: Goal,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EarlyTermination {
    /// Only `median` for now: stop a trial below the median of the others at the same step.
    #[serde(rename = "type")]
    pub kind: Termination,
    /// Evaluations before any trial may be stopped.
    #[serde(default = "one")]
    pub min_evaluations: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Termination {
    Median,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Slurm {
    #[serde(default)]
    pub partition: Option<String>,
    /// Wall-clock limit per trial, as sbatch takes it (HH:MM:SS).
    #[serde(default)]
    pub time: Option<String>,
    #[serde(default = "one")]
    pub cpus_per_task: u32,
    #[serde(default)]
    pub gpus_per_task: u32,
    /// Memory per trial, as sbatch takes it (such as 16G).
    #[serde(default)]
    pub mem: Option<String>,
}

impl Slurm {
    /// The resources written as text into the job script, by key.
    pub fn text_values(&self) -> [(&'static str, Option<&str>); 3] {
        [
            ("partition", self.partition.as_deref()),
            ("time", self.time.as_deref()),
            ("mem", self.mem.as_deref()),
        ]
    }
}

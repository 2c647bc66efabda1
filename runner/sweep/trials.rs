//! Expanding a sweep into trials: each trial is the base recipe plus overrides (the sweep's
//! `fixed` ones, one value per axis, a seed). Grid search takes every combination of
//! `parameters` values and `paired` settings; random search draws `count` configurations with
//! the sweep's own seed. Seed replicates multiply either.

use std::collections::BTreeMap;

use serde_json::Value;

use super::spec::{Distribution, Method, Parameter, SweepSpec};
use crate::data::order::SplitMix64;

/// One configuration of the sweep, with its seed.
#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    /// The swept keys and their values, in the order the sweep lists them (paired keys too).
    pub params: Configuration,
    /// The seed replicate, when the sweep has a `seeds` axis.
    pub seed: Option<u64>,
}

impl Trial {
    /// `KEY.PATH=VALUE` overrides for `runner run`: the sweep's fixed values, then this
    /// trial's values and seed. Values are JSON, which the YAML override parser reads as is.
    pub fn overrides(&self, spec: &SweepSpec) -> Vec<String> {
        let fixed = spec.fixed.iter().map(|(k, v)| (k.as_str(), v));
        let own = self.params.iter().map(|(k, v)| (k.as_str(), v));
        let mut out: Vec<String> = fixed.chain(own).map(|(k, v)| format!("{k}={v}")).collect();
        if let Some(seed) = self.seed {
            out.push(format!("seed={seed}"));
        }
        out
    }

    /// The configuration without the seed: replicates share it.
    pub fn configuration(&self) -> String {
        as_overrides(&self.params)
    }
}

/// How many trials [`expand`] makes, without making them.
pub fn count(spec: &SweepSpec) -> u64 {
    let configurations = match spec.method {
        Method::Grid => {
            let parameters = spec
                .parameters
                .values()
                .map(|p| p.values.as_ref().map_or(1, Vec::len) as u64);
            let groups = spec
                .paired
                .iter()
                .map(|g| g.values().next().map_or(1, Vec::len) as u64);
            parameters.chain(groups).fold(1u64, u64::saturating_mul)
        }
        Method::Random => u64::from(spec.count.unwrap_or(0)),
    };
    configurations.saturating_mul(spec.seeds.len().max(1) as u64)
}

/// Every trial of the sweep, in a stable order.
pub fn expand(spec: &SweepSpec) -> Vec<Trial> {
    let configurations = match spec.method {
        Method::Grid => grid(spec),
        Method::Random => random(spec),
    };
    let seeds: Vec<Option<u64>> = match spec.seeds.is_empty() {
        true => vec![None],
        false => spec.seeds.iter().copied().map(Some).collect(),
    };
    configurations
        .into_iter()
        .flat_map(|params| {
            seeds.iter().map(move |&seed| Trial {
                params: params.clone(),
                seed,
            })
        })
        .collect()
}

/// Swept keys and their values.
pub type Configuration = Vec<(String, Value)>;

/// `KEY=VALUE KEY=VALUE`: ready to paste after `runner run RECIPE`.
pub fn as_overrides(configuration: &[(String, Value)]) -> String {
    configuration
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The settings of one axis: an independent parameter's values, or a paired group's rows.
fn axes(spec: &SweepSpec) -> Vec<Vec<Configuration>> {
    let mut axes: Vec<Vec<Configuration>> = spec
        .parameters
        .iter()
        .map(|(key, p)| {
            p.values
                .iter()
                .flatten()
                .map(|v| vec![(key.clone(), v.clone())])
                .collect()
        })
        .collect();
    axes.extend(spec.paired.iter().map(paired_rows));
    axes
}

/// Row i of a paired group: every key with its i-th value.
fn paired_rows(group: &BTreeMap<String, Vec<Value>>) -> Vec<Configuration> {
    let n = group.values().map(Vec::len).min().unwrap_or(0);
    (0..n)
        .map(|i| {
            group
                .iter()
                .map(|(k, vs)| (k.clone(), vs[i].clone()))
                .collect()
        })
        .collect()
}

/// The cartesian product of the axes, the first axis varying slowest.
fn grid(spec: &SweepSpec) -> Vec<Configuration> {
    axes(spec).into_iter().fold(vec![Vec::new()], |done, axis| {
        done.iter()
            .flat_map(|prefix| {
                axis.iter().map(move |setting| {
                    let mut c = prefix.clone();
                    c.extend(setting.iter().cloned());
                    c
                })
            })
            .collect()
    })
}

/// `count` configurations, each parameter drawn on its own (values uniformly, ranges by their
/// distribution) and each paired group's row uniformly.
fn random(spec: &SweepSpec) -> Vec<Configuration> {
    let mut rng = SplitMix64::new(spec.seed);
    (0..spec.count.unwrap_or(0))
        .map(|_| {
            let mut c: Configuration = spec
                .parameters
                .iter()
                .map(|(key, p)| (key.clone(), draw(p, &mut rng)))
                .collect();
            for group in &spec.paired {
                let rows = paired_rows(group);
                if !rows.is_empty() {
                    c.extend(rows[rng.below(rows.len() as u64) as usize].clone());
                }
            }
            c
        })
        .collect()
}

/// Uniform in [0, 1) with 53 random bits.
fn unit(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn draw(p: &Parameter, rng: &mut SplitMix64) -> Value {
    if let Some(values) = p.values.as_ref().filter(|v| !v.is_empty()) {
        return values[rng.below(values.len() as u64) as usize].clone();
    }
    let (min, max) = (p.min.unwrap_or(0.0), p.max.unwrap_or(1.0));
    let u = unit(rng);
    match p.distribution.unwrap_or(Distribution::Uniform) {
        Distribution::Uniform => Value::from(min + u * (max - min)),
        Distribution::LogUniform => Value::from((min.ln() + u * (max.ln() - min.ln())).exp()),
        Distribution::IntUniform => {
            let (lo, hi) = (min.ceil() as i64, max.floor() as i64);
            Value::from(lo + rng.below((hi - lo + 1).max(1) as u64) as i64)
        }
    }
}

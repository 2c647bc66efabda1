//! The multitask mixture: which task each training example comes from. Tasks are drawn with
//! probabilities from their weights, in proportion (`p ∝ w`) or at a temperature
//! (`p ∝ w^(1/T)`: T > 1 flattens towards uniform, T < 1 sharpens), with the plan's seed, so
//! the sequence of tasks is the same on every machine and after a resume.

use super::order::{epoch_order, SplitMix64};
use crate::plan::kinds::coe::Mixing;

pub struct Mixture {
    /// Cumulative probabilities.
    cumulative: Vec<f64>,
    rng: SplitMix64,
}

/// The probability of each task.
pub fn probabilities(weights: &[f64], mixing: Mixing, temperature: f64) -> Vec<f64> {
    let scaled: Vec<f64> = weights
        .iter()
        .map(|&w| match (mixing, w > 0.0) {
            (_, false) => 0.0,
            (Mixing::Proportional, true) => w,
            (Mixing::Temperature, true) => w.powf(1.0 / temperature),
        })
        .collect();
    let total: f64 = scaled.iter().sum();
    scaled.iter().map(|s| s / total).collect()
}

impl Mixture {
    pub fn new(weights: &[f64], mixing: Mixing, temperature: f64, seed: u64) -> Mixture {
        let mut sum = 0.0;
        let cumulative = probabilities(weights, mixing, temperature)
            .into_iter()
            .map(|p| {
                sum += p;
                sum
            })
            .collect();
        Mixture {
            cumulative,
            rng: SplitMix64::new(seed),
        }
    }

    /// The next example's task.
    pub fn next_task(&mut self) -> usize {
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        self.cumulative
            .iter()
            .position(|&c| u < c)
            .unwrap_or(self.cumulative.len() - 1)
    }
}

/// The training examples, `(task, item)` for each of `total`: the task drawn by `tasks`, then
/// (when there are several weighted item groups, the DataEngine's categories) a group drawn by
/// its weight, then the next item of that task and group in a seeded order, cycling. One group
/// of all items gives each task its items in a seeded order.
pub fn training_sequence(
    tasks: &mut Mixture,
    groups: &[(f64, Vec<usize>)],
    total: usize,
    seed: u64,
) -> Vec<(usize, usize)> {
    let n_tasks = tasks.cumulative.len();
    let weights: Vec<f64> = groups.iter().map(|(w, _)| *w).collect();
    let mut categories = Mixture::new(&weights, Mixing::Proportional, 1.0, seed ^ 0xCA7E_6021);
    // Task k's order within group g: its own stream of the plan's seed.
    let orders: Vec<Vec<Vec<usize>>> = (0..n_tasks)
        .map(|k| {
            groups
                .iter()
                .enumerate()
                .map(|(g, (_, members))| {
                    let stream = (k + g * n_tasks) as u64;
                    let order = epoch_order(members.len(), seed, stream);
                    order.into_iter().map(|i| members[i]).collect()
                })
                .collect()
        })
        .collect();
    let mut next = vec![vec![0usize; groups.len()]; n_tasks];
    (0..total)
        .map(|_| {
            let k = tasks.next_task();
            let g = match groups.len() {
                1 => 0,
                _ => categories.next_task(),
            };
            let order = &orders[k][g];
            let item = order[next[k][g] % order.len()];
            next[k][g] += 1;
            (k, item)
        })
        .collect()
}

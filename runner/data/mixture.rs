//! The multitask mixture: which task each training example comes from. Tasks are drawn with
//! probabilities from their weights, in proportion (`p ∝ w`) or at a temperature
//! (`p ∝ w^(1/T)`: T > 1 flattens towards uniform, T < 1 sharpens), with the plan's seed, so
//! the sequence of tasks is the same on every machine and after a resume.

use super::order::SplitMix64;
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

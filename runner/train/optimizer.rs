//! AdamW (Loshchilov & Hutter) with the update of `torch.optim.AdamW`, written here because
//! tch's optimizer cannot save or load its moments, and exact resume needs them. Moments are
//! fp32 whatever the weights' kind; parameters named in `no_decay` get no weight decay. As in
//! torch, a parameter without a gradient skips the step entirely, its step count (and so its
//! bias correction) included.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use crate::plan::training::Optimizer;

pub struct AdamW {
    betas: [f64; 2],
    eps: f64,
    weight_decay: f64,
    no_decay: Vec<String>,
    /// Optimizer steps taken so far.
    pub steps: u64,
    /// First and second moments per parameter name, and the steps that parameter took.
    moments: BTreeMap<String, (Tensor, Tensor, u64)>,
}

impl AdamW {
    pub fn new(config: &Optimizer) -> AdamW {
        AdamW {
            betas: config.betas,
            eps: config.eps,
            weight_decay: config.weight_decay,
            no_decay: config.no_decay.clone(),
            steps: 0,
            moments: BTreeMap::new(),
        }
    }

    /// The weight decay of the parameter `name` (none for those `no_decay` names).
    pub fn decay(&self, name: &str) -> f64 {
        match self.no_decay.iter().any(|n| name.contains(n.as_str())) {
            true => 0.0,
            false => self.weight_decay,
        }
    }

    /// Whether `name` has taken a step (has moments).
    pub fn has_stepped(&self, name: &str) -> bool {
        self.moments.contains_key(name)
    }

    pub fn betas_eps(&self) -> ([f64; 2], f64) {
        (self.betas, self.eps)
    }

    /// One update of every parameter that has a gradient, at learning rate `lr`:
    /// `p ← p·(1 − lr·wd)`, then `p ← p − lr/(1 − β1ᵗ) · m / (√v/√(1 − β2ᵗ) + ε)`, with `t`
    /// the number of steps in which that parameter had a gradient (torch's per-parameter step).
    pub fn step(&mut self, params: &[(String, Tensor)], lr: f64) {
        self.steps += 1;
        tch::no_grad(|| {
            for (name, p) in params {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let g = g.to_kind(Kind::Float);
                let decay = self.decay(name);
                let (m, v, t) = self
                    .moments
                    .entry(name.clone())
                    .or_insert_with(|| (g.zeros_like(), g.zeros_like(), 0));
                *t += 1;
                // fp32 weights are updated where they are; others through an fp32 copy.
                let mut values = match p.kind() {
                    Kind::Float => p.shallow_clone(),
                    _ => p.to_kind(Kind::Float),
                };
                let _ = values.g_mul_scalar_(1.0 - lr * decay);
                let updated = adam_update(values, &g, (m, v), *t, lr, self.betas, self.eps);
                if p.kind() != Kind::Float {
                    let mut p = p.shallow_clone();
                    p.copy_(&updated);
                }
            }
        });
    }

    /// The moments, as tensors named `exp_avg.<param>` and `exp_avg_sq.<param>` (PyTorch's names),
    /// and each parameter's step count as an int64 scalar `step.<param>`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.moments
            .iter()
            .flat_map(|(name, (m, v, t))| {
                [
                    (format!("exp_avg.{name}"), m.shallow_clone()),
                    (format!("exp_avg_sq.{name}"), v.shallow_clone()),
                    (format!("step.{name}"), Tensor::from(*t as i64)),
                ]
            })
            .collect()
    }

    /// Restores moments saved by [`AdamW::state`] after `steps` steps. A parameter without a
    /// saved `step.<param>` (state written before those were saved) is taken to have taken
    /// all `steps`.
    pub fn load_state(&mut self, tensors: Vec<(String, Tensor)>, steps: u64) -> Result<()> {
        let mut firsts = BTreeMap::new();
        let mut seconds = BTreeMap::new();
        let mut counts = BTreeMap::new();
        for (key, t) in tensors {
            if let Some(name) = key.strip_prefix("exp_avg_sq.") {
                seconds.insert(name.to_string(), t);
            } else if let Some(name) = key.strip_prefix("exp_avg.") {
                firsts.insert(name.to_string(), t);
            } else if let Some(name) = key.strip_prefix("step.") {
                counts.insert(name.to_string(), t.int64_value(&[]) as u64);
            } else {
                bail!("optimizer state holds `{key}`, which is not an AdamW moment");
            }
        }
        self.moments.clear();
        for (name, m) in firsts {
            let Some(v) = seconds.remove(&name) else {
                bail!("optimizer state has exp_avg but no exp_avg_sq for `{name}`");
            };
            let t = counts.remove(&name).unwrap_or(steps);
            self.moments.insert(name, (m, v, t));
        }
        if let Some(name) = counts.keys().next() {
            bail!("optimizer state has a step count but no moments for `{name}`");
        }
        self.steps = steps;
        Ok(())
    }
}

/// Adam's step on fp32 values already decayed (`p·(1 − lr·wd)`), with gradient `g`, at the
/// parameter's step `t`: the moments and the values are updated in place (the values are
/// returned), `p − lr/(1 − β1ᵗ) · m / (√v/√(1 − β2ᵗ) + ε)`, by torch's single-tensor AdamW's
/// operations (`lerp_`, `addcmul_`, `addcdiv_`): one temporary, not ten, each a pass over
/// memory (measured: a tenth of a 16M-weight embedding's step). Shared by the replicated and
/// the sharded (ZeRO) optimizer, so both take the same step.
pub fn adam_update(
    mut values: Tensor,
    g: &Tensor,
    (m, v): (&mut Tensor, &mut Tensor),
    t: u64,
    lr: f64,
    [b1, b2]: [f64; 2],
    eps: f64,
) -> Tensor {
    let (c1, c2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
    let _ = m.lerp_(g, 1.0 - b1);
    // β2·v + (1 − β2)·g² in place, as (β2/(1 − β2)·v + g²)·(1 − β2): tch's addcmul_ has no
    // `value`, and a scaled copy of g would be a temporary the size of the weight.
    let _ = v
        .g_mul_scalar_(b2 / (1.0 - b2))
        .addcmul_(g, g)
        .g_mul_scalar_(1.0 - b2);
    if lr == 0.0 {
        return values;
    }
    // denom = (√v/√(1 − β2ᵗ) + ε)·(−(1 − β1ᵗ)/lr), in two passes, so that addcdiv_ adds
    // −lr/(1 − β1ᵗ) · m / (√v/√(1 − β2ᵗ) + ε).
    let scale = -c1 / lr;
    let mut denom = v.sqrt();
    let _ = denom.g_mul_scalar_(scale / c2.sqrt());
    let _ = denom.g_add_scalar_(scale * eps);
    let _ = values.addcdiv_(m, &denom);
    values
}

/// The global L2 norm of all gradients; when above `max_norm`, every gradient is scaled down
/// to it (as `torch.nn.utils.clip_grad_norm_`). Parameters without a gradient are skipped, and
/// no gradient at all gives 0.
pub fn clip_grad_norm(params: &[(String, Tensor)], max_norm: Option<f64>) -> f64 {
    let grads: Vec<Tensor> = params
        .iter()
        .map(|(_, p)| p.grad())
        .filter(Tensor::defined)
        .collect();
    if grads.is_empty() {
        return 0.0;
    }
    // Each gradient's norm, then the norm of those (torch's way): no squared copy of a gradient.
    let squares: Vec<Tensor> = grads
        .iter()
        .map(|g| g.to_kind(Kind::Float).norm().square())
        .collect();
    let norm = Tensor::stack(&squares, 0)
        .sum(Kind::Float)
        .sqrt()
        .double_value(&[]);
    if let Some(max) = max_norm {
        let scale = max / (norm + 1e-6);
        if scale < 1.0 {
            tch::no_grad(|| {
                for g in &grads {
                    let mut g = g.shallow_clone();
                    let _ = g.g_mul_scalar_(scale);
                }
            });
        }
    }
    norm
}

/// Zeroes every gradient in place (tch cannot unset one, as torch's `set_to_none` does), so the
/// next backward pass starts from zero. After the first step every parameter therefore takes
/// every step; the trainer's step-0 check makes sure the loss reaches them all.
pub fn zero_grad(params: &[(String, Tensor)]) {
    for (_, p) in params {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.detach_().zero_();
        }
    }
}

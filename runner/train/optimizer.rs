//! AdamW (Loshchilov & Hutter) as `torch.optim.AdamW(fused=True)` updates, by libtorch's fused
//! kernel (optimizer.cpp); the state is held here because tch's optimizer cannot save or load
//! its moments, and exact resume needs them. Moments are fp32 whatever the weights' kind;
//! parameters named in `no_decay` get no weight decay. As in torch, a parameter without a
//! gradient skips the step entirely, its step count (and so its bias correction) included.

use std::collections::BTreeMap;
use std::ffi::c_char;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

use crate::plan::training::Optimizer;
use crate::shim::checked;

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
    fn decay(&self, name: &str) -> f64 {
        match self.no_decay.iter().any(|n| name.contains(n.as_str())) {
            true => 0.0,
            false => self.weight_decay,
        }
    }

    /// Whether `name` has taken a step (has moments).
    pub fn has_stepped(&self, name: &str) -> bool {
        self.moments.contains_key(name)
    }

    /// One update of every parameter that has a gradient, at learning rate `lr`:
    /// `p ← p·(1 − lr·wd)`, then `p ← p − lr/(1 − β1ᵗ) · m / (√v/√(1 − β2ᵗ) + ε)`, with `t`
    /// the number of steps in which that parameter had a gradient (torch's per-parameter step).
    /// fp32 weights are updated where they are, by one fused call per device, decay and `t`
    /// (in practice two: with and without decay); others through an fp32 copy, one at a time,
    /// so that at most one such copy exists.
    pub fn step(&mut self, params: &[(String, Tensor)], lr: f64) -> Result<()> {
        self.steps += 1;
        let (betas, eps) = (self.betas, self.eps);
        let mut groups: Vec<Group> = Vec::new();
        tch::no_grad(|| {
            for (name, p) in params {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let g = g.to_kind(Kind::Float).contiguous();
                let decay = self.decay(name);
                let (m, v, t) = self.moments.entry(name.clone()).or_insert_with(|| {
                    let zeros = || Tensor::zeros(g.size(), (Kind::Float, g.device()));
                    (zeros(), zeros(), 0)
                });
                // Moments restored from a checkpoint are read onto the CPU.
                if m.device() != g.device() {
                    (*m, *v) = (m.to_device(g.device()), v.to_device(g.device()));
                }
                *t += 1;
                let step = Step { t: *t, decay };
                if p.kind() == Kind::Float && p.is_contiguous() {
                    group_for(&mut groups, p.device(), step).push(p.shallow_clone(), g, m, v);
                } else {
                    let values = p.to_kind(Kind::Float).contiguous();
                    let mut one = Group::new(p.device(), step);
                    one.push(values.shallow_clone(), g, m, v);
                    one.update(lr, betas, eps)
                        .with_context(|| format!("AdamW on {name}"))?;
                    p.shallow_clone().copy_(&values);
                }
            }
            groups
                .iter()
                .try_for_each(|group| group.update(lr, betas, eps))
        })
    }

    /// The sharded (ZeRO) optimizers' step on a flat fp32 chunk of several weights, at step `t`:
    /// `pieces` are the weights' (name, offset, length) in the chunk, and `[values, g, m, v]`
    /// the chunk's values, gradient and moments, updated in place. Each piece takes
    /// [`AdamW::step`]'s update of its weight, by the same fused calls, one per decay.
    pub fn step_chunk<'a>(
        &self,
        [values, g, m, v]: [&Tensor; 4],
        pieces: impl IntoIterator<Item = (&'a str, i64, i64)>,
        t: u64,
        lr: f64,
    ) -> Result<()> {
        let mut groups: Vec<Group> = Vec::new();
        for (name, at, len) in pieces {
            let piece = |x: &Tensor| x.narrow(0, at, len);
            let step = Step {
                t,
                decay: self.decay(name),
            };
            group_for(&mut groups, values.device(), step).push(
                piece(values),
                piece(g),
                &piece(m),
                &piece(v),
            );
        }
        tch::no_grad(|| {
            groups
                .iter()
                .try_for_each(|group| group.update(lr, self.betas, self.eps))
        })
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

/// Where a weight is in its optimization: its step count after this step, and its decay.
#[derive(Clone, Copy, PartialEq)]
struct Step {
    t: u64,
    decay: f64,
}

/// fp32 weights that one call of libtorch's fused AdamW updates: one device, one [`Step`].
struct Group {
    device: Device,
    step: Step,
    values: Vec<Tensor>,
    grads: Vec<Tensor>,
    exp_avgs: Vec<Tensor>,
    exp_avg_sqs: Vec<Tensor>,
}

extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn runner_fused_adamw(
        params: *const *const C_tensor,
        grads: *const *const C_tensor,
        exp_avgs: *const *const C_tensor,
        exp_avg_sqs: *const *const C_tensor,
        n: i64,
        step: *const C_tensor,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
    ) -> *mut c_char;
    fn runner_total_norm(
        out: *mut *mut C_tensor,
        tensors: *const *const C_tensor,
        n: i64,
    ) -> *mut c_char;
    fn runner_scale_(tensors: *const *const C_tensor, n: i64, factor: f64) -> *mut c_char;
}

/// The group of `groups` for weights on `device` at `step`, added if there is none yet.
fn group_for(groups: &mut Vec<Group>, device: Device, step: Step) -> &mut Group {
    match groups
        .iter()
        .position(|g| g.device == device && g.step == step)
    {
        Some(i) => &mut groups[i],
        None => {
            groups.push(Group::new(device, step));
            groups.last_mut().expect("pushed above")
        }
    }
}

/// What libtorch's list operations take: the tensors' handles.
fn handles(tensors: &[Tensor]) -> Vec<*const C_tensor> {
    tensors.iter().map(Tensor::as_ptr).collect()
}

impl Group {
    fn new(device: Device, step: Step) -> Group {
        Group {
            device,
            step,
            values: Vec::new(),
            grads: Vec::new(),
            exp_avgs: Vec::new(),
            exp_avg_sqs: Vec::new(),
        }
    }

    fn push(&mut self, values: Tensor, g: Tensor, m: &Tensor, v: &Tensor) {
        self.values.push(values);
        self.grads.push(g);
        self.exp_avgs.push(m.shallow_clone());
        self.exp_avg_sqs.push(v.shallow_clone());
    }

    /// torch's `_fused_adamw_` (AdamW with `fused=True`) on every weight of the group.
    fn update(&self, lr: f64, [beta1, beta2]: [f64; 2], eps: f64) -> Result<()> {
        // The kernel reads each weight's step count from an fp32 tensor on the weights' device;
        // filled there, not copied from the host, so that the host does not wait on CUDA.
        let count = Tensor::full([0i64; 0], self.step.t as f64, (Kind::Float, self.device));
        let lists =
            [&self.values, &self.grads, &self.exp_avgs, &self.exp_avg_sqs].map(|l| handles(l));
        let message = unsafe {
            runner_fused_adamw(
                lists[0].as_ptr(),
                lists[1].as_ptr(),
                lists[2].as_ptr(),
                lists[3].as_ptr(),
                self.values.len() as i64,
                count.as_ptr(),
                lr,
                beta1,
                beta2,
                self.step.decay,
                eps,
            )
        };
        checked(message, "AdamW")
    }
}

/// The global L2 norm of all gradients; when above `max_norm`, every gradient is scaled down
/// to it (as `torch.nn.utils.clip_grad_norm_`, by the same `_foreach_` kernels: each
/// gradient's norm, then the norm of those). The norms are fp32 where torch keeps the
/// gradients' kind (bf16 gradients: a bf16 norm). Parameters without a gradient are skipped,
/// and no gradient at all gives 0.
pub fn clip_grad_norm(params: &[(String, Tensor)], max_norm: Option<f64>) -> Result<f64> {
    let grads: Vec<Tensor> = params
        .iter()
        .map(|(_, p)| p.grad())
        .filter(Tensor::defined)
        .collect();
    if grads.is_empty() {
        return Ok(0.0);
    }
    let list = handles(&grads);
    let mut total: *mut C_tensor = std::ptr::null_mut();
    let message = unsafe { runner_total_norm(&mut total, list.as_ptr(), list.len() as i64) };
    checked(message, "gradient norm")?;
    let norm = unsafe { Tensor::from_ptr(total) }.double_value(&[]);
    if let Some(max) = max_norm {
        let scale = max / (norm + 1e-6);
        if scale < 1.0 {
            let message = unsafe { runner_scale_(list.as_ptr(), list.len() as i64, scale) };
            checked(message, "gradient clipping")?;
        }
    }
    Ok(norm)
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

//! The optimizer step over the ranks: averaged gradients, clipping by the global norm, AdamW.
//!
//! - One rank, or ZeRO stage 0 (DDP): every rank holds every moment and takes the whole step
//!   on gradients averaged over the ranks.
//! - ZeRO stage 1: the moments are sharded. Gradients are reduce-scattered bucket by bucket
//!   (`parallel::Buckets`: rank r owns the r-th chunk of each bucket), each rank updates its
//!   chunks (on the host with `offload_optimizer`), and the new weights are all-gathered.
//! - ZeRO stage 2: as stage 1, and the full gradients are dropped once reduced, so between the
//!   reduction and the next backward pass a rank holds only its fp32 shard of them.
//!
//! - ZeRO stage 3: the weights are sharded too (`zero3.rs`).
//!
//! Every rank computes the same global norm (the shards' squares summed over the ranks), so
//! all clip alike. Checkpoints hold the whole moments per parameter, as one rank writes them,
//! whatever the world size: a run resumes on another number of ranks.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use tch::{Device, Kind, Tensor};

use super::optimizer::{clip_grad_norm, zero_grad, AdamW};
use super::parallel::{Buckets, DataParallel};
use super::task::Task;
use super::zero3::{Gatherer, Partitioned};
use crate::distributed::c10d::{drop_grad, gradient, ReduceOp};

pub enum Update {
    Replicated(AdamW),
    Sharded(Sharded),
    Partitioned(Partitioned),
}

/// What the first backward pass left for one trainable parameter: its name, and whether its
/// gradient exists, is finite and is all zero, and whether the weight is all zero.
pub struct FirstGradient {
    pub name: String,
    pub defined: bool,
    pub finite: bool,
    pub zero: bool,
    pub weight_zero: bool,
}

/// ZeRO's shard of the optimizer: this rank's chunk of every bucket.
pub struct Sharded {
    adamw: AdamW,
    names: Vec<String>,
    shapes: Vec<Vec<i64>>,
    buckets: Buckets,
    /// First and second moments of this rank's chunk of each bucket.
    moments: Vec<(Tensor, Tensor)>,
    /// Where the moments and the update live (the host with `offload_optimizer`).
    device: Device,
    /// Where the weights live, and so where the collectives run.
    home: Device,
    drop_gradients: bool,
}

/// What the first backward pass left in `params`' own gradients.
pub fn first_gradients(params: &[(String, Tensor)]) -> Vec<FirstGradient> {
    let is_zero = |t: &Tensor| t.abs().max().double_value(&[]) == 0.0;
    params
        .iter()
        .map(|(name, p)| {
            let g = p.grad();
            let defined = g.defined();
            FirstGradient {
                name: name.clone(),
                defined,
                finite: defined && g.isfinite().all().int64_value(&[]) == 1,
                zero: defined && is_zero(&g),
                weight_zero: is_zero(p),
            }
        })
        .collect()
}

impl Update {
    /// The optimizer for `params` (`task`'s trainable ones, named) under `dp`'s ZeRO stage;
    /// stage 3 shards `task`'s weights, so they must be the same on every rank by now.
    pub fn new(
        adamw: AdamW,
        params: &[(String, Tensor)],
        task: &dyn Task,
        dp: &DataParallel,
    ) -> Result<Update> {
        if dp.size() == 1 || dp.zero_stage == 0 {
            return Ok(Update::Replicated(adamw));
        }
        if dp.shards_weights() {
            return Ok(Update::Partitioned(Partitioned::new(adamw, task, dp)?));
        }
        let tensors: Vec<&Tensor> = params.iter().map(|(_, t)| t).collect();
        let buckets = Buckets::new(&tensors, dp.size());
        let home = tensors.first().map_or(Device::Cpu, |t| t.device());
        let device = match dp.offload_optimizer {
            true => Device::Cpu,
            false => home,
        };
        let chunk = buckets.size / dp.size() as i64;
        let moments = (0..buckets.count)
            .map(|_| {
                let zeros = || Tensor::zeros([chunk], (Kind::Float, device));
                (zeros(), zeros())
            })
            .collect();
        Ok(Update::Sharded(Sharded {
            adamw,
            names: params.iter().map(|(n, _)| n.clone()).collect(),
            shapes: params.iter().map(|(_, t)| t.size()).collect(),
            buckets,
            moments,
            device,
            home,
            drop_gradients: dp.zero_stage >= 2,
        }))
    }

    /// Before a step's micro-batches (ZeRO-3 makes the weights outside blocks whole).
    pub fn begin_step(&self, dp: &DataParallel) -> Result<()> {
        match self {
            Update::Partitioned(p) => p.begin_step(dp),
            _ => Ok(()),
        }
    }

    /// What makes a segment's weights whole for the tape (ZeRO-3 alone shards weights).
    pub fn gatherer<'g>(&'g self, dp: &'g DataParallel) -> Result<Option<Gatherer<'g>>> {
        match self {
            Update::Partitioned(p) => p.gatherer(dp).map(Some),
            _ => Ok(None),
        }
    }

    /// Runs `f` where every weight is whole (evaluation, checkpoints); every rank calls it.
    pub fn whole<T>(&self, dp: &DataParallel, f: impl FnOnce() -> Result<T>) -> Result<T> {
        match self {
            Update::Partitioned(p) => p.whole(dp, f),
            _ => f(),
        }
    }

    /// Makes every weight whole for good: training is over and the result is saved.
    pub fn finish(&self, dp: &DataParallel) -> Result<()> {
        match self {
            Update::Partitioned(p) => p.gather_all(dp),
            _ => Ok(()),
        }
    }

    /// What the first backward pass left for each trainable parameter (this rank's
    /// gradients; under ZeRO-3 every rank's shards).
    pub fn first_gradients(
        &self,
        params: &[(String, Tensor)],
        dp: &DataParallel,
    ) -> Result<Vec<FirstGradient>> {
        if let Update::Partitioned(p) = self {
            return Ok(p
                .first_gradients(dp)?
                .into_iter()
                .map(|(name, finite, zero, weight_zero)| FirstGradient {
                    name,
                    defined: true,
                    finite,
                    zero,
                    weight_zero,
                })
                .collect());
        }
        Ok(first_gradients(params))
    }

    /// Whether every trainable weight is finite (on every rank's shard under ZeRO-3).
    pub fn weights_finite(&self, params: &[(String, Tensor)], dp: &DataParallel) -> Result<bool> {
        if let Update::Partitioned(p) = self {
            return p.weights_finite(dp);
        }
        // One device-to-host read for all of them, not one per parameter.
        let each: Vec<Tensor> = params.iter().map(|(_, p)| p.isfinite().all()).collect();
        Ok(each.is_empty() || Tensor::stack(&each, 0).all().int64_value(&[]) == 1)
    }

    /// One optimizer step at learning rate `lr` on the gradients backward left: averaged over
    /// the ranks, clipped to `max_norm`; gradients are zeroed (or dropped) after. Returns the
    /// global gradient norm before clipping; when it is not finite, nothing is updated.
    pub fn step(
        &mut self,
        params: &[(String, Tensor)],
        lr: f64,
        max_norm: Option<f64>,
        dp: &DataParallel,
    ) -> Result<f64> {
        match self {
            Update::Replicated(adamw) => {
                // One process drops its gradients after each step (below), so a weight this
                // step's loss did not reach has none: once it has stepped, it steps on a zero
                // gradient, as when gradients were zeroed in place. (Ranks keep theirs, and
                // `average_gradients` makes any missing one.)
                let drops = dp.size() == 1;
                for (name, p) in params.iter().filter(|(n, _)| drops && adamw.has_stepped(n)) {
                    let _ = gradient(p).with_context(|| format!("a zero gradient for {name}"))?;
                }
                let tensors: Vec<&Tensor> = params.iter().map(|(_, t)| t).collect();
                dp.average_gradients(&tensors)?;
                let norm = clip_grad_norm(params, max_norm)?;
                // A non-finite gradient is not applied (the caller stops, or skips the step).
                if norm.is_finite() {
                    adamw.step(params, lr)?;
                }
                // In one process dropped, not zeroed (torch's `zero_grad(set_to_none=True)`):
                // the next backward pass makes them anew, so they hold no memory through the
                // next forward pass (measured: 0.23 GB less peak on a 59M-weight VLM trained in
                // full, bench-cpu-coe). Ranks keep them: their large allocations are mapped
                // afresh each time (`memory::map_large_allocations`), which made a 2-step run
                // of a 52M-weight model take 38 s instead of 24 s.
                match drops {
                    true => params.iter().try_for_each(|(_, p)| drop_grad(p))?,
                    false => zero_grad(params),
                }
                Ok(norm)
            }
            Update::Sharded(sharded) => sharded.step(params, lr, max_norm, dp),
            Update::Partitioned(p) => p.step(lr, max_norm, dp),
        }
    }

    /// The whole state, per parameter (`AdamW::state`'s names); under ZeRO gathered from every
    /// rank, so every rank must call it.
    pub fn state(&self, dp: &DataParallel) -> Result<Vec<(String, Tensor)>> {
        match self {
            Update::Replicated(adamw) => Ok(adamw.state()),
            Update::Sharded(sharded) => sharded.state(dp),
            Update::Partitioned(p) => p.state(dp),
        }
    }

    /// Restores a state saved by [`Update::state`] (on any number of ranks) after `steps` steps.
    pub fn load_state(
        &mut self,
        tensors: Vec<(String, Tensor)>,
        steps: u64,
        dp: &DataParallel,
    ) -> Result<()> {
        match self {
            Update::Replicated(adamw) => adamw.load_state(tensors, steps),
            Update::Sharded(sharded) => sharded.load_state(tensors, steps, dp),
            Update::Partitioned(p) => p.load_state(tensors, steps),
        }
    }
}

impl Sharded {
    fn step(
        &mut self,
        params: &[(String, Tensor)],
        lr: f64,
        max_norm: Option<f64>,
        dp: &DataParallel,
    ) -> Result<f64> {
        let group = dp
            .group()
            .ok_or_else(|| anyhow!("ZeRO needs a process group"))?;
        let (rank, ranks) = (dp.rank(), dp.size() as f64);
        let tensors: Vec<&Tensor> = params.iter().map(|(_, t)| t).collect();
        // The averaged gradient of this rank's chunks, bucket by bucket.
        let grads = tensors
            .iter()
            .map(|p| gradient(p))
            .collect::<Result<Vec<_>>>()?;
        let grad_refs: Vec<&Tensor> = grads.iter().collect();
        let mut shards = Vec::with_capacity(self.moments.len());
        for k in 0..self.buckets.count {
            let flat = self.buckets.gather(&grad_refs, self.buckets.bucket(k));
            let chunk = Tensor::zeros(
                [self.buckets.size / dp.size() as i64],
                (Kind::Float, flat.device()),
            );
            group.reduce_scatter(&chunk, &flat, ReduceOp::Sum)?;
            shards.push(chunk / ranks);
        }
        drop(grads);
        match self.drop_gradients {
            true => params.iter().try_for_each(|(_, p)| drop_grad(p))?,
            false => zero_grad(params),
        }
        // The global norm, and clipping as `clip_grad_norm` does.
        let local: f64 = shards
            .iter()
            .map(|s| s.square().sum(Kind::Float).double_value(&[]))
            .sum();
        let norm = dp.sum(&[local])?[0].sqrt();
        if !norm.is_finite() {
            // Every rank has the same norm, so every rank skips the update alike.
            return Ok(norm);
        }
        let scale = max_norm.map_or(1.0, |max| max / (norm + 1e-6));
        self.adamw.steps += 1;
        let t = self.adamw.steps;
        tch::no_grad(|| -> Result<()> {
            for (k, g) in (0..self.buckets.count).zip(shards) {
                let g = match scale < 1.0 {
                    true => g * scale,
                    false => g,
                };
                let range = self.buckets.chunk(k, rank);
                let values = self
                    .buckets
                    .gather(&tensors, range.clone())
                    .to_device(self.device);
                let pieces = (self.buckets.pieces(&range))
                    .into_iter()
                    .map(|(i, _, at, len)| (self.names[i].as_str(), at, len));
                let (m, v) = &self.moments[k as usize];
                let g = g.to_device(self.device);
                self.adamw.step_chunk([&values, &g, m, v], pieces, t, lr)?;
                let updated = values.to_device(self.home);
                let bucket = self.buckets.bucket(k);
                let whole = Tensor::zeros([bucket.end - bucket.start], (Kind::Float, self.home));
                group.all_gather(&whole, &updated)?;
                self.buckets.scatter(&whole, bucket, &tensors);
            }
            Ok(())
        })?;
        Ok(norm)
    }

    fn state(&self, dp: &DataParallel) -> Result<Vec<(String, Tensor)>> {
        let group = dp
            .group()
            .ok_or_else(|| anyhow!("ZeRO needs a process group"))?;
        let first: Vec<Tensor> = self
            .shapes
            .iter()
            .map(|s| Tensor::zeros(s.as_slice(), (Kind::Float, Device::Cpu)))
            .collect();
        let second: Vec<Tensor> = first.iter().map(Tensor::zeros_like).collect();
        for (k, (m, v)) in (0..self.buckets.count).zip(&self.moments) {
            let bucket = self.buckets.bucket(k);
            for (moment, whole) in [(m, &first), (v, &second)] {
                let gathered = Tensor::zeros([bucket.end - bucket.start], (Kind::Float, self.home));
                group.all_gather(&gathered, &moment.to_device(self.home))?;
                let targets: Vec<&Tensor> = whole.iter().collect();
                self.buckets.scatter(&gathered, bucket.clone(), &targets);
            }
        }
        let steps = self.adamw.steps as i64;
        Ok(self
            .names
            .iter()
            .zip(first.into_iter().zip(second))
            .flat_map(|(name, (m, v))| {
                [
                    (format!("exp_avg.{name}"), m),
                    (format!("exp_avg_sq.{name}"), v),
                    (format!("step.{name}"), Tensor::from(steps)),
                ]
            })
            .collect())
    }

    fn load_state(
        &mut self,
        tensors: Vec<(String, Tensor)>,
        steps: u64,
        dp: &DataParallel,
    ) -> Result<()> {
        let mut saved: BTreeMap<String, Tensor> = tensors.into_iter().collect();
        let mut take = |prefix: &str| -> Result<Vec<Tensor>> {
            self.names
                .iter()
                .map(|name| {
                    saved.remove(&format!("{prefix}{name}")).ok_or_else(|| {
                        anyhow!("the checkpoint's optimizer state has no `{prefix}{name}`\n  hint: it was written by another plan; use another --out")
                    })
                })
                .collect()
        };
        let (first, second) = (take("exp_avg.")?, take("exp_avg_sq.")?);
        let (first, second): (Vec<&Tensor>, Vec<&Tensor>) =
            (first.iter().collect(), second.iter().collect());
        for (k, (m, v)) in (0..self.buckets.count).zip(self.moments.iter_mut()) {
            let range = self.buckets.chunk(k, dp.rank());
            *m = self
                .buckets
                .gather(&first, range.clone())
                .to_device(self.device);
            *v = self.buckets.gather(&second, range).to_device(self.device);
        }
        self.adamw.steps = steps;
        Ok(())
    }
}

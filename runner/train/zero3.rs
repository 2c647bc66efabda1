//! ZeRO stage 3: the weights are sharded too. Every weight of a model that trains (its frozen
//! ones included) is laid flat, padded to a multiple of the ranks and cut in equal pieces;
//! rank r keeps the r-th (its shard), and between uses the weight itself holds no values
//! (`set_` to an empty tensor, which every handle a model holds sees).
//!
//! - A block's own weights (`ParamStore::block_owned`) are made whole by all-gathering their
//!   shards around the block's checkpoint segment, for the forward pass and again for the
//!   recomputation, and freed after; once the block's backward pass is done their gradients are
//!   reduce-scattered into fp32 shard gradients and dropped (`Tape`'s `Gather`).
//! - The other weights (embeddings, the head, weights several blocks share) are gathered at a
//!   step's start and sharded at its end, as FSDP keeps its root unit whole.
//! - Without gradient checkpointing a block's graph keeps its weights until backward, so they
//!   stay whole until the step's end.
//! - The optimizer updates each rank's shards (moments and update on the host with
//!   `offload_optimizer`); with `offload_params` the shards themselves live on the host.
//! - Evaluation, checkpoints and the saved result see the whole model ([`Partitioned::whole`]).
//!
//! Weights of a model that does not train (a frozen teacher) are not sharded.

use std::cell::Cell;
use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use tch::{Device, Kind, Tensor};

use super::optimizer::{adam_update, AdamW};
use super::parallel::{ceil_div, DataParallel};
use super::task::Task;
use crate::distributed::c10d::{drop_grad, identity, ProcessGroup, ReduceOp};
use crate::models::Gather;

/// One weight's shard and its optimizer state.
struct Weight {
    /// The name checkpoints give it (store prefix and HF name).
    name: String,
    /// The weight itself: whole while gathered, empty otherwise.
    handle: Tensor,
    shape: Vec<i64>,
    numel: i64,
    /// This rank's piece of the flat, padded weight, in the weight's kind.
    shard: Tensor,
    /// Gathered around its block's segment (else for a whole step).
    in_block: bool,
    /// Trainable weights: the sum over the ranks of the shard's gradient (fp32), and the
    /// first and second moments.
    trained: Option<Trained>,
    whole: Cell<bool>,
}

struct Trained {
    grad: Tensor,
    moments: (Tensor, Tensor),
}

pub struct Partitioned {
    adamw: AdamW,
    weights: Vec<Weight>,
    /// Weight index by the TensorImpl its handles share.
    by_identity: HashMap<usize, usize>,
    /// Where the weights are used, and so where the collectives run.
    home: Device,
    /// Where the moments and the update live (the host with `offload_optimizer`).
    optimizer_device: Device,
    ranks: i64,
    rank: i64,
}

impl Partitioned {
    /// Shards every weight of `task`'s models that train, and frees the whole weights.
    pub fn new(adamw: AdamW, task: &dyn Task, dp: &DataParallel) -> Result<Partitioned> {
        let home = task.device();
        let host = |offload: bool| match offload {
            true => Device::Cpu,
            false => home,
        };
        let shard_device = host(dp.offload_params);
        let optimizer_device = host(dp.offload_optimizer);
        let (ranks, rank) = (dp.size() as i64, dp.rank() as i64);
        let mut weights = Vec::new();
        for (prefix, store) in task.stores() {
            if store.trainable().is_empty() {
                continue;
            }
            if store.has_four_bit() {
                bail!("ZeRO-3 cannot shard QLoRA's 4-bit weights\n  hint: use training.distributed.zero_stage: 2 with training.adapter.quantize");
            }
            let owned = store.block_owned();
            for (name, t, _) in store.iter() {
                let numel = t.numel() as i64;
                let chunk = ceil_div(numel, ranks);
                let flat = t.detach().reshape([-1]);
                let shard = Tensor::zeros([chunk], (t.kind(), shard_device));
                let (from, len) = (rank * chunk, (numel - rank * chunk).clamp(0, chunk));
                if len > 0 {
                    tch::no_grad(|| shard.narrow(0, 0, len).copy_(&flat.narrow(0, from, len)));
                }
                let trained = t.requires_grad().then(|| {
                    let zeros = |d| Tensor::zeros([chunk], (Kind::Float, d));
                    Trained {
                        grad: zeros(home),
                        moments: (zeros(optimizer_device), zeros(optimizer_device)),
                    }
                });
                weights.push(Weight {
                    name: format!("{prefix}{name}"),
                    handle: t.shallow_clone(),
                    shape: t.size(),
                    numel,
                    shard,
                    in_block: owned.contains(name),
                    trained,
                    whole: Cell::new(true),
                });
            }
        }
        let by_identity = (weights.iter().enumerate())
            .map(|(i, w)| (identity(&w.handle), i))
            .collect();
        let partitioned = Partitioned {
            adamw,
            weights,
            by_identity,
            home,
            optimizer_device,
            ranks,
            rank,
        };
        for w in &partitioned.weights {
            partitioned.release(w)?;
        }
        Ok(partitioned)
    }

    fn chunk(&self, w: &Weight) -> i64 {
        ceil_div(w.numel, self.ranks)
    }

    /// Makes `w` whole from every rank's shard (a no-op when it is).
    fn gather(&self, w: &Weight, group: &ProcessGroup) -> Result<()> {
        if w.whole.get() {
            return Ok(());
        }
        let kind = w.shard.kind();
        let whole = Tensor::empty([self.chunk(w) * self.ranks], (kind, self.home));
        // As bytes, so that every kind travels alike (Gloo lacks some).
        let shard = w.shard.to_device(self.home);
        group.all_gather(
            &whole.view_dtype(Kind::Uint8),
            &shard.view_dtype(Kind::Uint8),
        )?;
        let mut handle = w.handle.shallow_clone();
        let value = whole.narrow(0, 0, w.numel).view(w.shape.as_slice());
        let _ = tch::no_grad(|| handle.f_set_source_tensor_(&value))?;
        w.whole.set(true);
        Ok(())
    }

    /// Adds `w`'s gradient, summed over the ranks, to its shard's, and drops it.
    fn reduce(&self, w: &Weight, group: &ProcessGroup) -> Result<()> {
        let Some(trained) = &w.trained else {
            return Ok(());
        };
        if !w.whole.get() {
            return Ok(());
        }
        // A weight the micro-batches did not reach still takes part (as zeros): every rank
        // calls the same collectives.
        let flat = Tensor::zeros([self.chunk(w) * self.ranks], (Kind::Float, self.home));
        let g = w.handle.grad();
        if g.defined() {
            tch::no_grad(|| flat.narrow(0, 0, w.numel).copy_(&g.reshape([-1])));
        }
        let mine = Tensor::zeros([self.chunk(w)], (Kind::Float, self.home));
        group.reduce_scatter(&mine, &flat, ReduceOp::Sum)?;
        let mut sum = trained.grad.shallow_clone();
        tch::no_grad(|| {
            let _ = sum.g_add_(&mine);
        });
        drop_grad(&w.handle)
    }

    /// Frees `w`'s whole copy.
    fn release(&self, w: &Weight) -> Result<()> {
        if w.whole.get() {
            let mut handle = w.handle.shallow_clone();
            let _ = tch::no_grad(|| handle.f_set_())?;
            w.whole.set(false);
        }
        Ok(())
    }

    fn group(dp: &DataParallel) -> Result<&ProcessGroup> {
        dp.group()
            .ok_or_else(|| anyhow!("ZeRO-3 needs a process group"))
    }

    /// Before a step's first micro-batch: the weights outside blocks become whole.
    pub fn begin_step(&self, dp: &DataParallel) -> Result<()> {
        let group = Self::group(dp)?;
        (self.weights.iter())
            .filter(|w| !w.in_block)
            .try_for_each(|w| self.gather(w, group))
    }

    /// The tape's gatherer for this step's micro-batches.
    pub fn gatherer<'g>(&'g self, dp: &'g DataParallel) -> Result<Gatherer<'g>> {
        Ok(Gatherer {
            partitioned: self,
            group: Self::group(dp)?,
        })
    }

    /// Runs `f` on the whole model (evaluation, checkpoints), sharding it again after.
    pub fn whole<T>(&self, dp: &DataParallel, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let group = Self::group(dp)?;
        let gathered: Vec<&Weight> = self.weights.iter().filter(|w| !w.whole.get()).collect();
        gathered.iter().try_for_each(|w| self.gather(w, group))?;
        let result = f();
        gathered.iter().try_for_each(|w| self.release(w))?;
        result
    }

    /// Makes every weight whole for good (the end of training: the result is saved).
    pub fn gather_all(&self, dp: &DataParallel) -> Result<()> {
        let group = Self::group(dp)?;
        self.weights.iter().try_for_each(|w| self.gather(w, group))
    }

    /// The gradients of whatever is still whole reduced to the shards, and the whole copies
    /// freed (the end of a step's backward passes).
    fn settle(&self, group: &ProcessGroup) -> Result<()> {
        for w in &self.weights {
            self.reduce(w, group)?;
            self.release(w)?;
        }
        Ok(())
    }

    /// What the first backward pass left, per trainable weight: (name, every value finite,
    /// gradient all zero, weight all zero), over every rank's shard.
    pub fn first_gradients(&self, dp: &DataParallel) -> Result<Vec<(String, bool, bool, bool)>> {
        self.settle(Self::group(dp)?)?;
        let trained: Vec<(&Weight, &Trained)> = (self.weights.iter())
            .filter_map(|w| w.trained.as_ref().map(|t| (w, t)))
            .collect();
        let mut values = Vec::with_capacity(3 * trained.len());
        for (w, t) in &trained {
            let not_finite = t.grad.isfinite().logical_not().any().int64_value(&[]) as f64;
            let largest = |x: &Tensor| x.abs().nan_to_num(0.0, None, None).max().double_value(&[]);
            values.extend([not_finite, largest(&t.grad), largest(&w.shard)]);
        }
        let values = dp.max(&values)?;
        Ok(trained
            .iter()
            .zip(values.chunks(3))
            .map(|((w, _), v)| (w.name.clone(), v[0] == 0.0, v[1] == 0.0, v[2] == 0.0))
            .collect())
    }

    /// Whether every rank's shards of the trainable weights are finite.
    pub fn weights_finite(&self, dp: &DataParallel) -> Result<bool> {
        let bad = (self.weights.iter())
            .filter(|w| w.trained.is_some())
            .any(|w| w.shard.isfinite().logical_not().any().int64_value(&[]) == 1);
        Ok(dp.max(&[f64::from(u8::from(bad))])?[0] == 0.0)
    }

    /// One optimizer step: the remaining gradients reduced, the global norm (every rank the
    /// same), clipping, and AdamW on this rank's shards. Returns the norm before clipping;
    /// when it is not finite, nothing is updated.
    pub fn step(&mut self, lr: f64, max_norm: Option<f64>, dp: &DataParallel) -> Result<f64> {
        self.settle(Self::group(dp)?)?;
        let ranks = self.ranks as f64;
        let local: f64 = (self.weights.iter())
            .filter_map(|w| w.trained.as_ref())
            .map(|t| {
                (&t.grad / ranks)
                    .square()
                    .sum(Kind::Float)
                    .double_value(&[])
            })
            .sum();
        let norm = dp.sum(&[local])?[0].sqrt();
        let finite = norm.is_finite();
        let scale = max_norm.map_or(1.0, |max| (max / (norm + 1e-6)).min(1.0)) / ranks;
        if finite {
            self.adamw.steps += 1;
        }
        let t = self.adamw.steps;
        let (betas, eps) = self.adamw.betas_eps();
        for w in &mut self.weights {
            let Some(trained) = &mut w.trained else {
                continue;
            };
            if finite {
                let decay = self.adamw.decay(&w.name);
                let device = self.optimizer_device;
                tch::no_grad(|| {
                    let g = (&trained.grad * scale).to_device(device);
                    let master = w.shard.to_device(device).to_kind(Kind::Float);
                    let decayed = master * (1.0 - lr * decay);
                    let (m, v) = &mut trained.moments;
                    let updated = adam_update(decayed, &g, (m, v), t, lr, betas, eps);
                    w.shard.copy_(&updated);
                });
            }
            let _ = trained.grad.zero_();
        }
        Ok(norm)
    }

    /// Whole moments per weight (`AdamW::state`'s names), gathered from every rank.
    pub fn state(&self, dp: &DataParallel) -> Result<Vec<(String, Tensor)>> {
        let group = Self::group(dp)?;
        let steps = self.adamw.steps as i64;
        let mut out = Vec::new();
        for w in &self.weights {
            let Some(trained) = &w.trained else {
                continue;
            };
            let (m, v) = &trained.moments;
            for (prefix, moment) in [("exp_avg.", m), ("exp_avg_sq.", v)] {
                let whole = Tensor::zeros([self.chunk(w) * self.ranks], (Kind::Float, self.home));
                group.all_gather(&whole, &moment.to_device(self.home))?;
                let value = whole.narrow(0, 0, w.numel).view(w.shape.as_slice());
                out.push((format!("{prefix}{}", w.name), value.to_device(Device::Cpu)));
            }
            out.push((format!("step.{}", w.name), Tensor::from(steps)));
        }
        Ok(out)
    }

    /// Restores moments saved by [`Partitioned::state`] (on any number of ranks).
    pub fn load_state(&mut self, saved: Vec<(String, Tensor)>, steps: u64) -> Result<()> {
        let mut saved: HashMap<String, Tensor> = saved.into_iter().collect();
        let (ranks, rank) = (self.ranks, self.rank);
        for w in &mut self.weights {
            let Some(trained) = &mut w.trained else {
                continue;
            };
            let chunk = ceil_div(w.numel, ranks);
            for (prefix, moment) in [
                ("exp_avg.", &mut trained.moments.0),
                ("exp_avg_sq.", &mut trained.moments.1),
            ] {
                let key = format!("{prefix}{}", w.name);
                let whole = saved.remove(&key).ok_or_else(|| {
                    anyhow!("the checkpoint's optimizer state has no `{key}`\n  hint: it was written by another plan; use another --out")
                })?;
                let flat = whole.reshape([-1]).to_kind(Kind::Float);
                let (from, len) = (rank * chunk, (w.numel - rank * chunk).clamp(0, chunk));
                let mine = Tensor::zeros([chunk], (Kind::Float, Device::Cpu));
                if len > 0 {
                    tch::no_grad(|| mine.narrow(0, 0, len).copy_(&flat.narrow(0, from, len)));
                }
                *moment = mine.to_device(self.optimizer_device);
            }
        }
        self.adamw.steps = steps;
        Ok(())
    }
}

/// The tape's view of the shards during one step's micro-batches.
pub struct Gatherer<'g> {
    partitioned: &'g Partitioned,
    group: &'g ProcessGroup,
}

impl Gatherer<'_> {
    /// The block weights among `weights` (others are left alone: whole for the step, or not
    /// sharded at all).
    fn block_weights<'w>(&'w self, weights: &'w [Tensor]) -> impl Iterator<Item = &'w Weight> {
        let p = self.partitioned;
        (weights.iter())
            .filter_map(|t| p.by_identity.get(&identity(t)))
            .map(|&i| &p.weights[i])
            .filter(|w| w.in_block)
    }
}

impl Gather for Gatherer<'_> {
    fn gather(&self, weights: &[Tensor]) -> Result<()> {
        (self.block_weights(weights)).try_for_each(|w| self.partitioned.gather(w, self.group))
    }

    fn reduce(&self, weights: &[Tensor]) -> Result<()> {
        (self.block_weights(weights)).try_for_each(|w| self.partitioned.reduce(w, self.group))
    }

    fn release(&self, weights: &[Tensor]) -> Result<()> {
        (self.block_weights(weights)).try_for_each(|w| self.partitioned.release(w))
    }
}

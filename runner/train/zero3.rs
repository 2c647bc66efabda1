//! ZeRO stage 3: the weights are sharded too. The weights of a model that trains (its frozen
//! ones included) are laid end to end in flat units, one per layer, kind and trainability (as
//! FSDP's flat parameters), padded to a multiple of the ranks and cut in equal pieces; rank r
//! keeps the r-th (its shard), and between uses the weights themselves hold no values (`set_`
//! to an empty tensor, which every handle a model holds sees). One unit, one collective.
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
use std::collections::{BTreeMap, HashMap};

use anyhow::{anyhow, bail, Result};
use tch::{Device, Kind, Tensor};

use super::optimizer::AdamW;
use super::parallel::{Buckets, DataParallel};
use super::task::Task;
use crate::distributed::c10d::{drop_grad, gradient, identity, ProcessGroup, ReduceOp};
use crate::models::Gather;

/// Weights sharded together: one layer's (or the weights outside layers) of one kind, trainable
/// or frozen.
struct Unit {
    /// The names checkpoints give them (store prefix and HF name).
    names: Vec<String>,
    /// The weights themselves: whole while gathered, empty otherwise.
    handles: Vec<Tensor>,
    shapes: Vec<Vec<i64>>,
    /// The weights end to end, padded: one bucket, of which rank r owns the r-th chunk.
    layout: Buckets,
    /// This rank's chunk, in the weights' kind.
    shard: Tensor,
    /// Gathered around its layer's segment (else for a whole step).
    in_block: bool,
    /// Trainable units: the sum over the ranks of the chunk's gradient (fp32), and the first
    /// and second moments.
    trained: Option<Trained>,
    whole: Cell<bool>,
}

/// What weights share a unit: their layer (none: outside layers), kind and trainability.
type UnitKey = (Option<usize>, String, bool);

struct Trained {
    grad: Tensor,
    moments: (Tensor, Tensor),
}

impl Unit {
    fn chunk(&self, ranks: i64) -> i64 {
        self.layout.size / ranks
    }

    /// Where each weight starts in the unit.
    fn offsets(&self) -> Vec<i64> {
        let mut offsets = vec![0; self.handles.len()];
        for (i, _, at, _) in self.layout.pieces(&self.layout.bucket(0)) {
            offsets[i] = at;
        }
        offsets
    }
}

pub struct Partitioned {
    adamw: AdamW,
    units: Vec<Unit>,
    /// Unit index by the TensorImpl a weight's handles share.
    by_identity: HashMap<usize, usize>,
    /// Where the weights are used, and so where the collectives run.
    home: Device,
    /// Where the moments and the update live (the host with `offload_optimizer`).
    optimizer_device: Device,
    ranks: i64,
    rank: usize,
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
        let (ranks, rank) = (dp.size(), dp.rank());
        let mut units = Vec::new();
        for (prefix, store) in task.stores() {
            if store.trainable().is_empty() {
                continue;
            }
            if store.has_four_bit() {
                bail!("ZeRO-3 cannot shard QLoRA's 4-bit weights\n  hint: use training.distributed.zero_stage: 2 with training.adapter.quantize");
            }
            let owned = store.block_owned();
            let mut groups: BTreeMap<UnitKey, Vec<(String, Tensor)>> = BTreeMap::new();
            for (name, t, _) in store.iter() {
                let key = (
                    owned.get(name).copied(),
                    format!("{:?}", t.kind()),
                    t.requires_grad(),
                );
                let weight = (format!("{prefix}{name}"), t.shallow_clone());
                groups.entry(key).or_default().push(weight);
            }
            for ((block, _, trains), weights) in groups {
                let handles: Vec<Tensor> = weights.iter().map(|(_, t)| t.shallow_clone()).collect();
                let refs: Vec<&Tensor> = handles.iter().collect();
                let layout = Buckets::single(&refs, ranks);
                // Through fp32, which holds every value of the narrower kinds exactly.
                let shard = (layout.gather(&refs, layout.chunk(0, rank)))
                    .to_kind(handles[0].kind())
                    .to_device(shard_device);
                let chunk = layout.size / ranks as i64;
                let trained = trains.then(|| {
                    let zeros = |d| Tensor::zeros([chunk], (Kind::Float, d));
                    Trained {
                        grad: zeros(home),
                        moments: (zeros(optimizer_device), zeros(optimizer_device)),
                    }
                });
                units.push(Unit {
                    names: weights.into_iter().map(|(n, _)| n).collect(),
                    shapes: handles.iter().map(Tensor::size).collect(),
                    handles,
                    layout,
                    shard,
                    in_block: block.is_some(),
                    trained,
                    whole: Cell::new(true),
                });
            }
        }
        let by_identity = (units.iter().enumerate())
            .flat_map(|(i, u)| u.handles.iter().map(move |h| (identity(h), i)))
            .collect();
        let partitioned = Partitioned {
            adamw,
            units,
            by_identity,
            home,
            optimizer_device,
            ranks: ranks as i64,
            rank,
        };
        for unit in &partitioned.units {
            partitioned.release(unit)?;
        }
        Ok(partitioned)
    }

    /// Makes `unit`'s weights whole from every rank's chunk (a no-op when they are).
    fn gather(&self, unit: &Unit, group: &ProcessGroup) -> Result<()> {
        if unit.whole.get() {
            return Ok(());
        }
        let whole = Tensor::empty([unit.layout.size], (unit.shard.kind(), self.home));
        // As bytes, so that every kind travels alike (Gloo lacks some).
        let shard = unit.shard.to_device(self.home);
        group.all_gather(
            &whole.view_dtype(Kind::Uint8),
            &shard.view_dtype(Kind::Uint8),
        )?;
        let offsets = unit.offsets();
        for ((handle, shape), at) in unit.handles.iter().zip(&unit.shapes).zip(offsets) {
            let numel: i64 = shape.iter().product();
            let value = whole.narrow(0, at, numel).view(shape.as_slice());
            let mut handle = handle.shallow_clone();
            let _ = tch::no_grad(|| handle.f_set_source_tensor_(&value))?;
        }
        unit.whole.set(true);
        Ok(())
    }

    /// Adds `unit`'s gradients, summed over the ranks, to its chunk's, and drops them.
    fn reduce(&self, unit: &Unit, group: &ProcessGroup) -> Result<()> {
        let Some(trained) = &unit.trained else {
            return Ok(());
        };
        if !unit.whole.get() {
            return Ok(());
        }
        // A weight the micro-batches did not reach takes part as zeros: every rank calls the
        // same collectives.
        let grads = (unit.handles.iter())
            .map(gradient)
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Tensor> = grads.iter().collect();
        let flat = unit.layout.gather(&refs, unit.layout.bucket(0));
        drop(grads);
        let mine = Tensor::zeros([unit.chunk(self.ranks)], (Kind::Float, self.home));
        group.reduce_scatter(&mine, &flat, ReduceOp::Sum)?;
        let mut sum = trained.grad.shallow_clone();
        let _ = tch::no_grad(|| sum.g_add_(&mine));
        unit.handles.iter().try_for_each(drop_grad)
    }

    /// Frees `unit`'s whole weights.
    fn release(&self, unit: &Unit) -> Result<()> {
        if unit.whole.get() {
            for handle in &unit.handles {
                let mut handle = handle.shallow_clone();
                let _ = tch::no_grad(|| handle.f_set_())?;
            }
            unit.whole.set(false);
        }
        Ok(())
    }

    fn group(dp: &DataParallel) -> Result<&ProcessGroup> {
        dp.group()
            .ok_or_else(|| anyhow!("ZeRO-3 needs a process group"))
    }

    /// Before a step's first micro-batch: the weights outside layers become whole.
    pub fn begin_step(&self, dp: &DataParallel) -> Result<()> {
        let group = Self::group(dp)?;
        (self.units.iter())
            .filter(|u| !u.in_block)
            .try_for_each(|u| self.gather(u, group))
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
        let gathered: Vec<&Unit> = self.units.iter().filter(|u| !u.whole.get()).collect();
        gathered.iter().try_for_each(|u| self.gather(u, group))?;
        let result = f();
        gathered.iter().try_for_each(|u| self.release(u))?;
        result
    }

    /// Makes every weight whole for good (the end of training: the result is saved).
    pub fn gather_all(&self, dp: &DataParallel) -> Result<()> {
        let group = Self::group(dp)?;
        self.units.iter().try_for_each(|u| self.gather(u, group))
    }

    /// The gradients of whatever is still whole reduced to the chunks, and the whole weights
    /// freed (the end of a step's backward passes).
    fn settle(&self, group: &ProcessGroup) -> Result<()> {
        for unit in &self.units {
            self.reduce(unit, group)?;
            self.release(unit)?;
        }
        Ok(())
    }

    /// What the first backward pass left, per trainable weight: (name, every value finite,
    /// gradient all zero, weight all zero), over every rank's chunk.
    pub fn first_gradients(&self, dp: &DataParallel) -> Result<Vec<(String, bool, bool, bool)>> {
        self.settle(Self::group(dp)?)?;
        let largest = |x: &Tensor| x.abs().nan_to_num(0.0, None, None).max().double_value(&[]);
        let (mut names, mut values) = (Vec::new(), Vec::new());
        for unit in &self.units {
            let Some(trained) = &unit.trained else {
                continue;
            };
            // A weight has one piece in this rank's chunk, or none (then zeros).
            let mut facts = vec![[0.0; 3]; unit.names.len()];
            for (i, _, at, len) in unit.layout.pieces(&unit.layout.chunk(0, self.rank)) {
                let (g, w) = (
                    trained.grad.narrow(0, at, len),
                    unit.shard.narrow(0, at, len),
                );
                let not_finite = g.isfinite().logical_not().any().int64_value(&[]) as f64;
                facts[i] = [not_finite, largest(&g), largest(&w)];
            }
            names.extend(unit.names.iter().cloned());
            values.extend(facts.into_iter().flatten());
        }
        let values = dp.max(&values)?;
        Ok(names
            .into_iter()
            .zip(values.chunks(3))
            .map(|(name, v)| (name, v[0] == 0.0, v[1] == 0.0, v[2] == 0.0))
            .collect())
    }

    /// Whether every rank's chunks of the trainable weights are finite.
    pub fn weights_finite(&self, dp: &DataParallel) -> Result<bool> {
        // One device-to-host read for all of them, not one per unit.
        let each: Vec<Tensor> = (self.units.iter())
            .filter(|u| u.trained.is_some())
            .map(|u| u.shard.isfinite().all())
            .collect();
        let finite = each.is_empty() || Tensor::stack(&each, 0).all().int64_value(&[]) == 1;
        Ok(dp.max(&[f64::from(u8::from(!finite))])?[0] == 0.0)
    }

    /// One optimizer step: the remaining gradients reduced, the global norm (every rank the
    /// same), clipping, and AdamW on this rank's chunks. Returns the norm before clipping;
    /// when it is not finite, nothing is updated.
    pub fn step(&mut self, lr: f64, max_norm: Option<f64>, dp: &DataParallel) -> Result<f64> {
        self.settle(Self::group(dp)?)?;
        let ranks = self.ranks as f64;
        // One device-to-host read for all units, not one per unit.
        let squares: Vec<Tensor> = (self.units.iter())
            .filter_map(|u| u.trained.as_ref())
            .map(|t| (&t.grad / ranks).square().sum(Kind::Float))
            .collect();
        let local = match squares.is_empty() {
            true => 0.0,
            false => (Tensor::stack(&squares, 0).to_kind(Kind::Double))
                .sum(Kind::Double)
                .double_value(&[]),
        };
        let norm = dp.sum(&[local])?[0].sqrt();
        let finite = norm.is_finite();
        // The mean over the ranks, clipped as `clip_grad_norm` clips.
        let scale = max_norm.map_or(1.0, |max| (max / (norm + 1e-6)).min(1.0)) / ranks;
        if finite {
            self.adamw.steps += 1;
        }
        let t = self.adamw.steps;
        for unit in &mut self.units {
            let Some(trained) = &mut unit.trained else {
                continue;
            };
            if finite {
                let device = self.optimizer_device;
                let values = unit.shard.to_device(device).to_kind(Kind::Float);
                let pieces = (unit.layout.pieces(&unit.layout.chunk(0, self.rank)))
                    .into_iter()
                    .map(|(i, _, at, len)| (unit.names[i].as_str(), at, len));
                let g = tch::no_grad(|| (&trained.grad * scale).to_device(device));
                let (m, v) = &trained.moments;
                self.adamw.step_chunk([&values, &g, m, v], pieces, t, lr)?;
                tch::no_grad(|| unit.shard.copy_(&values));
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
        for unit in &self.units {
            let Some(trained) = &unit.trained else {
                continue;
            };
            let (m, v) = &trained.moments;
            let offsets = unit.offsets();
            for (prefix, moment) in [("exp_avg.", m), ("exp_avg_sq.", v)] {
                let whole = Tensor::zeros([unit.layout.size], (Kind::Float, self.home));
                group.all_gather(&whole, &moment.to_device(self.home))?;
                for ((name, shape), &at) in unit.names.iter().zip(&unit.shapes).zip(&offsets) {
                    let numel: i64 = shape.iter().product();
                    let value = whole.narrow(0, at, numel).view(shape.as_slice());
                    out.push((format!("{prefix}{name}"), value.to_device(Device::Cpu)));
                }
            }
            for name in &unit.names {
                out.push((format!("step.{name}"), Tensor::from(steps)));
            }
        }
        Ok(out)
    }

    /// Restores moments saved by [`Partitioned::state`] (on any number of ranks).
    pub fn load_state(&mut self, saved: Vec<(String, Tensor)>, steps: u64) -> Result<()> {
        let mut saved: HashMap<String, Tensor> = saved.into_iter().collect();
        for unit in &mut self.units {
            let Some(trained) = &mut unit.trained else {
                continue;
            };
            for (prefix, moment) in [
                ("exp_avg.", &mut trained.moments.0),
                ("exp_avg_sq.", &mut trained.moments.1),
            ] {
                let whole = (unit.names.iter())
                    .map(|name| {
                        let key = format!("{prefix}{name}");
                        saved.remove(&key).ok_or_else(|| {
                            anyhow!("the checkpoint's optimizer state has no `{key}`\n  hint: it was written by another plan; use another --out")
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let refs: Vec<&Tensor> = whole.iter().collect();
                let mine = unit.layout.gather(&refs, unit.layout.chunk(0, self.rank));
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
    /// The layer units `weights` belong to (each once; weights whole for the step, or not
    /// sharded at all, are left alone).
    fn layer_units(&self, weights: &[Tensor]) -> Vec<&Unit> {
        let p = self.partitioned;
        let mut units: Vec<usize> = (weights.iter())
            .filter_map(|t| p.by_identity.get(&identity(t)).copied())
            .filter(|&i| p.units[i].in_block)
            .collect();
        units.sort_unstable();
        units.dedup();
        units.into_iter().map(|i| &p.units[i]).collect()
    }
}

impl Gather for Gatherer<'_> {
    fn gather(&self, weights: &[Tensor]) -> Result<()> {
        (self.layer_units(weights).into_iter())
            .try_for_each(|u| self.partitioned.gather(u, self.group))
    }

    fn reduce(&self, weights: &[Tensor]) -> Result<()> {
        (self.layer_units(weights).into_iter())
            .try_for_each(|u| self.partitioned.reduce(u, self.group))
    }

    fn release(&self, weights: &[Tensor]) -> Result<()> {
        (self.layer_units(weights).into_iter()).try_for_each(|u| self.partitioned.release(u))
    }
}

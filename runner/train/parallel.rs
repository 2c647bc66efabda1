//! Where the ranks meet the trainer. With one rank every call here is free and changes
//! nothing; with several (DDP, `zero_stage: 0`):
//!
//! - the trainable weights start equal on every rank (broadcast from rank 0);
//! - a step's global batch, `accumulation × ranks` micro-batches of the plan's stream, is split
//!   without overlap: rank r trains micro-batches `r·accumulation .. (r+1)·accumulation` of each
//!   step, with the dropout seeds those micro-batches have in a one-rank run;
//! - gradients are averaged over the ranks in flat fp32 buckets before clipping, so the step is
//!   the one a single rank with `ranks ×` the accumulation takes;
//! - rank 0 alone evaluates and writes; the others learn its decisions (stop, save) from it.
//!
//! ZeRO's sharded optimizer (stages 1 and 2) is `zero.rs`; both share the bucket layout here.

use std::ops::Range;
use std::time::Duration;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::distributed::c10d::{gradient, ProcessGroup, ReduceOp};
use crate::distributed::world::World;
use crate::plan::training::Distributed;

/// How long a rank waits for the others at the rendezvous and in any collective (rank 0's
/// evaluation included) before it gives up: `RUNNER_DIST_TIMEOUT_S`, else torch's 30 minutes.
fn timeout() -> Duration {
    let seconds = std::env::var("RUNNER_DIST_TIMEOUT_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1800);
    Duration::from_secs(seconds)
}

/// This process's rank and, with more than one, the process group.
pub struct DataParallel {
    pub world: World,
    group: Option<ProcessGroup>,
    /// The rank's device: collectives run on tensors there (NCCL takes only CUDA tensors).
    device: Device,
    /// ZeRO stage (0: plain data parallelism).
    pub zero_stage: u8,
    /// Keep the optimizer's moments and its update in host memory.
    pub offload_optimizer: bool,
    /// Keep ZeRO-3's weight shards in host memory.
    pub offload_params: bool,
}

impl DataParallel {
    /// One rank, no group.
    pub fn single() -> DataParallel {
        DataParallel {
            world: World::single(),
            group: None,
            device: Device::Cpu,
            zero_stage: 0,
            offload_optimizer: false,
            offload_params: false,
        }
    }

    /// Joins `world` on `device` for a plan whose `training.distributed` is `plan`: the world
    /// size must be the plan's device count, so the global batch is what the plan says.
    pub fn join(world: World, device: Device, plan: &Distributed) -> Result<DataParallel> {
        let devices = plan.devices as usize;
        if world.size != devices {
            let launch = match devices {
                1 => "run it as one process, or set training.distributed.devices to the number of ranks".to_string(),
                n => format!("launch {n} ranks: `runner run RECIPE --nproc {n}`, `torchrun --nproc-per-node {n} --no-python runner run RECIPE`, or `srun -n {n} runner run RECIPE`; or set training.distributed.devices={}", world.size),
            };
            bail!(
                "training.distributed.devices is {devices}, but this run has {} rank(s) (from {}); the global batch would silently change\n  hint: {launch}",
                world.size,
                world.launcher
            );
        }
        let group = match world.size {
            1 => None,
            _ => Some(ProcessGroup::join(&world, device, timeout())?),
        };
        Ok(DataParallel {
            world,
            group,
            device,
            zero_stage: plan.zero_stage,
            offload_optimizer: plan.offload_optimizer,
            offload_params: plan.offload_params,
        })
    }

    /// Whether ZeRO-3 shards the weights themselves.
    pub fn shards_weights(&self) -> bool {
        self.zero_stage >= 3 && self.size() > 1
    }

    pub fn is_main(&self) -> bool {
        self.world.is_main()
    }

    pub fn size(&self) -> usize {
        self.world.size
    }

    pub fn rank(&self) -> usize {
        self.world.rank
    }

    pub fn group(&self) -> Option<&ProcessGroup> {
        self.group.as_ref()
    }

    /// The micro-batches of a step this rank trains, by index within the step's
    /// `accumulation × ranks`.
    pub fn micro_batches(&self, accumulation: u64) -> Range<u64> {
        let r = self.rank() as u64;
        r * accumulation..(r + 1) * accumulation
    }

    /// Each value summed over the ranks (in f64).
    pub fn sum(&self, values: &[f64]) -> Result<Vec<f64>> {
        self.reduce(values, ReduceOp::Sum)
    }

    /// Each value's largest over the ranks.
    pub fn max(&self, values: &[f64]) -> Result<Vec<f64>> {
        self.reduce(values, ReduceOp::Max)
    }

    fn reduce(&self, values: &[f64], op: ReduceOp) -> Result<Vec<f64>> {
        let Some(group) = &self.group else {
            return Ok(values.to_vec());
        };
        let t = Tensor::from_slice(values).to_device(self.device);
        group.all_reduce(&t, op)?;
        Ok(Vec::<f64>::try_from(&t)?)
    }

    /// Rank 0's values, on every rank.
    pub fn from_main(&self, values: &[f64]) -> Result<Vec<f64>> {
        let Some(group) = &self.group else {
            return Ok(values.to_vec());
        };
        let t = Tensor::from_slice(values).to_device(self.device);
        group.broadcast(&t, 0)?;
        Ok(Vec::<f64>::try_from(&t)?)
    }

    /// Waits until every rank is here.
    pub fn barrier(&self) -> Result<()> {
        match &self.group {
            Some(group) => group.barrier(),
            None => Ok(()),
        }
    }

    /// Makes every rank's `tensors` equal to rank 0's (the trainable weights at the start).
    pub fn broadcast(&self, tensors: &[&Tensor]) -> Result<()> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        let layout = Buckets::new(tensors, group.size);
        for k in 0..layout.count {
            let flat = layout.gather(tensors, layout.bucket(k));
            group.broadcast(&flat, 0)?;
            layout.scatter(&flat, layout.bucket(k), tensors);
        }
        Ok(())
    }

    /// Replaces every rank's gradients by their mean over the ranks, reduced in fp32 buckets
    /// (bf16 gradients too). A parameter without a gradient counts as zero.
    pub fn average_gradients(&self, params: &[&Tensor]) -> Result<()> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        let grads = params
            .iter()
            .map(|p| gradient(p))
            .collect::<Result<Vec<_>>>()?;
        let grads: Vec<&Tensor> = grads.iter().collect();
        let layout = Buckets::new(&grads, group.size);
        for k in 0..layout.count {
            let flat = layout.gather(&grads, layout.bucket(k));
            group.all_reduce(&flat, ReduceOp::Sum)?;
            let mean = flat / group.size as f64;
            layout.scatter(&mean, layout.bucket(k), &grads);
        }
        Ok(())
    }
}

/// Tensors laid end to end in one flat fp32 index space, cut into equal buckets (the last one
/// padded with zeros) of a size the ranks divide. Collectives run bucket by bucket so no more
/// than one bucket's fp32 copy exists at a time; under ZeRO rank r owns the r-th chunk of each.
pub struct Buckets {
    /// Where each tensor starts, and its element count.
    spans: Vec<(i64, i64)>,
    pub size: i64,
    pub count: i64,
    ranks: i64,
}

/// DDP's default bucket: 25 MB of fp32 values.
const BUCKET_ELEMENTS: i64 = 25 * 1024 * 1024 / 4;

impl Buckets {
    pub fn new(tensors: &[&Tensor], ranks: usize) -> Buckets {
        let ranks = ranks.max(1) as i64;
        let mut spans = Vec::with_capacity(tensors.len());
        let mut total = 0;
        for t in tensors {
            let n = t.numel() as i64;
            spans.push((total, n));
            total += n;
        }
        let size = ceil_div(BUCKET_ELEMENTS.min(total.max(1)), ranks) * ranks;
        Buckets {
            spans,
            size,
            count: ceil_div(total, size),
            ranks,
        }
    }

    /// One bucket holding all of `tensors` (its size a multiple of the ranks).
    pub fn single(tensors: &[&Tensor], ranks: usize) -> Buckets {
        let total: i64 = tensors.iter().map(|t| t.numel() as i64).sum();
        let mut layout = Buckets::new(tensors, ranks);
        layout.size = ceil_div(total.max(1), layout.ranks) * layout.ranks;
        layout.count = 1;
        layout
    }

    /// The flat range of bucket `k`.
    pub fn bucket(&self, k: i64) -> Range<i64> {
        k * self.size..(k + 1) * self.size
    }

    /// The flat range of `rank`'s chunk of bucket `k`.
    pub fn chunk(&self, k: i64, rank: usize) -> Range<i64> {
        let c = self.size / self.ranks;
        let start = k * self.size + rank as i64 * c;
        start..start + c
    }

    /// The pieces of the tensors within `range`: (tensor index, offset in the tensor, offset in
    /// the range, length).
    pub fn pieces(&self, range: &Range<i64>) -> Vec<(usize, i64, i64, i64)> {
        let mut out = Vec::new();
        for (i, &(start, n)) in self.spans.iter().enumerate() {
            let (lo, hi) = (start.max(range.start), (start + n).min(range.end));
            if lo < hi {
                out.push((i, lo - start, lo - range.start, hi - lo));
            }
        }
        out
    }

    /// The values of `range` as one fp32 tensor (zeros past the end), on the tensors' device.
    pub fn gather(&self, tensors: &[&Tensor], range: Range<i64>) -> Tensor {
        let device = tensors.first().map_or(Device::Cpu, |t| t.device());
        let flat = Tensor::zeros([range.end - range.start], (Kind::Float, device));
        tch::no_grad(|| {
            for (i, from, at, len) in self.pieces(&range) {
                let piece = tensors[i].reshape([-1]).narrow(0, from, len);
                flat.narrow(0, at, len).copy_(&piece);
            }
        });
        flat
    }

    /// Copies `flat` (the values of `range`) into the tensors, converting to their kind.
    pub fn scatter(&self, flat: &Tensor, range: Range<i64>, tensors: &[&Tensor]) {
        tch::no_grad(|| {
            for (i, from, at, len) in self.pieces(&range) {
                let mut target = tensors[i].view([-1]).narrow(0, from, len);
                target.copy_(&flat.narrow(0, at, len).to_device(target.device()));
            }
        });
    }
}

pub fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

//! Data-parallel ranks on torch's own distributed engine (c10d): who this process is among
//! the ranks (`world`, from torchrun's, Slurm's or our launcher's environment), the process
//! group and its collectives on tch tensors (`c10d`, over the C++ shim `build.rs` compiles),
//! and `runner run --nproc N`'s local launcher (`launch`).
//!
//! The ground floor: it knows tensors and processes, nothing of plans or training.

pub mod c10d;
pub mod launch;
pub mod world;

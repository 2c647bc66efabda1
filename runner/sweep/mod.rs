//! Sweeps: the sweep file and its checks, its expansion into trials, the launchers (local
//! processes, Slurm job arrays) and the results they leave.

pub mod check;
pub mod local;
pub mod plot;
pub mod record;
pub mod results;
pub mod slurm;
pub mod spec;
pub mod trials;

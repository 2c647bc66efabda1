//! Training: optimizer, learning-rate schedules, the loop, run state.

pub mod log;
pub mod memory;
pub mod optimizer;
pub mod parallel;
pub mod run_dir;
pub mod schedule;
pub mod task;
pub mod trainer;
pub mod zero;
pub mod zero3;

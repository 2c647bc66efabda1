//! Run reports: TensorBoard event files (later: tables, plots).

pub mod papers;
pub mod tensorboard;

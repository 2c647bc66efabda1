//! Run reports: TensorBoard event files (later: tables, plots).

pub mod tensorboard;

//! Run reports: metrics tables, paper tables, TensorBoard event files, sweep results.

pub mod metrics_csv;
pub mod papers;
pub mod tensorboard;

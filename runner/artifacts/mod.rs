//! The file formats a run leaves that other tools read: `metrics.csv` and TensorBoard event
//! files. The ground floor: training writes them, sweeps and reports read them.

pub mod metrics_csv;
pub mod tensorboard;

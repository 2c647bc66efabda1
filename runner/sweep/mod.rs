//! Sweeps: the sweep file and its checks. Expansion, launchers and aggregation come with `runner sweep`.

pub mod check;
pub mod spec;

//! The three recipe kinds, one file each: their model, data, evaluation and method sections.

pub mod coe;
pub mod iag;
pub mod longlora;

//! Evaluation: metrics (and later generation-based evaluations).

pub mod metrics;
pub mod passkey;
pub mod perplexity;

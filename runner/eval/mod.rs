//! Evaluation: metrics (and later generation-based evaluations).

pub mod bleu;
pub mod metrics;
pub mod passkey;
pub mod perplexity;
pub mod rouge;

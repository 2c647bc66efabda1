//! Evaluation: metrics (and later generation-based evaluations).

pub mod bleu;
pub mod meteor;
pub mod metrics;
pub mod nltk_data;
pub mod passkey;
pub mod perplexity;
pub mod porter;
pub mod punkt;
pub mod rouge;
pub mod text_metrics;
pub mod word_tokenize;
pub mod wordnet;

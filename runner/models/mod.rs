//! Native models on libtorch, parameter for parameter the HF transformers modules they mirror.
//!
//! Weights live in one [`ParamStore`] keyed by HF names (the names come from
//! `plan::inventory`, the one place where module names are mapped). Models borrow shallow
//! handles to those tensors, so LoRA, freezing and saving act on the store, not on the model.

pub mod adapters;
pub mod attention;
pub mod bert;
pub mod checkpoint;
pub mod connector;
pub mod fid;
pub mod four_bit;
pub mod four_bit_saved;
pub mod generate;
pub mod hf_folder;
pub mod hf_model;
pub mod layers;
pub mod llama;
pub mod loss;
pub mod precision;
pub mod qwen_vl;
pub mod rope;
pub mod store;
pub mod t5;
pub mod vit;
pub mod vlm;

pub use checkpoint::{Checkpointing, Gather, Tape};
pub use precision::Compute;
pub use store::ParamStore;

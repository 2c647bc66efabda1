//! Data: tokenizers, example formats, batching and the order examples are seen in.

pub mod batch;
pub mod categories;
pub mod chatml;
pub mod exemplars;
pub mod images;
pub mod input_files;
pub mod instruction;
pub mod loader;
pub mod mixture;
pub mod order;
pub mod packing;
pub mod qa;
pub mod qa_expert;
pub mod records;
pub mod scienceqa;
pub mod tokenizer;

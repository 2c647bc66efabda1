//! Adapters on a frozen base: LoRA (PEFT's layout), IAG's HyperLoRA (per-example factors from
//! hypernetworks), and the BERT-whitening of the features HyperLoRA reads.

pub mod attached;
pub mod hyperlora;
pub mod lora;
pub mod whitening;

//! The models a recipe builds, as the plan sees them: parameter inventories and how each part
//! is used. Each kind lists its parts (`RecipeKind::parts`); counts, memory estimates and the
//! LoRA target checks read them, so none of them needs to know the kinds.

use super::inventory::Param;

/// One model of a plan (student, teacher, vision tower…) and how it is used.
pub struct Part {
    pub name: &'static str,
    pub params: Vec<Param>,
    /// Never trained (a frozen teacher or vision tower).
    pub frozen: bool,
    /// The adapter (LoRA, HyperLoRA) applies to this part.
    pub adapted: bool,
    /// Its transformer stacks: (layers, tokens per example, hidden width).
    pub stacks: Vec<(u64, u64, u64)>,
    /// Its output head, for the logits' memory.
    pub head: Option<Head>,
}

/// An output head over `vocab` words applied to `tokens` positions per example.
pub enum Head {
    /// `[B, T, V]` fp32 logits are made and back-propagated (T5: IAG's distillation reads them).
    Logits { vocab: u64, tokens: u64 },
    /// Fused with the loss, [`LOGITS_PER_CHUNK`] logits at a time (the Llama family's
    /// `causal_lm_head_loss`).
    /// `width` is the hidden states', whose gradient it computes in the forward pass.
    Fused { vocab: u64, tokens: u64, width: u64 },
}

/// Logits a fused head makes at once: 64 MiB in fp32, whatever the sequence length.
pub const LOGITS_PER_CHUNK: i64 = 1 << 24;

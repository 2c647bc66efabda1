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
    /// Vocabulary of its output head and tokens it is applied to, for logits memory.
    pub logits: Option<(u64, u64)>,
}

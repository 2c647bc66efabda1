//! Where IAG's HyperLoRA puts its adapters (Xnhyacinth/IAG `T5LoraWrapper.init_hyper`): one
//! hypernetwork per kind of block (encoder self-attention, decoder self-attention,
//! cross-attention, and per FFN projection), shared by every layer and told the layer apart by
//! an index appended to its input: `2i` for q (and k, wi_0), `2i+1` for v (and o, wi_1), `i`
//! for wo. The plan's estimate and the model both place adapters through [`site`].

use super::inventory::target_matches;
use super::training::{Adapter, Stack};

/// One adapted linear module.
#[derive(Clone, Debug, PartialEq)]
pub struct Site {
    /// The hypernetwork's parameter prefix, e.g. `hypernet.encoder.selfattention`.
    pub net: String,
    /// The layer index appended to the features.
    pub index: i64,
    pub rank: u64,
}

/// The hypernetwork adapter of `module` (an HF T5 linear module name such as
/// `encoder.block.3.layer.0.SelfAttention.q`), or `None` when the adapter leaves it alone.
pub fn site(adapter: &Adapter, module: &str) -> Option<Site> {
    let Adapter::Hyperlora {
        rank,
        targets,
        stacks,
        ffn_rank_multiplier,
        ..
    } = adapter
    else {
        return None;
    };
    if !targets.iter().any(|t| target_matches(t, module)) {
        return None;
    }
    let (stack, name) = if module.starts_with("encoder.") {
        (Stack::Encoder, "encoder")
    } else {
        (Stack::Decoder, "decoder")
    };
    if !stacks.contains(&stack) {
        return None;
    }
    let parts: Vec<&str> = module.split('.').collect();
    let layer: i64 = parts
        .windows(2)
        .find(|w| w[0] == "block")
        .and_then(|w| w[1].parse().ok())?;
    let leaf = *parts.last()?;
    let owner = parts.get(parts.len().checked_sub(2)?)?;
    let is_ffn = *owner == "DenseReluDense";
    // wi_0 and wi_1 (gated FFN) share the `wi` hypernetwork.
    let kind = match is_ffn {
        true => leaf.trim_end_matches("_0").trim_end_matches("_1"),
        false => owner,
    };
    let index = match leaf {
        "v" | "o" | "wi_1" => 2 * layer + 1,
        "wo" => layer,
        _ => 2 * layer,
    };
    let multiplier = if is_ffn { *ffn_rank_multiplier } else { 1 };
    Some(Site {
        net: format!("hypernet.{name}.{}", kind.to_lowercase()),
        index,
        rank: u64::from(*rank) * u64::from(multiplier),
    })
}

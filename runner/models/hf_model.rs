//! A whole model as an HF folder: its architecture (config.json) and its weights in a
//! [`ParamStore`], loaded, freshly initialised, or saved.

use std::path::Path;

use anyhow::Result;
use tch::{Device, Kind};

use super::hf_folder::{self, HfConfig};
use super::{four_bit_saved, llama, t5, ParamStore};
use crate::plan::inventory::{self, Param};

/// Shards of at most 5 GiB, the size most Hub checkpoints were saved with.
pub const MAX_SHARD_BYTES: usize = 5 << 30;

/// Every parameter of the architecture, by HF name.
pub fn params(config: &HfConfig) -> Vec<Param> {
    match config {
        HfConfig::T5(arch) => inventory::t5(arch),
        HfConfig::Decoder { arch, .. } => inventory::decoder(arch),
    }
}

/// Randomly initialised weights, with the standard deviations transformers uses.
pub fn random(config: &HfConfig, seed: i64, device: Device, kind: Kind) -> ParamStore {
    let params = params(config);
    match config {
        HfConfig::T5(arch) => {
            ParamStore::init(&params, |p| t5::init_std(arch, p), seed, device, kind)
        }
        HfConfig::Decoder { .. } => {
            ParamStore::init(&params, |_| llama::INIT_STD, seed, device, kind)
        }
    }
}

/// The architecture and weights of an HF folder. Weights transformers saved in 4 bits
/// (bitsandbytes) stay 4-bit, frozen.
pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<(HfConfig, ParamStore)> {
    let config = hf_folder::read_config(dir)?;
    let (aliases, ignored) = match &config {
        HfConfig::T5(arch) => (inventory::t5_aliases(arch), &inventory::T5_IGNORED[..]),
        HfConfig::Decoder { arch, .. } => (inventory::decoder_aliases(arch), &[][..]),
    };
    let params = params(&config);
    let mut store = ParamStore::zeros(&params, device, kind);
    let mut tensors = hf_folder::read_tensors(dir)?;
    for saved in four_bit_saved::take(&mut tensors)? {
        let Some(param) = params.iter().find(|p| p.name == saved.name) else {
            anyhow::bail!(
                "{}: 4-bit tensor `{}` is not a weight of the model\n  hint: check that the folder holds the architecture the plan names",
                dir.display(),
                saved.name
            );
        };
        store.checkpoint_kind.get_or_insert(saved.kind);
        store.insert_four_bit(&saved.name, saved.weight.to_device(device), param.group);
    }
    store.load_tensors(dir, &tensors, &aliases, ignored)?;
    Ok((config, store))
}

/// Saves config.json and the weights (adapters excluded) as transformers lays them out.
pub fn save(dir: &Path, config: &HfConfig, store: &ParamStore) -> Result<()> {
    hf_folder::write_folder(
        dir,
        &hf_folder::config_json(config),
        &store.base_tensors(),
        MAX_SHARD_BYTES,
    )
}

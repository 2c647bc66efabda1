//! IAG's HyperLoRA (Xnhyacinth/IAG `HyperNet`, `HyperLora`): instead of learned LoRA factors, a
//! small hypernetwork makes each example's factors from its whitened, mean-pooled features `f`
//! and the layer index: with `v = [f, index]`,
//! `D = (W₂·relu(W₁·v + b₁) + b₂) → [in, r]` and `U` likewise from its own two layers `→ [r, out]`, divided by √r,
//! and the adapted layer is `y = Dropout(W·x) + (x·D)·U`. Weights start N(0, 1e-7), biases 0,
//! as in the code. Which modules get which hypernetwork: `plan::hypernet::site`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use super::attached::{Features, HyperSettings};
use super::whitening::Whitening;
use crate::files::write_atomic;
use crate::models::hf_folder::write_safetensors;
use crate::models::store::ParamStore;
use crate::plan::hypernet;
use crate::plan::inventory::Group;
use crate::plan::training::Adapter;

/// Linear(in → hidden) → ReLU → Linear(hidden → out), PyTorch's `Sequential` names 0 and 2.
struct Mlp {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
}

impl Mlp {
    fn load(store: &ParamStore, name: &str) -> Result<Mlp> {
        Ok(Mlp {
            w1: store.get(&format!("{name}.0.weight"))?,
            b1: store.get(&format!("{name}.0.bias"))?,
            w2: store.get(&format!("{name}.2.weight"))?,
            b2: store.get(&format!("{name}.2.bias"))?,
        })
    }

    fn forward(&self, v: &Tensor) -> Tensor {
        let kind = v.kind();
        v.linear(&self.w1.to_kind(kind), Some(self.b1.to_kind(kind)))
            .relu()
            .linear(&self.w2.to_kind(kind), Some(self.b2.to_kind(kind)))
    }
}

/// The hypernetwork adapter of one linear module.
pub struct HyperBranch {
    down: Mlp,
    up: Mlp,
    index: f64,
    rank: i64,
    input: i64,
    output: i64,
    pub dropout: f64,
    features: Features,
}

impl HyperBranch {
    pub fn load(store: &ParamStore, module: &str) -> Result<Option<HyperBranch>> {
        let Some(settings) = &store.hyper else {
            return Ok(None);
        };
        let Some(site) = settings.sites.get(module) else {
            return Ok(None);
        };
        let (output, input) = store.get(&format!("{module}.weight"))?.size2()?;
        Ok(Some(HyperBranch {
            down: Mlp::load(store, &format!("{}.down", site.net))?,
            up: Mlp::load(store, &format!("{}.up", site.net))?,
            index: site.index as f64,
            rank: site.rank as i64,
            input,
            output,
            dropout: settings.dropout,
            features: settings.features.clone(),
        }))
    }

    /// `(x·D)·U` for `x` `[B, T, in]`, with each example's own factors.
    pub fn delta(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let f = self.features.get().to_kind(kind);
        let b = f.size()[0];
        let index = Tensor::full([b, 1], self.index, (kind, f.device()));
        let v = Tensor::cat(&[f, index], 1);
        let d = self.down.forward(&v).view([b, self.input, self.rank]);
        let u = self.up.forward(&v).view([b, self.rank, self.output]) / (self.rank as f64).sqrt();
        x.matmul(&d).matmul(&u)
    }
}

/// Adds the hypernetworks the adapter places on the store's modules (weights drawn after
/// seeding with `seed`), records the sites for `Linear::load`, and freezes all but the
/// hypernetworks and `also_train`. Returns the features handle the task sets per batch.
pub fn attach(store: &mut ParamStore, adapter: &Adapter, seed: i64) -> Result<Features> {
    let Adapter::Hyperlora {
        hidden,
        whiten_dim,
        dropout,
        targets,
        also_train,
        ..
    } = adapter
    else {
        bail!("training.adapter: not a hyperlora adapter");
    };
    let mut sites = BTreeMap::new();
    let mut nets: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for module in store.linear_modules() {
        if let Some(site) = hypernet::site(adapter, &module) {
            let (output, input) = store.get(&format!("{module}.weight"))?.size2()?;
            nets.entry(site.net.clone())
                .or_insert((input * site.rank as i64, site.rank as i64 * output));
            sites.insert(module, site);
        }
    }
    if sites.is_empty() {
        bail!("training.adapter.targets: {targets:?} match no linear module of the student\n  hint: HyperLoRA adapts T5 attention (q, k, v, o) and FFN (wi, wi_0, wi_1, wo) modules");
    }
    tch::manual_seed(seed);
    let (input, hidden) = (i64::from(*whiten_dim) + 1, i64::from(*hidden));
    let options = (Kind::Float, store.device);
    tch::no_grad(|| {
        for (net, (down, up)) in &nets {
            for (branch, out) in [("down", *down), ("up", *up)] {
                // Linear(input → hidden), then Linear(hidden → out): weights N(0, 1e-7), biases 0.
                for (layer, rows, cols) in [(0, hidden, input), (2, out, hidden)] {
                    let name = format!("{net}.{branch}.{layer}");
                    let weight = Tensor::randn([rows, cols], options) * 1e-7;
                    store.insert(&format!("{name}.weight"), weight, Group::Adapters);
                    let bias = Tensor::zeros([rows], options);
                    store.insert(&format!("{name}.bias"), bias, Group::Adapters);
                }
            }
        }
    });
    let features = Features::default();
    store.hyper = Some(HyperSettings {
        dropout: *dropout,
        sites,
        features: features.clone(),
    });
    store.set_trainable(|name, _| {
        name.starts_with("hypernet.") || also_train.iter().any(|p| name.contains(p.as_str()))
    });
    Ok(features)
}

/// Files of a saved HyperLoRA student, beside its base weights in `model/`.
pub const CONFIG: &str = "hyperlora_config.json";
pub const WEIGHTS: &str = "hypernet.safetensors";

/// Writes the hypernetworks and the whitening (`whitening.kernel`, `whitening.bias`) to
/// `dir/hypernet.safetensors` and the adapter's settings to `dir/hyperlora_config.json`:
/// what a new question needs to get its adapters.
pub fn save(
    dir: &Path,
    store: &ParamStore,
    adapter: &Adapter,
    whitening: &Whitening,
) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tensors: Vec<(String, Tensor)> = store
        .iter()
        .filter(|(n, _, _)| n.starts_with("hypernet."))
        .map(|(n, t, _)| (n.to_string(), t.detach()))
        .collect();
    tensors.push(("whitening.kernel".into(), whitening.kernel.shallow_clone()));
    tensors.push(("whitening.bias".into(), whitening.bias.shallow_clone()));
    let refs: Vec<&(String, Tensor)> = tensors.iter().collect();
    write_safetensors(&dir.join(WEIGHTS), &refs)?;
    let config = serde_json::to_vec_pretty(adapter)?;
    write_atomic(&dir.join(CONFIG), &config)
}

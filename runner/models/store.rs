//! Every weight of one model, by its HF name: created from the inventory of the architecture,
//! filled from an HF folder, frozen or unfrozen by name, counted by module group.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::adapters::attached::HyperSettings;
use super::hf_folder;
use crate::plan::inventory::{Group, Param};

/// The LoRA scale and dropout that apply to every adapter in a store.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoraSettings {
    /// alpha / rank.
    pub scale: f64,
    pub dropout: f64,
}

/// Named parameter tensors, in name order.
pub struct ParamStore {
    tensors: BTreeMap<String, (Tensor, Group)>,
    pub device: Device,
    pub kind: Kind,
    /// Set when LoRA adapters are attached.
    pub lora: Option<LoraSettings>,
    /// Set when HyperLoRA hypernetworks are attached.
    pub hyper: Option<HyperSettings>,
    /// The kind the loaded checkpoint stored its weights in (saving can keep it).
    pub checkpoint_kind: Option<Kind>,
}

/// Parameter counts of one module group.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupCount {
    pub group: Group,
    pub total: i64,
    pub trainable: i64,
}

impl ParamStore {
    /// Fresh weights for `params`, drawn from the global generator after seeding it with `seed`:
    /// norms 1, biases 0, everything else normal with the standard deviation `std` gives.
    pub fn init(
        params: &[Param],
        std: impl Fn(&Param) -> f64,
        seed: i64,
        device: Device,
        kind: Kind,
    ) -> ParamStore {
        tch::manual_seed(seed);
        let mut store = ParamStore::empty(device, kind);
        tch::no_grad(|| {
            for p in params {
                let shape: Vec<i64> = p.shape.iter().map(|&d| d as i64).collect();
                let t = if p.group == Group::Norms {
                    Tensor::ones(&shape, (kind, device))
                } else if p.name.ends_with(".bias") {
                    Tensor::zeros(&shape, (kind, device))
                } else {
                    Tensor::randn(&shape, (Kind::Float, device)).g_mul_scalar(std(p))
                };
                store.insert(&p.name, t.to_kind(kind), p.group);
            }
        });
        store
    }

    /// Zero weights for `params`, to be filled from a checkpoint (draws no random numbers).
    pub fn zeros(params: &[Param], device: Device, kind: Kind) -> ParamStore {
        let mut store = ParamStore::empty(device, kind);
        for p in params {
            let shape: Vec<i64> = p.shape.iter().map(|&d| d as i64).collect();
            store.insert(&p.name, Tensor::zeros(&shape, (kind, device)), p.group);
        }
        store
    }

    pub fn empty(device: Device, kind: Kind) -> ParamStore {
        ParamStore {
            tensors: BTreeMap::new(),
            device,
            kind,
            lora: None,
            hyper: None,
            checkpoint_kind: None,
        }
    }

    /// Adds (or replaces) a parameter; it starts trainable.
    pub fn insert(&mut self, name: &str, tensor: Tensor, group: Group) {
        let t = tensor
            .to_device(self.device)
            .detach()
            .set_requires_grad(true);
        self.tensors.insert(name.to_string(), (t, group));
    }

    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.remove(name).map(|(t, _)| t)
    }

    /// A handle to the parameter (it shares storage and gradient with the store's).
    pub fn get(&self, name: &str) -> Result<Tensor> {
        self.find(name)
            .with_context(|| format!("the model has no parameter `{name}`"))
    }

    pub fn find(&self, name: &str) -> Option<Tensor> {
        self.tensors.get(name).map(|(t, _)| t.shallow_clone())
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Name, tensor and group of every parameter, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor, Group)> {
        self.tensors.iter().map(|(n, (t, g))| (n.as_str(), t, *g))
    }

    /// The parameters that receive gradients.
    pub fn trainable(&self) -> Vec<(String, Tensor)> {
        self.iter()
            .filter(|(_, t, _)| t.requires_grad())
            .map(|(n, t, _)| (n.to_string(), t.shallow_clone()))
            .collect()
    }

    /// Makes exactly the parameters for which `train` holds trainable.
    pub fn set_trainable(&self, train: impl Fn(&str, Group) -> bool) {
        for (name, (t, group)) in self.tensors.iter() {
            // In place, so the handles models hold see the change.
            let _ = t.set_requires_grad(train(name, *group));
        }
    }

    /// Total and trainable parameter counts per module group.
    pub fn counts(&self) -> Vec<GroupCount> {
        let mut by_group: BTreeMap<Group, GroupCount> = BTreeMap::new();
        for (_, t, group) in self.iter() {
            let c = by_group.entry(group).or_insert(GroupCount {
                group,
                total: 0,
                trainable: 0,
            });
            c.total += t.numel() as i64;
            if t.requires_grad() {
                c.trainable += t.numel() as i64;
            }
        }
        by_group.into_values().collect()
    }

    /// Copies every tensor of an HF folder into the parameter of the same name (converting to
    /// the store's kind). An alias (a tied copy) fills its parameter only when the checkpoint
    /// lacks the parameter's own name; `ignored` names are skipped; a missing, unexpected or
    /// wrongly shaped tensor is an error naming the file and the tensor.
    pub fn load_hf(
        &mut self,
        dir: &Path,
        aliases: &[(String, String)],
        ignored: &[&str],
    ) -> Result<()> {
        self.load_tensors(dir, &hf_folder::read_tensors(dir)?, aliases, ignored)
    }

    /// `load_hf` from tensors already read from `dir` (`(file, name, tensor)`), such as one
    /// part's share of a checkpoint that holds several models.
    pub fn load_tensors(
        &mut self,
        dir: &Path,
        tensors: &[(std::path::PathBuf, String, Tensor)],
        aliases: &[(String, String)],
        ignored: &[&str],
    ) -> Result<()> {
        let mut missing: Vec<String> = self
            .tensors
            .keys()
            .filter(|n| !n.contains(".lora_"))
            .cloned()
            .collect();
        let mut unexpected = Vec::new();
        let present: Vec<&str> = tensors.iter().map(|(_, n, _)| n.as_str()).collect();
        for (file, name, tensor) in tensors {
            if ignored.contains(&name.as_str()) {
                continue;
            }
            let name = match aliases.iter().find(|(alias, _)| alias == name) {
                Some((_, canonical)) if present.contains(&canonical.as_str()) => continue,
                Some((_, canonical)) => canonical.clone(),
                None => name.clone(),
            };
            let Some((param, _)) = self.tensors.get_mut(&name) else {
                unexpected.push(format!("{name} (in {})", file.display()));
                continue;
            };
            if param.size() != tensor.size() {
                bail!(
                    "{}: tensor `{name}` has shape {:?}, the model expects {:?}\n  hint: the folder's config.json and the plan's model.arch disagree; \
                     run `runner plan` and compare the architecture with the checkpoint's config.json",
                    file.display(),
                    tensor.size(),
                    param.size()
                );
            }
            tch::no_grad(|| param.f_copy_(tensor))?;
            self.checkpoint_kind.get_or_insert(tensor.kind());
            missing.retain(|m| *m != name);
        }
        if !unexpected.is_empty() {
            bail!(
                "{}: {} tensor(s) the model does not have, first: {}\n  hint: check that the folder holds the architecture the plan names (model_type, layer count)",
                dir.display(),
                unexpected.len(),
                unexpected[..unexpected.len().min(5)].join(", ")
            );
        }
        if !missing.is_empty() {
            bail!(
                "{}: {} parameter(s) missing from the checkpoint, first: {}\n  hint: the checkpoint is incomplete or of another architecture",
                dir.display(),
                missing.len(),
                missing[..missing.len().min(5)].join(", ")
            );
        }
        Ok(())
    }

    /// Appends `n` rows to the matrix `name`, each the mean of its existing rows: LongLoRA's
    /// (and Alpaca's) initialisation of embeddings for tokens added to the vocabulary.
    pub fn grow_rows_with_mean(&mut self, name: &str, n: i64) -> Result<()> {
        let (old, group) = match self.tensors.get(name) {
            Some((t, g)) => (t.detach(), *g),
            None => bail!("the model has no parameter `{name}` to grow"),
        };
        let mean = old
            .to_kind(Kind::Float)
            .mean_dim(0, true, Kind::Float)
            .to_kind(old.kind());
        let grown = Tensor::cat(&[old, mean.repeat([n, 1])], 0);
        self.insert(name, grown, group);
        Ok(())
    }

    /// The tensors to save in an HF folder: everything but the adapters.
    pub fn base_tensors(&self) -> Vec<(String, Tensor)> {
        self.iter()
            .filter(|(n, _, _)| !n.contains(".lora_") && !n.starts_with("hypernet."))
            .map(|(n, t, _)| (n.to_string(), t.detach()))
            .collect()
    }
}

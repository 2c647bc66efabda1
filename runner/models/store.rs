//! Every weight of one model, by its HF name: created from the inventory of the architecture,
//! filled from an HF folder, frozen or unfrozen by name, counted by module group.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::adapters::attached::HyperSettings;
use super::four_bit::{self, FourBit};
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
    /// QLoRA's frozen linear weights in 4 bits, by parameter name (not in `tensors`).
    four_bit: BTreeMap<String, (Rc<FourBit>, Group)>,
    pub device: Device,
    pub kind: Kind,
    /// Set when LoRA adapters are attached.
    pub lora: Option<LoraSettings>,
    /// Set when HyperLoRA hypernetworks are attached.
    pub hyper: Option<HyperSettings>,
    /// The kind the loaded checkpoint stored its weights in (saving can keep it).
    pub checkpoint_kind: Option<Kind>,
    /// What [`ParamStore::block`] records: how many blocks read each weight, and the weights
    /// the block being loaded has read so far.
    blocks: RefCell<BlockReads>,
}

#[derive(Default)]
struct BlockReads {
    /// Per weight: how many blocks read it, and the last of them (blocks numbered from 0).
    readers: BTreeMap<String, (u32, usize)>,
    loaded: usize,
    current: Option<BTreeMap<String, Tensor>>,
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
            four_bit: BTreeMap::new(),
            device,
            kind,
            lora: None,
            hyper: None,
            checkpoint_kind: None,
            blocks: RefCell::default(),
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
        let t = self.tensors.get(name).map(|(t, _)| t.shallow_clone())?;
        let mut blocks = self.blocks.borrow_mut();
        if let Some(current) = &mut blocks.current {
            current.insert(name.to_string(), t.shallow_clone());
        }
        Some(t)
    }

    /// Whether any weight is held in 4 bits (QLoRA).
    pub fn has_four_bit(&self) -> bool {
        !self.four_bit.is_empty()
    }

    /// Loads one block of a model (a checkpoint segment) with `load`, returning it with the
    /// weights it read: ZeRO-3 makes exactly those whole around the block's segment.
    pub fn block<T>(&self, load: impl FnOnce() -> T) -> (T, Vec<Tensor>) {
        self.blocks.borrow_mut().current = Some(BTreeMap::new());
        let loaded = load();
        let mut blocks = self.blocks.borrow_mut();
        let read = blocks.current.take().unwrap_or_default();
        let block = blocks.loaded;
        blocks.loaded += 1;
        for name in read.keys() {
            let reader = blocks.readers.entry(name.clone()).or_default();
            *reader = (reader.0 + 1, block);
        }
        (loaded, read.into_values().collect())
    }

    /// The weights that one block alone reads, with that block's number. ZeRO-3 gathers them
    /// around that block's segment; the others (embeddings, heads, weights several blocks
    /// share) for a whole step.
    pub fn block_owned(&self) -> BTreeMap<String, usize> {
        let blocks = self.blocks.borrow();
        (blocks.readers.iter())
            .filter(|(_, &(n, _))| n == 1)
            .map(|(name, &(_, block))| (name.clone(), block))
            .collect()
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

    /// Total and trainable parameter counts per module group (4-bit weights count as frozen).
    pub fn counts(&self) -> Vec<GroupCount> {
        let mut by_group: BTreeMap<Group, GroupCount> = BTreeMap::new();
        let dense = self
            .iter()
            .map(|(_, t, g)| (g, t.numel() as i64, t.requires_grad()));
        let four_bit = self.four_bit.values().map(|(w, g)| (*g, w.numel(), false));
        for (group, numel, trains) in dense.chain(four_bit) {
            let c = by_group.entry(group).or_insert(GroupCount {
                group,
                total: 0,
                trainable: 0,
            });
            c.total += numel;
            if trains {
                c.trainable += numel;
            }
        }
        by_group.into_values().collect()
    }

    /// Bytes of every weight held, 4-bit ones with their quantisation state.
    pub fn bytes(&self) -> u64 {
        let dense: i64 = self
            .iter()
            .map(|(_, t, _)| (t.numel() * t.kind().elt_size_in_bytes()) as i64)
            .sum();
        let four_bit: i64 = self.four_bit.values().map(|(w, _)| w.bytes()).sum();
        (dense + four_bit) as u64
    }

    /// The linear modules (by module name, without `.weight`), 4-bit ones included.
    pub fn linear_modules(&self) -> Vec<String> {
        let dense = self
            .iter()
            .filter(|(n, t, g)| t.dim() == 2 && is_linear(n, *g))
            .map(|(n, _, _)| n);
        let four_bit = self.four_bit.keys().map(String::as_str);
        let mut modules: Vec<String> = dense
            .chain(four_bit)
            .filter_map(|n| n.strip_suffix(".weight").map(str::to_string))
            .collect();
        modules.sort();
        modules
    }

    /// `[rows, cols]` of a dense or 4-bit weight matrix.
    pub fn matrix_shape(&self, name: &str) -> Result<(i64, i64)> {
        match self.four_bit.get(name) {
            Some((w, _)) => Ok((w.rows, w.cols)),
            None => Ok(self.get(name)?.size2()?),
        }
    }

    /// The 4-bit weight `name`, if QLoRA holds it so.
    pub fn four_bit(&self, name: &str) -> Option<Rc<FourBit>> {
        self.four_bit.get(name).map(|(w, _)| Rc::clone(w))
    }

    /// Holds a weight in 4 bits, in place of its dense tensor.
    pub fn insert_four_bit(&mut self, name: &str, weight: FourBit, group: Group) {
        self.tensors.remove(name);
        self.four_bit
            .insert(name.to_string(), (Rc::new(weight), group));
    }

    /// QLoRA: every frozen linear weight goes to 4 bits (adapters, `also_train` modules,
    /// embeddings, norms and the head keep their kind). Returns how many were quantised.
    pub fn quantize_frozen_linears(&mut self, spec: four_bit::Spec) -> Result<usize> {
        let frozen: Vec<(String, Group)> = self
            .iter()
            .filter(|(n, t, g)| {
                t.dim() == 2 && is_linear(n, *g) && n.ends_with(".weight") && !t.requires_grad()
            })
            .map(|(n, _, g)| (n.to_string(), g))
            .collect();
        for (name, group) in &frozen {
            let dense = self.remove(name).expect("listed above");
            let weight =
                four_bit::quantize(&dense, spec).with_context(|| format!("quantising `{name}`"))?;
            drop(dense);
            self.insert_four_bit(name, weight, *group);
        }
        release_freed_memory();
        Ok(frozen.len())
    }

    /// Every 4-bit weight back to a dense fp32 tensor (frozen), for merging and export.
    pub fn dequantize_all(&mut self) -> Result<()> {
        for (name, (weight, group)) in std::mem::take(&mut self.four_bit) {
            let dense = weight.dequantize()?;
            self.insert(&name, dense.to_kind(self.kind), group);
            let _ = self.tensors[&name].0.set_requires_grad(false);
        }
        Ok(())
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
        // A config.json (or model.arch) with more layers than the weights: say so by name.
        let (wanted, held) = (depths(&missing), depths(&present));
        if let Some((stack, model)) = wanted.iter().max_by_key(|(_, d)| **d) {
            let have = held.get(stack).copied().unwrap_or(0);
            if *model > have {
                bail!(
                    "{}: the weights hold {have} layers of `{stack}`, the model has {model}: {} parameter(s) missing\n  hint: set num_hidden_layers (T5: num_layers, num_decoder_layers) in config.json and model.arch to the weights' {have}",
                    dir.display(),
                    missing.len(),
                );
            }
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
        self.grow_rows(name, |old| {
            old.to_kind(Kind::Float)
                .mean_dim(0, true, Kind::Float)
                .repeat([n, 1])
        })
    }

    /// Appends `n` rows drawn N(0, std²) from the global generator to the matrix `name`: what
    /// transformers 4.34's `resize_token_embeddings` gave new tokens (QA-Expert's markers).
    pub fn grow_rows_normal(&mut self, name: &str, n: i64, std: f64) -> Result<()> {
        self.grow_rows(name, |old| {
            Tensor::randn([n, old.size()[1]], (Kind::Float, old.device())) * std
        })
    }

    /// Appends the fp32 rows `new` makes from the matrix `name`, in the matrix's kind.
    fn grow_rows(&mut self, name: &str, new: impl FnOnce(&Tensor) -> Tensor) -> Result<()> {
        let (old, group) = match self.tensors.get(name) {
            Some((t, g)) => (t.detach(), *g),
            None => bail!("the model has no parameter `{name}` to grow"),
        };
        let rows = new(&old).to_kind(old.kind());
        self.insert(name, Tensor::cat(&[old, rows], 0), group);
        Ok(())
    }

    /// The tensors to save in an HF folder: everything but the adapters (and 4-bit weights:
    /// `dequantize_all` first).
    pub fn base_tensors(&self) -> Vec<(String, Tensor)> {
        self.iter()
            .filter(|(n, _, _)| !n.contains(".lora_") && !n.starts_with("hypernet."))
            .map(|(n, t, _)| (n.to_string(), t.detach()))
            .collect()
    }
}

/// Returns memory freed to malloc to the system (glibc keeps it, counted in the process's
/// resident set): after dropping a model's dense weights, or before measuring a step.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Each layer stack among `names` (`model.layers`, `encoder.block`, …) and its depth: the
/// highest layer index + 1.
fn depths<S: AsRef<str>>(names: &[S]) -> BTreeMap<String, usize> {
    let mut depth: BTreeMap<String, usize> = BTreeMap::new();
    for name in names {
        let parts: Vec<&str> = name.as_ref().split('.').collect();
        if let Some(i) = (1..parts.len()).find(|&i| parts[i].parse::<usize>().is_ok()) {
            let index: usize = parts[i].parse().expect("found above");
            let d = depth.entry(parts[..i].join(".")).or_default();
            *d = (*d).max(index + 1);
        }
    }
    depth
}

/// Whether a 2-D parameter of `group` is the weight of a linear module (T5's relative
/// attention bias is an embedding table in the attention group).
fn is_linear(name: &str, group: Group) -> bool {
    matches!(
        group,
        Group::Attention | Group::Mlp | Group::Connector | Group::Vision
    ) && !name.contains("relative_attention_bias")
}

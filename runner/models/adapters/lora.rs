//! LoRA (Hu et al.) as PEFT implements it: `W·x + (alpha/r)·B·A·dropout(x)` on the target
//! modules, A Kaiming-uniform (a = √5, so U(±1/√in)), B zero; everything else frozen except
//! parameters named in `also_train`. Adapters save in PEFT's layout, so Python PEFT loads
//! them, and merge into the base weights (`W += alpha/r · B·A`).

use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tch::{Kind, Tensor};

use crate::files::{read_json, write_atomic};
use crate::models::four_bit;
use crate::models::hf_folder::write_safetensors;
use crate::models::store::{LoraSettings, ParamStore};
use crate::plan::inventory::{target_matches, Group};
use crate::plan::training::Adapter;

pub const CONFIG: &str = "adapter_config.json";
pub const WEIGHTS: &str = "adapter_model.safetensors";
/// PEFT's prefix for the wrapped model's parameters.
const PEFT_PREFIX: &str = "base_model.model.";

#[derive(Clone, Debug, PartialEq)]
pub struct LoraSpec {
    pub rank: i64,
    pub alpha: f64,
    pub dropout: f64,
    /// Module names or dotted suffixes, matched as PEFT matches `target_modules`.
    pub targets: Vec<String>,
    /// Parameters whose names contain one of these train too.
    pub also_train: Vec<String>,
    /// QLoRA: the frozen linear weights are held in 4 bits.
    pub quantize: Option<four_bit::Spec>,
}

impl LoraSpec {
    /// The LoRA part of a plan's adapter, if it is LoRA.
    pub fn of(adapter: &Adapter) -> Option<LoraSpec> {
        match adapter {
            Adapter::Lora {
                rank,
                alpha,
                dropout,
                targets,
                also_train,
                quantize,
            } => Some(LoraSpec {
                rank: *rank as i64,
                alpha: *alpha,
                dropout: *dropout,
                targets: targets.clone(),
                also_train: also_train.clone(),
                quantize: quantize.as_ref().map(four_bit::Spec::of),
            }),
            _ => None,
        }
    }

    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// Adds zero-effect adapters (B = 0) to every module a target matches, A drawn after seeding
/// the global generator with `seed`, and freezes all but adapters and `also_train`; with
/// QLoRA, the frozen linear weights then go to 4 bits. Returns the adapted modules.
pub fn attach(store: &mut ParamStore, spec: &LoraSpec, seed: i64) -> Result<Vec<String>> {
    tch::manual_seed(seed);
    let modules = add_adapters(store, spec, true)?;
    if let Some(quantize) = spec.quantize {
        store.quantize_frozen_linears(quantize)?;
    }
    Ok(modules)
}

/// Adds the adapters; A is Kaiming-uniform when `draw`, else zero (to be loaded).
fn add_adapters(store: &mut ParamStore, spec: &LoraSpec, draw: bool) -> Result<Vec<String>> {
    let modules: Vec<String> = store
        .linear_modules()
        .into_iter()
        .filter(|m| spec.targets.iter().any(|t| target_matches(t, m)))
        .collect();
    if modules.is_empty() {
        let mut names: Vec<String> = store
            .linear_modules()
            .iter()
            .filter_map(|m| m.rsplit('.').next().map(str::to_string))
            .collect();
        names.sort();
        names.dedup();
        bail!(
            "LoRA targets {:?} match no linear module\n  hint: the model's linear modules are {}",
            spec.targets,
            names.join(", ")
        );
    }
    for module in &modules {
        let (out, input) = store.matrix_shape(&format!("{module}.weight"))?;
        let bound = 1.0 / (input as f64).sqrt();
        let options = (Kind::Float, store.device);
        let mut a = Tensor::zeros([spec.rank, input], options);
        if draw {
            let _ = a.uniform_(-bound, bound);
        }
        let b = Tensor::zeros([out, spec.rank], options);
        // fp32 even in pure bf16, as PEFT's autocast_adapter_dtype: small updates to A and B
        // would round away in bf16. Linear casts them to the compute kind where used.
        store.insert(&format!("{module}.lora_A.weight"), a, Group::Adapters);
        store.insert(&format!("{module}.lora_B.weight"), b, Group::Adapters);
    }
    store.lora = Some(LoraSettings {
        scale: spec.scale(),
        dropout: spec.dropout,
    });
    train_only(store, &spec.also_train);
    Ok(modules)
}

/// Adapters and parameters whose names contain an `also_train` entry train; the rest is frozen.
pub fn train_only(store: &ParamStore, also_train: &[String]) {
    store.set_trainable(|name, group| {
        group == Group::Adapters || also_train.iter().any(|a| name.contains(a.as_str()))
    });
}

/// Folds every adapter into its base weight (`W += scale · B·A`) and removes the adapters.
pub fn merge(store: &mut ParamStore) -> Result<usize> {
    let settings = store
        .lora
        .ok_or_else(|| anyhow!("the model has no LoRA adapters to merge"))?;
    let modules: Vec<String> = store
        .iter()
        .filter_map(|(n, _, _)| n.strip_suffix(".lora_A.weight").map(str::to_string))
        .collect();
    for module in &modules {
        let a = store
            .remove(&format!("{module}.lora_A.weight"))
            .expect("listed above");
        let b = store.get(&format!("{module}.lora_B.weight"))?;
        store.remove(&format!("{module}.lora_B.weight"));
        let mut w = store.get(&format!("{module}.weight"))?;
        tch::no_grad(|| {
            let delta = b.to_kind(Kind::Float).matmul(&a.to_kind(Kind::Float)) * settings.scale;
            let merged = w.to_kind(Kind::Float) + delta;
            w.f_copy_(&merged)
        })?;
    }
    store.lora = None;
    Ok(modules.len())
}

/// Saves the adapters (and the trained extras) as PEFT does: `adapter_config.json` and
/// `adapter_model.safetensors`, names prefixed `base_model.model.`.
pub fn save_peft(
    dir: &Path,
    store: &ParamStore,
    spec: &LoraSpec,
    base_model: &str,
    task_type: &str,
) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tensors = Vec::new();
    let mut extras = Vec::new();
    for (name, t, group) in store.iter() {
        if group == Group::Adapters || t.requires_grad() {
            tensors.push((format!("{PEFT_PREFIX}{name}"), t.detach()));
        }
        if group != Group::Adapters && t.requires_grad() {
            extras.push(module_of(name).to_string());
        }
    }
    let config = json!({
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model,
        "r": spec.rank,
        // PEFT writes an integer alpha; keep that form when it is one.
        "lora_alpha": if spec.alpha.fract() == 0.0 { json!(spec.alpha as i64) } else { json!(spec.alpha) },
        "lora_dropout": spec.dropout,
        "target_modules": spec.targets,
        "modules_to_save": if extras.is_empty() { Value::Null } else { json!(modules_to_save(store, &extras)) },
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
    });
    let refs: Vec<&(String, Tensor)> = tensors.iter().collect();
    write_safetensors(&dir.join(WEIGHTS), &refs)?;
    write_atomic(
        &dir.join(CONFIG),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )
}

/// Loads a PEFT LoRA adapter folder onto the store: attaches the adapters and copies their
/// weights, and replaces extras (modules_to_save) with the adapter's copies.
pub fn load_peft(dir: &Path, store: &mut ParamStore) -> Result<LoraSpec> {
    let path = dir.join(CONFIG);
    let v = read_json(
        &path,
        &format!("an adapter folder holds {CONFIG} and {WEIGHTS}"),
    )?;
    let spec = spec_from_config(&v).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    add_adapters(store, &spec, false)?;
    let file = dir.join(WEIGHTS);
    let tensors = Tensor::read_safetensors(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let mut extras = Vec::new();
    for (key, tensor) in tensors {
        let name = key.strip_prefix(PEFT_PREFIX).unwrap_or(&key);
        let Some(mut param) = store.find(name) else {
            bail!(
                "{}: tensor `{key}` matches no parameter of the model\n  hint: the adapter was trained on another architecture",
                file.display()
            );
        };
        if param.size() != tensor.size() {
            bail!(
                "{}: tensor `{key}` has shape {:?}, the model's is {:?}\n  hint: the adapter was trained on another model size or rank",
                file.display(),
                tensor.size(),
                param.size()
            );
        }
        tch::no_grad(|| param.f_copy_(&tensor))?;
        if !name.contains(".lora_") {
            extras.push(name.to_string());
        }
    }
    let mut also_train = spec.also_train.clone();
    also_train.extend(extras);
    train_only(store, &also_train);
    Ok(LoraSpec { also_train, ..spec })
}

fn spec_from_config(v: &Value) -> Result<LoraSpec> {
    if v["peft_type"].as_str() != Some("LORA") {
        bail!(
            "key `peft_type`: expected \"LORA\", found {}",
            v["peft_type"]
        );
    }
    let targets = match &v["target_modules"] {
        Value::Array(a) => a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
        other => bail!(
            "key `target_modules`: expected a list of module names, found {other}\n  hint: regular expressions and \"all-linear\" are not supported; list the modules"
        ),
    };
    // Variants whose weights mean something else than W + alpha/r·B·A: refuse rather than
    // merge them wrongly.
    for (key, plain) in [
        ("use_rslora", json!(false)),
        ("use_dora", json!(false)),
        ("bias", json!("none")),
        ("rank_pattern", json!({})),
        ("alpha_pattern", json!({})),
    ] {
        let value = &v[key];
        if !value.is_null() && *value != plain {
            bail!("key `{key}`: {value} is not supported; runner reads plain LoRA adapters ({key}: {plain})");
        }
    }
    let rank = v["r"].as_i64().filter(|r| *r > 0);
    Ok(LoraSpec {
        rank: rank.ok_or_else(|| {
            anyhow!(
                "key `r`: expected a positive integer rank, found {}",
                v["r"]
            )
        })?,
        alpha: v["lora_alpha"]
            .as_f64()
            .ok_or_else(|| anyhow!("key `lora_alpha`: expected a number"))?,
        dropout: v["lora_dropout"].as_f64().unwrap_or(0.0),
        targets,
        also_train: Vec::new(),
        quantize: None,
    })
}

/// The module a parameter belongs to (its name without `.weight` / `.bias`).
fn module_of(param: &str) -> &str {
    param.rsplit_once('.').map_or(param, |(module, _)| module)
}

/// PEFT's `modules_to_save` for the trained extras. PEFT matches each entry as a suffix of
/// module names, so a short name (`norm`) stands for every module ending in it; it is used
/// only when all those modules are trained, else the full paths are.
fn modules_to_save(store: &ParamStore, trained: &[String]) -> Vec<String> {
    let modules: Vec<&str> = store.iter().map(|(n, _, _)| module_of(n)).collect();
    let mut names: Vec<String> = trained
        .iter()
        .map(|m| {
            let short = m.rsplit('.').next().unwrap_or(m);
            let all_trained = modules
                .iter()
                .filter(|other| other.ends_with(short))
                .all(|other| trained.iter().any(|t| t == other));
            if all_trained { short } else { m.as_str() }.to_string()
        })
        .collect();
    names.sort();
    names.dedup();
    // `norm` already covers `input_layernorm`.
    let all = names.clone();
    names.retain(|n| !all.iter().any(|o| o != n && n.ends_with(o.as_str())));
    names
}

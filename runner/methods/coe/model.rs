//! CoE's model: a vision tower, a connector and a decoder, from one Qwen-VL folder or built
//! from parts (a CLIP tower, given or fresh; a fresh connector and decoder), frozen and adapted
//! as the plan says; and the tokenizer with its ChatML specials.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tch::Device;

use crate::data::chatml::Specials;
use crate::data::tokenizer::Tokenizer;
use crate::models::adapters::lora::LoraSpec;
use crate::models::connector::{sincos_2d, Connector};
use crate::models::hf_folder::{config_json, HfConfig};
use crate::models::llama::{DecoderOptions, Llama};
use crate::models::qwen_vl;
use crate::models::vit::{self, Vit};
use crate::models::vlm::Vlm;
use crate::models::{hf_model, Compute, ParamStore};
use crate::plan::arch::{Connector as ConnectorSpec, Family, VisionFamily};
use crate::plan::common::tokenizer_file;
use crate::plan::inventory;
use crate::plan::kinds::coe::Model as ModelSpec;
use crate::plan::recipe::CoeRecipe;

/// The model and the stores its three parts' weights live in.
pub struct Model {
    pub vision: ParamStore,
    pub connector: ParamStore,
    pub decoder: ParamStore,
    pub vlm: Vlm,
}

/// The tokenizer (`model.tokenizer`, or the Qwen-VL folder's) and its ChatML specials.
pub fn tokenizer(m: &ModelSpec) -> Result<(Tokenizer, Specials)> {
    let path = tokenizer_file(m.tokenizer.as_deref(), m.path.as_deref())
        .context("model.tokenizer: none given (the plan checks this)")?;
    let tokenizer = match (&m.tokenizer, Tokenizer::load(&path)) {
        (None, Err(e)) => Err(e).context("Qwen-VL-Chat ships its tokenizer as qwen.tiktoken: convert it once with `scripts/qwen_tokenizer.py FOLDER` (writes FOLDER/tokenizer.json), or set model.tokenizer")?,
        (_, loaded) => loaded?,
    };
    let specials = Specials::of(&tokenizer)?;
    Ok((tokenizer, specials))
}

/// The plan's model on `device`; `image_pad` is the token whose embeddings image features take.
pub fn build(recipe: &CoeRecipe, image_pad: i64, device: Device) -> Result<Model> {
    let m = &recipe.model;
    let compute = Compute::of(recipe.training.precision);
    let seed = recipe.seed as i64;
    let arch = &m.vision.arch;
    let (vision, connector, mut decoder) = match &m.path {
        Some(dir) => {
            let parts = qwen_vl::Parts {
                vision: arch.clone(),
                connector: m.connector.clone(),
                decoder: m.decoder.clone(),
            };
            qwen_vl::load(Path::new(dir), &parts, device, compute.weights)?
        }
        None => {
            let init = |params: &[inventory::Param], std: f64, seed: i64| {
                ParamStore::init(params, |_| std, seed, device, compute.weights)
            };
            let vision = match &m.vision.path {
                Some(p) => vit::load(Path::new(p), device, compute.weights)?.1,
                None => init(&inventory::vision(arch), 0.02, seed + 1),
            };
            let connector_params = inventory::connector(&m.connector, arch, &m.decoder);
            let mut connector = init(&connector_params, 0.02, seed + 2);
            if let ConnectorSpec::Resampler { num_queries, .. } = &m.connector {
                let grid = (*num_queries as f64).sqrt().round() as i64;
                let table = sincos_2d(m.decoder.hidden_size as i64, grid);
                connector.insert("connector.pos_embed", table, inventory::Group::Connector);
            }
            let config = HfConfig::Decoder {
                arch: m.decoder.clone(),
                rope_factor: 1.0,
            };
            let decoder = hf_model::random(&config, seed, device, compute.weights);
            (vision, connector, decoder)
        }
    };
    // The class token's post-norm feeds CLIP's pooled output, which the model does not read.
    vision.set_trainable(|name, _| !m.vision.frozen && !name.contains("post_layernorm"));
    // Full fine-tuning trains the connector; with LoRA it stays frozen, as PEFT leaves Qwen-VL's
    // resampler, unless training.adapter.also_train names it (`connector`).
    let lora_spec = LoraSpec::of(&recipe.training.adapter);
    connector.set_trainable(|name, _| {
        name != "connector.pos_embed"
            && lora_spec
                .as_ref()
                .is_none_or(|s| s.also_train.iter().any(|a| name.contains(a.as_str())))
    });
    crate::methods::adapt_decoder(&mut decoder, &recipe.training.adapter, seed)?;
    let vlm = Vlm {
        vision: Vit::new(&vision, arch, compute.activations)?,
        connector: Connector::new(&connector, &m.connector)?,
        decoder: Llama::new(
            &decoder,
            &m.decoder,
            DecoderOptions::default(),
            compute.activations,
        )?,
        image_pad,
    };
    Ok(Model {
        vision,
        connector,
        decoder,
        vlm,
    })
}

impl Model {
    /// The same model in transformers for `scripts/bench_pytorch.py`: CLIP's vision tower, the
    /// MLP connector (LLaVA's projector) and the decoder from the config.json runner would
    /// save, each part trained as here.
    pub fn pytorch_reference(&self) -> std::result::Result<Value, String> {
        let vlm = &self.vlm;
        let Connector::Mlp(layers) = &vlm.connector else {
            return Err("Qwen-VL's resampler has no transformers class".to_string());
        };
        let (v, decoder) = (&vlm.vision.arch, &vlm.decoder);
        if v.family != VisionFamily::Clip || decoder.arch.family == Family::Qwen {
            return Err(
                "Qwen-VL's vision tower and decoder layout have no transformers class".to_string(),
            );
        }
        let config = HfConfig::Decoder {
            arch: decoder.arch.clone(),
            rope_factor: decoder.options.rope_factor,
        };
        let trains = |store: &ParamStore| !store.trainable().is_empty();
        Ok(json!({
            "task": "vlm",
            "model": {
                "decoder": config_json(&config),
                "vision": {
                    "hidden_size": v.hidden_size,
                    "intermediate_size": v.intermediate_size,
                    "num_hidden_layers": v.num_hidden_layers,
                    "num_attention_heads": v.num_attention_heads,
                    "image_size": v.image_size,
                    "patch_size": v.patch_size,
                    "num_channels": v.num_channels,
                    "layer_norm_eps": v.layer_norm_eps,
                },
                "connector_layers": layers.len(),
                "vision_trains": trains(&self.vision),
                "connector_trains": trains(&self.connector),
                "image_pad": vlm.image_pad,
            },
        }))
    }
}

//! A model folder that transformers saved in bitsandbytes' 4-bit form (`load_in_4bit`, then
//! `save_pretrained`): each quantised `X.weight` is uint8 packed codes beside `X.weight.absmax`,
//! `X.weight.quant_map`, with double quantisation `X.weight.nested_absmax` and
//! `X.weight.nested_quant_map`, and the rest of the state as JSON bytes in
//! `X.weight.quant_state.bitsandbytes__nf4` (or `__fp4`).

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use tch::{Kind, Tensor};

use super::four_bit::{FourBit, Nested};
use crate::plan::training::QuantType;

const STATE: &str = ".quant_state.bitsandbytes__";

/// `quant_state.bitsandbytes__*`'s JSON (bitsandbytes' `QuantState.as_dict(packed=True)`).
#[derive(Deserialize)]
struct SavedState {
    quant_type: String,
    blocksize: i64,
    dtype: String,
    shape: Vec<i64>,
    #[serde(default)]
    nested_blocksize: Option<i64>,
    #[serde(default)]
    nested_offset: Option<f32>,
}

/// A 4-bit weight read from a saved folder, and the kind its dense form had.
pub struct Saved {
    pub name: String,
    pub weight: FourBit,
    pub kind: Kind,
}

/// Takes the 4-bit weights out of a folder's tensors (`(file, name, tensor)`), leaving the
/// ordinary ones.
pub fn take(tensors: &mut Vec<(PathBuf, String, Tensor)>) -> Result<Vec<Saved>> {
    let states: Vec<(PathBuf, String, Tensor)> = {
        let (states, rest) = std::mem::take(tensors)
            .into_iter()
            .partition(|(_, n, _)| n.contains(STATE));
        *tensors = rest;
        states
    };
    let mut saved = Vec::new();
    for (file, state_name, bytes) in states {
        let name = state_name
            .split(STATE)
            .next()
            .expect("split yields a first part")
            .to_string();
        let weight = build(&name, &bytes, tensors)
            .with_context(|| format!("{}: 4-bit weight `{name}`", file.display()))?;
        saved.push(weight);
    }
    Ok(saved)
}

fn build(
    name: &str,
    state: &Tensor,
    tensors: &mut Vec<(PathBuf, String, Tensor)>,
) -> Result<Saved> {
    let json: Vec<u8> = Vec::<u8>::try_from(&state.reshape([-1]))?;
    let state: SavedState =
        serde_json::from_slice(&json).context("its quant_state is not bitsandbytes' JSON")?;
    let mut take = |suffix: &str| -> Option<Tensor> {
        let key = format!("{name}{suffix}");
        let at = tensors.iter().position(|(_, n, _)| *n == key)?;
        Some(tensors.swap_remove(at).2)
    };
    let packed = take("").ok_or_else(|| anyhow!("the packed weight is missing"))?;
    let absmax = take(".absmax").ok_or_else(|| anyhow!("`.absmax` is missing"))?;
    let code = take(".quant_map").ok_or_else(|| anyhow!("`.quant_map` is missing"))?;
    let nested = match (take(".nested_absmax"), take(".nested_quant_map")) {
        (Some(absmax), Some(code)) => Some(Nested {
            absmax,
            code,
            offset: Tensor::from_slice(&[state
                .nested_offset
                .ok_or_else(|| anyhow!("nested_offset is missing from its quant_state"))?]),
            block: state
                .nested_blocksize
                .unwrap_or(super::four_bit::NESTED_BLOCK),
        }),
        (None, None) => None,
        _ => bail!("only one of `.nested_absmax` and `.nested_quant_map` is present"),
    };
    let quant_type = match state.quant_type.as_str() {
        "nf4" => QuantType::Nf4,
        "fp4" => QuantType::Fp4,
        other => bail!("quant_type `{other}`: expected nf4 or fp4"),
    };
    let [rows, cols] = state.shape[..] else {
        bail!("shape {:?}: expected a matrix", state.shape);
    };
    let kind = match state.dtype.as_str() {
        "bfloat16" => Kind::BFloat16,
        "float16" => Kind::Half,
        "float32" => Kind::Float,
        other => bail!("dtype `{other}`: expected bfloat16, float16 or float32"),
    };
    Ok(Saved {
        name: name.to_string(),
        weight: FourBit {
            packed,
            absmax,
            code,
            nested,
            quant_type,
            block: state.blocksize,
            rows,
            cols,
        },
        kind,
    })
}

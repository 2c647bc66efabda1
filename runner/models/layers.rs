//! The building blocks every model shares: linear layers (with an optional LoRA branch), RMS
//! normalisation, embedding lookup.

use std::rc::Rc;

use anyhow::Result;
use tch::{Kind, Tensor};

use super::adapters::hyperlora::HyperBranch;
use super::four_bit::FourBit;
use super::store::ParamStore;

/// A LoRA branch (Hu et al.): `scale · B·A·dropout(x)`, with A `[rank, in]` and B `[out, rank]`.
pub struct LoraBranch {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
    pub dropout: f64,
}

/// A linear layer's weight: a tensor, or QLoRA's frozen 4 bits.
pub enum Weight {
    Dense(Tensor),
    FourBit(Rc<FourBit>),
}

/// `x·Wᵀ + b`, plus the LoRA branch or the HyperLoRA branch when the store holds one for this
/// module.
pub struct Linear {
    pub weight: Weight,
    pub bias: Option<Tensor>,
    pub lora: Option<LoraBranch>,
    pub hyper: Option<HyperBranch>,
}

impl Linear {
    /// The module `name` (`name.weight`, `name.bias` if the checkpoint has one, and
    /// `name.lora_A.weight`/`name.lora_B.weight` if adapters were attached).
    pub fn load(store: &ParamStore, name: &str) -> Result<Linear> {
        let lora = match (
            store.find(&format!("{name}.lora_A.weight")),
            store.find(&format!("{name}.lora_B.weight")),
            store.lora,
        ) {
            (Some(a), Some(b), Some(settings)) => Some(LoraBranch {
                a,
                b,
                scale: settings.scale,
                dropout: settings.dropout,
            }),
            _ => None,
        };
        let weight = format!("{name}.weight");
        let weight = match store.four_bit(&weight) {
            Some(w) => Weight::FourBit(w),
            None => Weight::Dense(store.get(&weight)?),
        };
        Ok(Linear {
            weight,
            bias: store.find(&format!("{name}.bias")),
            lora,
            hyper: HyperBranch::load(store, name)?,
        })
    }

    /// `x` is in the compute kind; master weights are cast to it where they are used.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let kind = x.kind();
        let bias = self.bias.as_ref().map(|b| b.to_kind(kind));
        let y = match &self.weight {
            Weight::Dense(w) => x.linear(&w.to_kind(kind), bias),
            Weight::FourBit(w) => {
                // Errors here are libtorch's own (shapes, devices), which tch ops panic on too.
                let y = w.linear(x).unwrap_or_else(|e| panic!("{e:#}"));
                match bias {
                    Some(b) => y + b,
                    None => y,
                }
            }
        };
        if let Some(h) = &self.hyper {
            return y.dropout(h.dropout, train) + h.delta(x);
        }
        match &self.lora {
            None => y,
            Some(l) => {
                let h = x
                    .dropout(l.dropout, train)
                    .linear::<Tensor>(&l.a.to_kind(kind), None)
                    .linear::<Tensor>(&l.b.to_kind(kind), None);
                y + h * l.scale
            }
        }
    }
}

/// Root-mean-square normalisation without centring (T5LayerNorm, LlamaRMSNorm): statistics in
/// fp32, the result in the input's kind.
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn load(store: &ParamStore, name: &str, eps: f64) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: store.get(&format!("{name}.weight"))?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let x32 = x.to_kind(Kind::Float);
        let variance = x32.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let normed = (x32 * (variance + self.eps).rsqrt()).to_kind(kind);
        normed * self.weight.to_kind(kind)
    }
}

/// Rows of an embedding table, cast to the compute kind.
pub fn embed(table: &Tensor, ids: &Tensor, kind: Kind) -> Tensor {
    Tensor::embedding(table, ids, -1, false, false).to_kind(kind)
}

/// Layer normalisation with a learned scale and shift (CLIP's ViT): statistics in fp32.
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn load(store: &ParamStore, name: &str, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: store.get(&format!("{name}.weight"))?,
            bias: store.get(&format!("{name}.bias"))?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let d = *x.size().last().expect("a feature dimension");
        x.to_kind(Kind::Float)
            .layer_norm(
                [d],
                Some(self.weight.to_kind(Kind::Float)),
                Some(self.bias.to_kind(Kind::Float)),
                self.eps,
                false,
            )
            .to_kind(kind)
    }
}

//! Numeric precision: which kind weights are stored in and which kind a forward pass computes in.
//! libtorch has no bf16 autocast (tch binds only CUDA fp16 autocast), so mixed precision is
//! explicit: each layer casts its fp32 master weights to the compute kind where it uses them,
//! and autograd casts the gradients back. Norm statistics, softmax and loss stay in fp32.

use tch::Kind;

use crate::plan::training::Precision;

/// The kinds one model works in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Compute {
    /// Kind of the stored (master) weights.
    pub weights: Kind,
    /// Kind of activations and matrix multiplies.
    pub activations: Kind,
}

impl Compute {
    pub const FP32: Compute = Compute {
        weights: Kind::Float,
        activations: Kind::Float,
    };

    pub fn of(precision: Precision) -> Compute {
        match precision {
            Precision::Fp32 => Compute::FP32,
            Precision::Bf16Mixed => Compute {
                weights: Kind::Float,
                activations: Kind::BFloat16,
            },
            Precision::Bf16 => Compute {
                weights: Kind::BFloat16,
                activations: Kind::BFloat16,
            },
        }
    }
}

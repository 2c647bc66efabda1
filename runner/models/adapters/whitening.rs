//! BERT-whitening (Su et al. 2021), as IAG's `compute_kernel_bias` / `transform_and_normalize`:
//! fit `μ` and the covariance's SVD `U·S·Uᵀ` on a set of sentence vectors, keep
//! `kernel = U·S^-½` for the first k components, then map a vector to
//! `normalize((x − μ)·kernel)`. HyperLoRA conditions on these.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

pub struct Whitening {
    /// `[d, k]`.
    pub kernel: Tensor,
    /// `−μ`, `[1, d]`.
    pub bias: Tensor,
}

/// Mean of `states` `[B, T, d]` over the unmasked positions of `mask` `[B, T]`.
pub fn mean_pool(states: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask.to_kind(Kind::Float).unsqueeze(-1);
    let summed = (states.to_kind(Kind::Float) * &m).sum_dim_intlist(1, false, Kind::Float);
    summed / m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1e-9)
}

impl Whitening {
    /// Fits on `vectors` `[N, d]` (in fp64, as numpy does), keeping `k` components.
    pub fn fit(vectors: &Tensor, k: i64) -> Result<Whitening> {
        let (n, d) = vectors.size2()?;
        if k > d {
            bail!("whitening keeps {k} components of {d}-dimensional features; at most {d} exist");
        }
        let x = vectors.to_kind(Kind::Double);
        let mu = x.mean_dim(0, true, Kind::Double);
        let cov = x.transpose(0, 1).cov(1, None::<Tensor>, None::<Tensor>);
        let (u, s, _) = cov.svd(true, true);
        let kept = s.narrow(0, 0, k);
        let smallest = kept.min().double_value(&[]);
        if smallest <= 1e-12 * s.max().double_value(&[]).max(1e-300) {
            bail!(
                "whitening keeps {k} components, but the {n} feature vectors span fewer directions\n  hint: lower `training.adapter.whiten_dim` below {}, or train on more questions",
                n.min(d)
            );
        }
        let kernel = u.narrow(1, 0, k) * kept.rsqrt().unsqueeze(0);
        Ok(Whitening {
            kernel: kernel.to_kind(Kind::Float),
            bias: (-mu).to_kind(Kind::Float),
        })
    }

    /// `normalize((x + bias)·kernel)` for `x` `[N, d]`, fp32 `[N, k]`.
    pub fn transform(&self, x: &Tensor) -> Tensor {
        let device = x.device();
        let y = (x.to_kind(Kind::Float) + self.bias.to_device(device))
            .matmul(&self.kernel.to_device(device));
        let norm = y
            .pow_tensor_scalar(2)
            .sum_dim_intlist(1, true, Kind::Float)
            .sqrt();
        y / norm
    }
}

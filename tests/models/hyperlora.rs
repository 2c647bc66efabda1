//! IAG's HyperLoRA: where the hypernetworks go, what trains, and one adapted layer against
//! the formula worked out by hand; BERT-whitening's defining property.

use runner::models::adapters::hyperlora;
use runner::models::adapters::whitening::Whitening;
use runner::models::layers::Linear;
use runner::plan::hypernet::{site, Site};
use runner::plan::training::{Adapter, Stack};
use tch::{Kind, Tensor};

use super::{load, max_diff, rng_lock, t5};

fn adapter(targets: &[&str], stacks: &[Stack]) -> Adapter {
    Adapter::Hyperlora {
        rank: 2,
        hidden: 8,
        whiten_dim: 3,
        dropout: 0.0,
        targets: targets.iter().map(|t| t.to_string()).collect(),
        stacks: stacks.to_vec(),
        ffn_rank_multiplier: 8,
        also_train: vec!["norm".into()],
    }
}

#[test]
fn hypernetworks_are_shared_per_block_kind_and_told_layers_apart_by_index() {
    let both = adapter(
        &["q", "v", "wi_0", "wi_1", "wo"],
        &[Stack::Encoder, Stack::Decoder],
    );
    let at = |m: &str| site(&both, m);
    let s = |net: &str, index: i64, rank: u64| {
        Some(Site {
            net: net.into(),
            index,
            rank,
        })
    };
    assert_eq!(
        at("encoder.block.3.layer.0.SelfAttention.q"),
        s("hypernet.encoder.selfattention", 6, 2)
    );
    assert_eq!(
        at("encoder.block.3.layer.0.SelfAttention.v"),
        s("hypernet.encoder.selfattention", 7, 2)
    );
    assert_eq!(
        at("decoder.block.1.layer.1.EncDecAttention.v"),
        s("hypernet.decoder.encdecattention", 3, 2)
    );
    // The FFN variant: wi_0 and wi_1 share one hypernetwork (2i, 2i+1), wo has index i, and
    // both use rank × 8 (IAG's `embedding_dim * 8`).
    assert_eq!(
        at("decoder.block.2.layer.2.DenseReluDense.wi_1"),
        s("hypernet.decoder.wi", 5, 16)
    );
    assert_eq!(
        at("encoder.block.2.layer.1.DenseReluDense.wo"),
        s("hypernet.encoder.wo", 2, 16)
    );
    assert_eq!(at("encoder.block.0.layer.0.SelfAttention.k"), None);
    let encoder_only = adapter(&["q", "v"], &[Stack::Encoder]);
    assert_eq!(
        site(&encoder_only, "decoder.block.0.layer.0.SelfAttention.q"),
        None
    );
    assert_eq!(
        site(&Adapter::Full, "encoder.block.0.layer.0.SelfAttention.q"),
        None
    );
}

/// Row-major `[rows, cols]` times `[cols, n]`.
fn matmul(a: &[f64], b: &[f64], rows: usize, cols: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows * n];
    for i in 0..rows {
        for k in 0..cols {
            for j in 0..n {
                out[i * n + j] += a[i * cols + k] * b[k * n + j];
            }
        }
    }
    out
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

/// IAG's `HyperParamNet`: `linear2(relu(linear1(v)))`, weights `[out, in]` as PyTorch's.
fn mlp(v: &[f64], w1: &[f64], b1: &[f64], w2: &[f64], b2: &[f64]) -> Vec<f64> {
    let hidden = b1.len();
    let h: Vec<f64> = (0..hidden)
        .map(|j| {
            (b1[j]
                + (0..v.len())
                    .map(|i| w1[j * v.len() + i] * v[i])
                    .sum::<f64>())
            .max(0.0)
        })
        .collect();
    (0..b2.len())
        .map(|o| b2[o] + (0..hidden).map(|j| w2[o * hidden + j] * h[j]).sum::<f64>())
        .collect()
}

#[test]
fn an_adapted_layer_adds_each_examples_own_low_rank_update() {
    let _rng = rng_lock();
    let (config, mut store) = load("t5-v1_1", Kind::Float);
    let a = adapter(&["q", "v"], &[Stack::Encoder, Stack::Decoder]);
    let features = hyperlora::attach(&mut store, &a, 0).unwrap();

    // Three hypernetworks (encoder self, decoder self, cross), each two 2-layer MLPs, all
    // trainable with the norms; the base projections are frozen.
    let trainable: Vec<String> = store.trainable().into_iter().map(|(n, _)| n).collect();
    let nets: Vec<&String> = trainable
        .iter()
        .filter(|n| n.starts_with("hypernet."))
        .collect();
    assert_eq!(nets.len(), 3 * 2 * 4, "{nets:?}");
    assert!(trainable
        .iter()
        .all(|n| n.starts_with("hypernet.") || n.contains("norm")));
    assert!(trainable.iter().any(|n| n.contains("layer_norm")));
    let w1 = store
        .get("hypernet.encoder.selfattention.down.0.weight")
        .unwrap();
    assert_eq!(w1.size(), [8, 4], "whitened features plus the layer index");
    assert!(w1.abs().max().double_value(&[]) < 1e-5, "N(0, 1e-7) init");

    // Features at init change nothing measurable: the model is the base model.
    let model = t5(&config, &store, Kind::Float);
    let ids = Tensor::from_slice(&[5i64, 9, 3, 1, 7, 2, 1, 0]).view([2, 4]);
    let mask = ids.ne(0).to_kind(Kind::Int64);
    let f = Tensor::from_slice(&[0.6f32, 0.0, 0.8, 0.0, 1.0, 0.0]).view([2, 3]);
    features.set(&f);
    let plain = runner::models::Tape::plain;
    let adapted = tch::no_grad(|| model.encode(&ids, &mask, &plain(), false));
    let (_, base_store) = load("t5-v1_1", Kind::Float);
    let base = t5(&config, &base_store, Kind::Float);
    let reference = tch::no_grad(|| base.encode(&ids, &mask, &plain(), false));
    assert!(max_diff(&adapted, &reference) < 1e-6);

    // With sizeable hypernetwork weights, one layer's output is W·x + (x·D)·U per example.
    tch::no_grad(|| {
        for (name, t, _) in store.iter() {
            if name.starts_with("hypernet.") {
                t.shallow_clone()
                    .copy_(&(Tensor::randn(t.size(), (Kind::Float, t.device())) * 0.5));
            }
        }
    });
    let module = "encoder.block.1.layer.0.SelfAttention.v";
    let layer = Linear::load(&store, module).unwrap();
    let x = Tensor::randn([2, 3, 32], (Kind::Float, tch::Device::Cpu));
    let y = tch::no_grad(|| layer.forward(&x, false));
    let p = |n: &str| {
        values(
            &store
                .get(&format!("hypernet.encoder.selfattention.{n}"))
                .unwrap(),
        )
    };
    let weight = values(
        &store
            .get(&format!("{module}.weight"))
            .unwrap()
            .transpose(0, 1),
    );
    let (d, r, out) = (32, 2, 32);
    for b in 0..2 {
        let mut v = values(&f.get(b));
        v.push(3.0); // v of block 1: 2·1 + 1
        let down = mlp(
            &v,
            &p("down.0.weight"),
            &p("down.0.bias"),
            &p("down.2.weight"),
            &p("down.2.bias"),
        );
        let up: Vec<f64> = mlp(
            &v,
            &p("up.0.weight"),
            &p("up.0.bias"),
            &p("up.2.weight"),
            &p("up.2.bias"),
        )
        .iter()
        .map(|u| u / (r as f64).sqrt())
        .collect();
        let xb = values(&x.get(b));
        let base = matmul(&xb, &weight, 3, d, out);
        let update = matmul(&matmul(&xb, &down, 3, d, r), &up, 3, r, out);
        let expected: Vec<f64> = base.iter().zip(&update).map(|(a, u)| a + u).collect();
        let got = values(&y.get(b));
        let worst = got
            .iter()
            .zip(&expected)
            .map(|(g, e)| (g - e).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-4, "example {b}: {worst}");
        assert!(
            update.iter().any(|u| u.abs() > 1e-2),
            "the update is not negligible"
        );
    }
}

#[test]
fn whitening_decorrelates_the_features_and_refuses_too_few_of_them() {
    let _rng = rng_lock();
    tch::manual_seed(3);
    let mixing = Tensor::randn([6, 6], (Kind::Double, tch::Device::Cpu));
    let x = Tensor::randn([200, 6], (Kind::Double, tch::Device::Cpu)).matmul(&mixing) + 4.0;
    let w = Whitening::fit(&x, 4).unwrap();
    // Before the final normalisation, whitened vectors have zero mean and identity covariance.
    let z = (x.to_kind(Kind::Float) + &w.bias)
        .matmul(&w.kernel)
        .to_kind(Kind::Double);
    let cov = z.transpose(0, 1).cov(1, None::<Tensor>, None::<Tensor>);
    assert!(max_diff(&cov, &Tensor::eye(4, (Kind::Double, tch::Device::Cpu))) < 1e-3);
    let norms = w
        .transform(&x)
        .pow_tensor_scalar(2)
        .sum_dim_intlist(1, false, Kind::Float);
    assert!(
        max_diff(
            &norms,
            &Tensor::ones([200], (Kind::Float, tch::Device::Cpu))
        ) < 1e-5
    );

    let few = Tensor::randn([3, 6], (Kind::Double, tch::Device::Cpu));
    let message = format!("{:#}", Whitening::fit(&few, 4).err().unwrap());
    assert!(message.contains("whiten_dim"), "{message}");
}

//! The connectors against PyTorch: LLaVA's MLP projector (`nn.Sequential`) and a transcription
//! of Qwen-VL's resampler over `nn.MultiheadAttention` and `F.interpolate`
//! (scripts/make_fixtures.py, make_resampler).

use runner::models::connector::{sincos_2d, Connector};
use runner::models::ParamStore;
use runner::plan::arch::Connector as Spec;
use runner::plan::inventory::Group;
use tch::{Device, Kind, Tensor};

use super::{expected, fixture, grads, max_diff};

/// The fixture's weights, by their names, in a store of their own.
fn weights(name: &str) -> ParamStore {
    let mut store = ParamStore::empty(Device::Cpu, Kind::Float);
    for (n, t) in Tensor::read_safetensors(fixture(name).join("model.safetensors")).unwrap() {
        store.insert(&n, t, Group::Connector);
    }
    store
}

#[test]
fn the_resampler_matches_qwen_vls_output_and_gradients() {
    let store = weights("resampler");
    let e = expected(&fixture("resampler"));
    // The fixed positions are Qwen-VL's get_2d_sincos_pos_embed.
    let table = store.get("connector.pos_embed").unwrap();
    assert!(max_diff(&sincos_2d(64, 2), &table) < 1e-6);
    store.set_trainable(|name, _| name != "connector.pos_embed");
    let spec = Spec::Resampler {
        num_queries: 4,
        num_heads: 2,
    };
    let connector = Connector::new(&store, &spec).unwrap();
    // 16 patches (4×4) against 4 queries (2×2): the key positions are resized bicubically.
    let out = connector.forward(&e["patches"], true);
    assert_eq!(out.size(), [2, 4, 64]);
    assert!(max_diff(&out, &e["output"]) < 1e-5);
    (&out * &e["loss_weights"]).sum(Kind::Float).backward();
    let ours = grads(&store);
    assert_eq!(ours.len(), 13);
    for (name, g) in ours {
        // Relative: the queries' gradients reach about 40.
        let want = &e[&format!("grad.{name}")];
        let scale = want.abs().max().double_value(&[]).max(1.0);
        assert!(max_diff(&g, want) < 1e-5 * scale, "{name}");
    }
}

#[test]
fn the_mlp_projector_matches_llavas() {
    let store = weights("mlp-connector");
    let e = expected(&fixture("mlp-connector"));
    let connector = Connector::new(&store, &Spec::Mlp { layers: 2 }).unwrap();
    let out = tch::no_grad(|| connector.forward(&e["patches"], false));
    assert!(max_diff(&out, &e["output"]) < 1e-5);
}

//! The vision-language model: image features take the placeholders' places, reach later
//! positions only, carry gradients back to the tower and connector, and cached multimodal
//! generation equals recomputing everything at each step.

use runner::models::connector::Connector;
use runner::models::generate::{self, GenerateOptions, Strategy};
use runner::models::hf_folder::HfConfig;
use runner::models::llama::{DecoderOptions, Llama};
use runner::models::vit::Vit;
use runner::models::vlm::Vlm;
use runner::models::{hf_model, ParamStore, Tape};
use runner::plan::arch::{Connector as Spec, DecoderArch, Family, VisionArch};
use runner::plan::inventory;
use tch::{Device, Kind, Tensor};

use super::{max_diff, rng_lock};

const PAD: i64 = 5;

fn model() -> (Vlm, ParamStore, ParamStore) {
    let vision = VisionArch {
        family: runner::plan::arch::VisionFamily::Clip,
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        image_size: 32,
        patch_size: 16,
        num_channels: 3,
        layer_norm_eps: 1e-5,
    };
    let decoder = DecoderArch {
        family: Family::Llama,
        vocab_size: 64,
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        max_position_embeddings: 64,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-6,
        attention_bias: false,
        sliding_window: None,
        tie_word_embeddings: false,
    };
    let spec = Spec::Mlp { layers: 2 };
    let (cpu, f32) = (Device::Cpu, Kind::Float);
    let vstore = ParamStore::init(&inventory::vision(&vision), |_| 0.05, 1, cpu, f32);
    let cstore = ParamStore::init(
        &inventory::connector(&spec, &vision, &decoder),
        |_| 0.2,
        2,
        cpu,
        f32,
    );
    let config = HfConfig::Decoder {
        arch: decoder.clone(),
        rope_factor: 1.0,
    };
    let dstore = hf_model::random(&config, 3, cpu, f32);
    let vlm = Vlm {
        vision: Vit::new(&vstore, &vision, f32).unwrap(),
        connector: Connector::new(&cstore, &spec).unwrap(),
        decoder: Llama::new(&dstore, &decoder, DecoderOptions::default(), f32).unwrap(),
        image_pad: PAD,
    };
    (vlm, vstore, cstore)
}

/// Two rows: text, an image (4 patches → 4 placeholders), text.
fn batch() -> Tensor {
    Tensor::from_slice(&[
        7i64, 8, 3, PAD, PAD, PAD, PAD, 4, 9, 10, //
        11, 3, PAD, PAD, PAD, PAD, 4, 12, 13, 14,
    ])
    .view([2, 10])
}

#[test]
fn images_replace_their_placeholders_and_reach_only_later_positions() {
    let _rng = rng_lock();
    let (vlm, vstore, cstore) = model();
    let ids = batch();
    tch::manual_seed(9);
    let pixels = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let other = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let plain = Tape::plain;
    let a = vlm
        .forward(&ids, None, Some(&pixels), &plain(), false)
        .unwrap();
    let b = tch::no_grad(|| {
        vlm.forward(&ids, None, Some(&other), &plain(), false)
            .unwrap()
    });
    // Row 0: positions 0–2 precede the image, so other pixels change nothing there; after it,
    // they do.
    assert!(max_diff(&a.get(0).narrow(0, 0, 3), &b.get(0).narrow(0, 0, 3)) < 1e-6);
    assert!(max_diff(&a.get(0).narrow(0, 7, 3), &b.get(0).narrow(0, 7, 3)) > 1e-4);
    // The placeholders hold the visual tokens, in reading order.
    let embeds = tch::no_grad(|| vlm.embeds(&ids, Some(&pixels), false).unwrap());
    let visual = tch::no_grad(|| vlm.visual(&pixels, false));
    assert!(max_diff(&embeds.get(0).narrow(0, 3, 4), &visual.get(0)) < 1e-6);
    assert!(max_diff(&embeds.get(1).narrow(0, 2, 4), &visual.get(1)) < 1e-6);
    // Gradients reach the tower (all but the class token's post-norm, which the patches do
    // not pass) and the connector.
    a.sum(Kind::Float).backward();
    for store in [&vstore, &cstore] {
        for (name, t) in store.trainable() {
            let reached =
                t.grad().defined() && t.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0;
            assert_eq!(reached, !name.contains("post_layernorm"), "{name}");
        }
    }
    // Text alone is the decoder alone; a count mismatch is refused.
    let text = Tensor::from_slice(&[7i64, 8, 9]).view([1, 3]);
    let alone = tch::no_grad(|| vlm.decoder.forward(&text, None, &plain(), false));
    let through = tch::no_grad(|| vlm.forward(&text, None, None, &plain(), false).unwrap());
    assert_eq!(max_diff(&alone, &through), 0.0);
    let one_image = pixels.narrow(0, 0, 1);
    let message = vlm
        .embeds(&ids, Some(&one_image), false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        message.contains("8 image placeholder tokens for 1 image(s) of 4 tokens"),
        "{message}"
    );
}

#[test]
fn cached_multimodal_generation_equals_full_recomputation() {
    let _rng = rng_lock();
    let (vlm, _, _) = model();
    let ids = batch();
    tch::manual_seed(10);
    let pixels = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let options = GenerateOptions {
        max_new_tokens: 5,
        strategy: Strategy::Greedy,
        eos: None,
        pad: 0,
        seed: 0,
    };
    let cached = generate::multimodal(&vlm, &ids, None, Some(&pixels), &options).unwrap();
    let mut seq = ids;
    tch::no_grad(|| {
        for _ in 0..5 {
            let logits = vlm
                .forward(&seq, None, Some(&pixels), &Tape::plain(), false)
                .unwrap();
            let next = logits.select(1, -1).argmax(-1, true);
            seq = Tensor::cat(&[&seq, &next], 1);
        }
    });
    assert_eq!(cached, seq.narrow(1, 10, 5));
}

//! A whole Qwen-VL folder (tests/fixtures/models/qwen-vl: Qwen's config.json and checkpoint
//! names) loads into the three parts and computes what Qwen-VL's visual.py and transformers'
//! Qwen2 (the same computation as Qwen-7B) compute: image features, then logits with the
//! features in the placeholders' places.

use runner::models::connector::Connector;
use runner::models::llama::{DecoderOptions, Llama};
use runner::models::qwen_vl::{load, parts_of};
use runner::models::vit::Vit;
use runner::models::vlm::Vlm;
use runner::models::Tape;
use runner::plan::arch::{Connector as Spec, VisionFamily};
use tch::{Device, Kind};

use super::{expected, fixture, max_diff};

#[test]
fn a_qwen_vl_folder_loads_and_matches_its_reference() {
    let dir = fixture("qwen-vl");
    let parts = parts_of(&dir).unwrap();
    assert_eq!(parts.vision.family, VisionFamily::QwenVl);
    assert_eq!(parts.vision.intermediate_size, 128, "int(64 × 2.0)");
    assert_eq!(
        parts.connector,
        Spec::Resampler {
            num_queries: 256,
            num_heads: 1
        }
    );
    let (vision, connector, decoder) = load(&dir, &parts, Device::Cpu, Kind::Float).unwrap();
    let vlm = Vlm {
        vision: Vit::new(&vision, &parts.vision, Kind::Float).unwrap(),
        connector: Connector::new(&connector, &parts.connector).unwrap(),
        decoder: Llama::new(
            &decoder,
            &parts.decoder,
            DecoderOptions::default(),
            Kind::Float,
        )
        .unwrap(),
        image_pad: 5,
    };
    let want = expected(&dir);
    let pixels = &want["pixel_values"];
    let features = tch::no_grad(|| vlm.visual(pixels, false));
    let diff = max_diff(&features, &want["image_features"]);
    assert!(diff < 1e-4, "image features differ by {diff}");
    let logits = tch::no_grad(|| {
        vlm.forward(
            &want["input_ids"],
            None,
            Some(pixels),
            &Tape::plain(),
            false,
        )
        .unwrap()
    });
    let diff = max_diff(&logits, &want["logits"]);
    assert!(diff < 1e-4, "logits differ by {diff}");
}

#[test]
fn a_recipe_that_is_not_the_folders_architecture_is_refused_by_key() {
    let dir = fixture("qwen-vl");
    let mut parts = parts_of(&dir).unwrap();
    parts.vision.num_hidden_layers = 3;
    parts.decoder.rope_theta = 1e6;
    let err = load(&dir, &parts, Device::Cpu, Kind::Float)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("model.vision.arch.num_hidden_layers is 3 in the recipe, 2 in config.json")
            && err.contains("model.decoder.rope_theta"),
        "{err}"
    );
}

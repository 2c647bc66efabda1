//! HF folders: sharded reading, writing the same layout, and errors that name the file.

use runner::models::hf_folder::{self, read_config, HfConfig};
use runner::models::hf_model;
use tch::{Device, Kind};

use super::{fixture, load, max_diff};

#[test]
fn config_json_maps_onto_the_architecture() {
    let HfConfig::Decoder { arch, rope_factor } = read_config(&fixture("llama-gqa-rope")).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (arch.hidden_size, arch.num_hidden_layers, arch.kv_heads()),
        (32, 2, 2)
    );
    assert_eq!(rope_factor, 2.0);
    let HfConfig::Decoder { arch, .. } = read_config(&fixture("qwen2-bias")).unwrap() else {
        panic!()
    };
    assert!(arch.attention_bias);
    let HfConfig::Decoder { arch, .. } = read_config(&fixture("mistral-window")).unwrap() else {
        panic!()
    };
    assert_eq!(arch.sliding_window, Some(4));
    let HfConfig::T5(arch) = read_config(&fixture("t5-v1_0")).unwrap() else {
        panic!()
    };
    assert_eq!((arch.num_layers, arch.decoder_layers()), (2, 3));
}

#[test]
fn saving_in_shards_and_reloading_keeps_every_tensor() {
    for name in ["llama-gqa-rope", "t5-v1_0"] {
        let (config, store) = load(name, Kind::Float);
        let dir = tempfile::tempdir().unwrap();
        let tensors = store.base_tensors();
        hf_folder::write_folder(
            dir.path(),
            &hf_folder::config_json(&config),
            &tensors,
            8 << 10,
        )
        .unwrap();
        assert!(
            dir.path().join(hf_folder::INDEX).is_file(),
            "{name}: sharded with an index"
        );
        let (again, reloaded) = hf_model::load(dir.path(), Device::Cpu, Kind::Float).unwrap();
        assert_eq!(again, config);
        assert_eq!(reloaded.len(), store.len());
        for (n, t, _) in store.iter() {
            assert_eq!(max_diff(t, &reloaded.get(n).unwrap()), 0.0, "{name}: {n}");
        }
        // One file when it fits.
        let single = tempfile::tempdir().unwrap();
        hf_model::save(single.path(), &config, &store).unwrap();
        assert!(single.path().join(hf_folder::SINGLE).is_file());
    }
}

#[test]
fn bad_folders_give_errors_that_name_the_file() {
    let err = |dir: &std::path::Path| {
        format!(
            "{:#}",
            hf_model::load(dir, Device::Cpu, Kind::Float)
                .err()
                .expect("an error")
        )
    };
    let empty = tempfile::tempdir().unwrap();
    let e = err(empty.path());
    assert!(e.contains("config.json") && e.contains("hint:"), "{e}");

    // A config whose sizes disagree with the weights.
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("qwen2-bias");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let config = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    let config = config.replace("\"intermediate_size\": 64", "\"intermediate_size\": 48");
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    let e = err(dir.path());
    assert!(
        e.contains("model.safetensors") && e.contains("mlp") && e.contains("shape"),
        "{e}"
    );

    // A config with more layers than the weights hold names the key and both depths.
    let config = std::fs::read_to_string(src.join("config.json")).unwrap();
    let config = config.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    let e = err(dir.path());
    assert!(
        e.contains("the weights hold 2 layers of `model.layers`, the model has 3")
            && e.contains("num_hidden_layers"),
        "{e}"
    );

    // No weights.
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = err(dir.path());
    assert!(
        e.contains("no model.safetensors") && e.contains("hint:"),
        "{e}"
    );

    // An unknown model type.
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let e = err(dir.path());
    assert!(e.contains("gpt2") && e.contains("config.json"), "{e}");
}

#[test]
fn a_new_save_replaces_an_old_layout_and_old_t5_extras_load() {
    let (config, store) = load("t5-v1_0", Kind::Float);
    let dir = tempfile::tempdir().unwrap();
    let json = hf_folder::config_json(&config);
    // Shards first, then a single file over them: the stale index must not win.
    hf_folder::write_folder(dir.path(), &json, &store.base_tensors(), 8 << 10).unwrap();
    let mut tensors = store.base_tensors();
    let shared = store.get("shared.weight").unwrap();
    let doubled = (&shared * 2.0).detach();
    tensors.retain(|(n, _)| n != "shared.weight");
    tensors.push(("shared.weight".into(), doubled.shallow_clone()));
    // Old checkpoints carry a cross-attention position table and tied copies.
    let heads = runner::plan::inventory::T5_IGNORED[0].to_string();
    tensors.push((
        heads,
        tch::Tensor::zeros([8, 4], (Kind::Float, Device::Cpu)),
    ));
    tensors.push(("encoder.embed_tokens.weight".into(), shared.detach()));
    hf_folder::write_folder(dir.path(), &json, &tensors, usize::MAX).unwrap();
    assert!(!dir.path().join(hf_folder::INDEX).exists());
    let (_, reloaded) = hf_model::load(dir.path(), Device::Cpu, Kind::Float).unwrap();
    // The parameter's own name wins over its tied copy.
    assert_eq!(
        max_diff(&reloaded.get("shared.weight").unwrap(), &doubled),
        0.0
    );
}

#[test]
fn impossible_sizes_in_config_json_are_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(fixture("llama-gqa-rope").join("config.json")).unwrap();
    for (from, to, key) in [
        (
            "\"num_key_value_heads\": 2",
            "\"num_key_value_heads\": 3",
            "num_key_value_heads",
        ),
        (
            "\"num_attention_heads\": 4",
            "\"num_attention_heads\": 0",
            "num_attention_heads",
        ),
    ] {
        assert!(config.contains(from));
        std::fs::write(dir.path().join("config.json"), config.replace(from, to)).unwrap();
        let e = format!("{:#}", read_config(dir.path()).unwrap_err());
        assert!(
            e.contains(key) && e.contains("hint:") && e.contains("config.json"),
            "{e}"
        );
    }
}

#[test]
fn grown_embedding_rows_are_the_mean_of_the_others() {
    let (_, mut store) = load("llama-gqa-rope", Kind::Float);
    let before = store.get("model.embed_tokens.weight").unwrap();
    store
        .grow_rows_with_mean("model.embed_tokens.weight", 2)
        .unwrap();
    let after = store.get("model.embed_tokens.weight").unwrap();
    assert_eq!(after.size(), [98, 32]);
    let mean = before.mean_dim(0, false, Kind::Float);
    assert!(max_diff(&after.get(96), &mean) < 1e-7 && max_diff(&after.get(97), &mean) < 1e-7);
    assert_eq!(max_diff(&after.narrow(0, 0, 96), &before), 0.0);
    assert!(store.grow_rows_with_mean("missing.weight", 1).is_err());
}

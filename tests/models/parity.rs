//! Logits, loss, gradients and greedy generations against transformers' on the same weights
//! (fp32; acceptance bound 1e-4).

use runner::models::generate::{self, GenerateOptions, Strategy};
use runner::models::loss::{causal_lm_loss, cross_entropy};
use runner::models::t5::shift_right;
use runner::models::{fid, ParamStore, Tape};
use tch::{Kind, Tensor};

use super::{
    device, eval_logits, expected, fixture, grads, llama, load, max_diff, real_diff, t5,
    train_logits,
};

const BOUND: f64 = 1e-4;

fn greedy(n: i64) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: n,
        strategy: Strategy::Greedy,
        eos: None,
        pad: 0,
        seed: 0,
    }
}

/// Loss and every gradient of the training step against transformers'.
fn check_step(
    name: &str,
    store: &ParamStore,
    loss: &Tensor,
    e: &std::collections::HashMap<String, Tensor>,
) {
    let d = max_diff(&loss.view([1]), &e["loss"]);
    assert!(d < BOUND, "{name}: loss differs by {d}");
    let ours = grads(store);
    let mut compared = 0;
    for (key, theirs) in e.iter().filter(|(k, _)| k.starts_with("grad.")) {
        let param = &key["grad.".len()..];
        let (_, g) = ours
            .iter()
            .find(|(n, _)| n == param)
            .unwrap_or_else(|| panic!("{name}: no parameter {param}"));
        let d = max_diff(g, theirs);
        assert!(d < BOUND, "{name}: gradient of {param} differs by {d}");
        compared += 1;
    }
    assert_eq!(
        compared,
        ours.len(),
        "{name}: every parameter's gradient is compared"
    );
}

fn decoder_parity(name: &str) {
    let (config, store) = load(name, Kind::Float);
    let model = llama(&config, &store, Kind::Float);
    let e = expected(&fixture(name));
    let (ids, mask) = (&e["input_ids"], &e["attention_mask"]);

    let d = real_diff(&eval_logits(&model, &e), &e);
    assert!(d < BOUND, "{name}: logits differ by {d}");

    // The training loss, fused with the output projection (no logits), against transformers'.
    let loss = model
        .causal_lm_loss(
            &model.embed(ids),
            Some(mask),
            &e["labels"],
            &Tape::plain(),
            true,
        )
        .mean;
    loss.backward();
    check_step(name, &store, &loss, &e);

    let generated = generate::decoder_only(&model, &e["gen_input_ids"], None, &greedy(8));
    assert_eq!(
        generated, e["generated"],
        "{name}: greedy generation differs"
    );
}

#[test]
fn llama_with_gqa_and_linear_rope_scaling_matches_transformers() {
    decoder_parity("llama-gqa-rope");
}

#[test]
fn qwen2_with_qkv_bias_matches_transformers() {
    decoder_parity("qwen2-bias");
}

#[test]
fn mistral_with_a_sliding_window_matches_transformers() {
    decoder_parity("mistral-window");
}

fn t5_parity(name: &str) {
    let (config, store) = load(name, Kind::Float);
    let model = t5(&config, &store, Kind::Float);
    let e = expected(&fixture(name));
    let (ids, mask, labels) = (&e["input_ids"], &e["attention_mask"], &e["labels"]);
    let decoder_ids = shift_right(labels);
    assert_eq!(decoder_ids, e["decoder_input_ids"]);

    let logits = tch::no_grad(|| model.forward(ids, mask, &decoder_ids, &Tape::plain(), false));
    let d = max_diff(&logits, &e["logits"]);
    assert!(d < BOUND, "{name}: logits differ by {d}");

    let logits = model.forward(ids, mask, &decoder_ids, &Tape::plain(), true);
    let loss = cross_entropy(&logits, labels);
    loss.backward();
    check_step(name, &store, &loss, &e);

    let encoded = tch::no_grad(|| model.encode(ids, mask, &Tape::plain(), false));
    let generated = generate::encoder_decoder(&model, &encoded, mask, &greedy(8));
    assert_eq!(
        generated, e["generated"],
        "{name}: greedy generation differs"
    );
}

#[test]
fn t5_v1_0_relu_tied_matches_transformers() {
    t5_parity("t5-v1_0");
}

#[test]
fn t5_v1_1_gated_gelu_untied_matches_transformers() {
    t5_parity("t5-v1_1");
}

#[test]
fn fusion_in_decoder_matches_transformers_encoding_passages_apart() {
    let (config, store) = load("t5-v1_0", Kind::Float);
    let model = t5(&config, &store, Kind::Float);
    let e = expected(&fixture("t5-v1_0"));
    let logits = tch::no_grad(|| {
        fid::forward(
            &model,
            &e["fid_input_ids"],
            &e["fid_attention_mask"],
            &e["decoder_input_ids"],
            &Tape::plain(),
            false,
        )
    });
    let d = max_diff(&logits, &e["fid_logits"]);
    assert!(d < BOUND, "FiD logits differ by {d}");
    assert_eq!(
        fid::passage_text("who?", "T", "text"),
        "question: who? title: T context: text"
    );
}

#[test]
fn t5_traces_hold_every_layers_states_and_attention_without_changing_the_output() {
    let (config, store) = load("t5-v1_1", Kind::Float);
    let model = t5(&config, &store, Kind::Float);
    let ids = Tensor::from_slice(&[5i64, 9, 3, 1, 7, 2, 1, 0])
        .view([2, 4])
        .to_device(device());
    let mask = ids.ne(0).to_kind(Kind::Int64);
    let decoder_ids = Tensor::from_slice(&[0i64, 4, 0, 6])
        .view([2, 2])
        .to_device(device());
    let plain = Tape::plain;
    let (logits, (encoder, decoder)) = tch::no_grad(|| {
        let (encoded, encoder) = model.encode_traced(&ids, &mask, false);
        let (logits, decoder) = model.decode_traced(&decoder_ids, &encoded, &mask, false);
        (logits, (encoder, decoder))
    });
    let reference = tch::no_grad(|| model.forward(&ids, &mask, &decoder_ids, &plain(), false));
    assert!(max_diff(&logits, &reference) < 1e-5);
    // transformers' layout: the embeddings and each block's input, then the final output.
    assert_eq!((encoder.hidden.len(), encoder.attention.len()), (3, 2));
    assert_eq!((decoder.hidden.len(), decoder.attention.len()), (3, 2));
    assert_eq!(encoder.attention[0].size(), [2, 4, 4, 4]);
    let rows = encoder.attention[1].sum_dim_intlist(-1, false, Kind::Float);
    assert!(max_diff(&rows, &rows.ones_like()) < 1e-5, "probabilities");
    let future = decoder.attention[0]
        .get(0)
        .get(0)
        .get(0)
        .get(1)
        .double_value(&[]);
    assert_eq!(future, 0.0, "the decoder's first token sees no later one");
}

#[test]
fn clip_vision_matches_transformers_states_pooled_output_and_gradients() {
    let dir = fixture("clip-vision");
    let e = expected(&dir);
    let (arch, store) = runner::models::vit::load(&dir, device(), Kind::Float).unwrap();
    assert_eq!((arch.hidden_size, arch.patches()), (32, 16));
    let vit = runner::models::vit::Vit::new(&store, &arch, Kind::Float).unwrap();
    let states = vit.forward(&e["pixel_values"], false);
    let pooled = vit.pooled(&states).unwrap();
    assert!(max_diff(&states, &e["last_hidden_state"]) < 1e-5);
    assert!(max_diff(&pooled, &e["pooled"]) < 1e-5);
    ((&states * &e["loss_weights"]).sum(Kind::Float) + pooled.sum(Kind::Float)).backward();
    let mut checked = 0;
    for (name, grad) in grads(&store) {
        // transformers 5 names CLIPVisionModel's weights without `vision_model.`.
        let short = name.strip_prefix("vision_model.").unwrap_or(&name);
        let want = &e[&format!("grad.{short}")];
        assert!(max_diff(&grad, want) < 1e-4, "{name}");
        checked += 1;
    }
    assert_eq!(
        checked,
        store.len(),
        "every weight has a reference gradient"
    );
}

#[test]
fn qwen_vl_layout_with_fused_c_attn_matches_transformers_qwen2() {
    // Qwen-7B's layout is Qwen2's computation without grouped queries: fuse the Qwen2
    // fixture's q, k, v into c_attn and rename the rest, and transformers' logits and loss
    // must come out; the fused projection's gradient is the three projections' stacked.
    let name = "qwen2-mha";
    let (config, hf) = load(name, Kind::Float);
    let runner::models::hf_folder::HfConfig::Decoder { arch, .. } = config else {
        panic!("a decoder")
    };
    let arch = runner::plan::arch::DecoderArch {
        family: runner::plan::arch::Family::Qwen,
        intermediate_size: 2 * arch.intermediate_size,
        ..arch
    };
    let params = runner::plan::inventory::decoder(&arch);
    let mut store = ParamStore::zeros(&params, device(), Kind::Float);
    let get = |n: &str| hf.get(n).unwrap().detach();
    let mut sources: Vec<(String, Tensor)> = vec![
        (
            "transformer.wte.weight".into(),
            get("model.embed_tokens.weight"),
        ),
        ("transformer.ln_f.weight".into(), get("model.norm.weight")),
        ("lm_head.weight".into(), get("lm_head.weight")),
    ];
    for i in 0..arch.num_hidden_layers {
        let (q, t) = (format!("model.layers.{i}"), format!("transformer.h.{i}"));
        let fused = |what: &str| {
            Tensor::cat(
                &["q_proj", "k_proj", "v_proj"].map(|p| get(&format!("{q}.self_attn.{p}.{what}"))),
                0,
            )
        };
        sources.extend([
            (format!("{t}.attn.c_attn.weight"), fused("weight")),
            (format!("{t}.attn.c_attn.bias"), fused("bias")),
            (
                format!("{t}.attn.c_proj.weight"),
                get(&format!("{q}.self_attn.o_proj.weight")),
            ),
            (
                format!("{t}.mlp.w2.weight"),
                get(&format!("{q}.mlp.gate_proj.weight")),
            ),
            (
                format!("{t}.mlp.w1.weight"),
                get(&format!("{q}.mlp.up_proj.weight")),
            ),
            (
                format!("{t}.mlp.c_proj.weight"),
                get(&format!("{q}.mlp.down_proj.weight")),
            ),
            (
                format!("{t}.ln_1.weight"),
                get(&format!("{q}.input_layernorm.weight")),
            ),
            (
                format!("{t}.ln_2.weight"),
                get(&format!("{q}.post_attention_layernorm.weight")),
            ),
        ]);
    }
    assert_eq!(
        sources.len(),
        store.len(),
        "every Qwen-layout weight has a source"
    );
    for (n, t) in &sources {
        let group = params.iter().find(|p| &p.name == n).unwrap().group;
        store.insert(n, t.shallow_clone(), group);
    }
    let model = runner::models::llama::Llama::new(
        &store,
        &arch,
        runner::models::llama::DecoderOptions::default(),
        Kind::Float,
    )
    .unwrap();
    let e = expected(&fixture(name));
    let d = real_diff(&eval_logits(&model, &e), &e);
    assert!(d < BOUND, "logits differ by {d}");
    let loss = causal_lm_loss(&train_logits(&model, &e), &e["labels"]);
    assert!(max_diff(&loss.view([1]), &e["loss"]) < BOUND);
    loss.backward();
    let g = |n: &str| store.get(n).unwrap().grad();
    let stacked = Tensor::cat(
        &["q_proj", "k_proj", "v_proj"]
            .map(|p| e[&format!("grad.model.layers.1.self_attn.{p}.weight")].shallow_clone()),
        0,
    );
    assert!(max_diff(&g("transformer.h.1.attn.c_attn.weight"), &stacked) < BOUND);
    assert!(
        max_diff(
            &g("transformer.h.0.mlp.w2.weight"),
            &e["grad.model.layers.0.mlp.gate_proj.weight"]
        ) < BOUND
    );
}

#[test]
fn the_bert_sentence_encoder_matches_transformers() {
    let dir = fixture("bert-encoder");
    let e = expected(&dir);
    let bert = runner::models::bert::Bert::load(&dir, device()).unwrap();
    let (ids, mask) = (&e["input_ids"], &e["attention_mask"]);
    let states = tch::no_grad(|| bert.forward(ids, mask));
    let real = mask.unsqueeze(-1).to_kind(Kind::Float);
    assert!(max_diff(&(&states * &real), &(&e["states"] * &real)) < 1e-5);
    assert!(max_diff(&bert.embed_sentences(ids, mask), &e["pooled"]) < 1e-5);
}

//! LongLoRA's evaluations: the passkey prompt and its scoring, and sliding-window perplexity.

use runner::data::order::SplitMix64;
use runner::eval::{passkey, perplexity};
use runner::models::loss::causal_lm_loss;
use runner::models::Tape;
use tch::{Kind, Tensor};

use crate::models::{llama, load};

#[test]
fn the_passkey_prompt_is_landmark_attentions_and_fits_the_length() {
    let (text, key) = passkey::prompt(200, &mut SplitMix64::new(3));
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines.len(), 5);
    assert!(
        lines[0].starts_with("There is an important info hidden inside a lot of irrelevant text.")
    );
    assert_eq!(
        lines[1].len() + lines[3].len(),
        200,
        "the filler is split around the key"
    );
    assert_eq!(
        lines[2],
        format!("The pass key is {key}. Remember it. {key} is the pass key.")
    );
    assert_eq!(lines[4], "What is the pass key? The pass key is");
    assert!((1..=50_000).contains(&key));
    assert_eq!(
        passkey::first_number(" 4821. The pass key is 17"),
        Some(4821)
    );
    assert_eq!(passkey::first_number("no digits"), None);
}

#[test]
fn sliding_window_perplexity_weights_each_window_by_its_predictions() {
    let (config, store) = load("llama-gqa-rope", Kind::Float);
    let model = llama(&config, &store, Kind::Float);
    let tokens: Vec<i64> = (0..20).map(|i| (i * 7 + 3) % 96).collect();
    let loss_of = |start: usize, len: usize| {
        let w = Tensor::from_slice(&tokens[start..start + len]).view([1, -1]);
        tch::no_grad(|| {
            causal_lm_loss(&model.forward(&w, None, &Tape::plain(), false), &w).double_value(&[])
        })
    };
    // Windows of 8 every 6 tokens over 20: starts 0, 6, 12; each predicts 7 tokens.
    let expected = ((loss_of(0, 8) + loss_of(6, 8) + loss_of(12, 8)) * 7.0 / 21.0).exp();
    let got = perplexity::sliding_window(&model, &tokens, 8, 6).unwrap();
    // fp32 rounding apart: the windows' token losses come from the fused head (no logits).
    assert!(
        (got - expected).abs() < 1e-6 * expected,
        "{got} vs {expected}"
    );
    assert_eq!(perplexity::sliding_window(&model, &tokens[..5], 8, 6), None);
}

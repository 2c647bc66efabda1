//! Cached generation against recomputing the whole sequence at every step, and the sampler.

use runner::models::generate::{self, pick, GenerateOptions, Strategy};
use runner::models::{fid, Tape};
use tch::{Kind, Tensor};

use super::{expected, fixture, llama, load, rng_lock, t5};

fn options(strategy: Strategy, eos: Option<i64>) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: 6,
        strategy,
        eos,
        pad: 0,
        seed: 1,
    }
}

#[test]
fn decoder_cache_gives_the_tokens_of_full_recomputation_with_left_padding() {
    let (config, store) = load("mistral-window", Kind::Float);
    let model = llama(&config, &store, Kind::Float);
    let e = expected(&fixture("mistral-window"));
    // Row 2 is left-padded by two tokens; the window (4) is shorter than the sequence.
    let prompt = e["gen_input_ids"].copy();
    let mask = Tensor::ones_like(&prompt);
    let _ = mask.get(1).narrow(0, 0, 2).fill_(0);
    let cached = generate::decoder_only(
        &model,
        &prompt,
        Some(&mask),
        &options(Strategy::Greedy, None),
    );
    let mut ids = prompt;
    let mut full_mask = mask;
    let mut tokens = Vec::new();
    tch::no_grad(|| {
        for _ in 0..6 {
            let logits = model.forward(&ids, Some(&full_mask), &Tape::plain(), false);
            let next = logits
                .select(1, ids.size()[1] - 1)
                .argmax(-1, false)
                .view([-1, 1]);
            ids = Tensor::cat(&[&ids, &next], 1);
            full_mask = Tensor::cat(&[&full_mask, &next.ones_like()], 1);
            tokens.push(next);
        }
    });
    assert_eq!(cached, Tensor::cat(&tokens, 1));
}

#[test]
fn encoder_decoder_cache_gives_the_tokens_of_full_recomputation() {
    let (config, store) = load("t5-v1_1", Kind::Float);
    let model = t5(&config, &store, Kind::Float);
    let e = expected(&fixture("t5-v1_0"));
    let (ids, mask) = (&e["fid_input_ids"], &e["fid_attention_mask"]);
    let (encoded, joined) = tch::no_grad(|| fid::encode(&model, ids, mask, &Tape::plain(), false));
    let cached =
        generate::encoder_decoder(&model, &encoded, &joined, &options(Strategy::Greedy, None));
    let mut dec = Tensor::zeros([2, 1], (Kind::Int64, tch::Device::Cpu));
    tch::no_grad(|| {
        for _ in 0..6 {
            let logits = model.decode(&dec, &encoded, &joined, &Tape::plain(), false);
            let next = logits
                .select(1, dec.size()[1] - 1)
                .argmax(-1, false)
                .view([-1, 1]);
            dec = Tensor::cat(&[&dec, &next], 1);
        }
    });
    assert_eq!(cached, dec.narrow(1, 1, 6));
}

#[test]
fn rows_stop_at_eos_and_are_padded_after() {
    let (config, store) = load("llama-gqa-rope", Kind::Float);
    let model = llama(&config, &store, Kind::Float);
    let e = expected(&fixture("llama-gqa-rope"));
    let prompt = &e["gen_input_ids"];
    let greedy = generate::decoder_only(&model, prompt, None, &options(Strategy::Greedy, None));
    // Declare row 0's third token the end of sequence.
    let eos = greedy.int64_value(&[0, 2]);
    let stopped =
        generate::decoder_only(&model, prompt, None, &options(Strategy::Greedy, Some(eos)));
    let n = stopped.size()[1];
    for r in 0..2 {
        let (ours, free) = (stopped.get(r), greedy.get(r));
        match (0..n).find(|&i| free.int64_value(&[i]) == eos) {
            Some(i) => {
                assert_eq!(
                    ours.narrow(0, 0, i + 1),
                    free.narrow(0, 0, i + 1),
                    "row {r}"
                );
                let rest = ours.narrow(0, i + 1, n - i - 1);
                assert_eq!(
                    rest.ne(0).sum(Kind::Int64).int64_value(&[]),
                    0,
                    "row {r} is padded after eos"
                );
            }
            None => assert_eq!(ours, free.narrow(0, 0, n), "row {r}"),
        }
    }
    assert!(n <= 6);
}

#[test]
fn nucleus_sampling_keeps_the_smallest_set_reaching_top_p() {
    let _rng = rng_lock();
    let logits = Tensor::from_slice(&[2.0f32, 1.0, 0.5, -3.0]).view([1, 4]);
    // top_p → 0 (or 0 itself) leaves only the most likely token: greedy.
    for (seed, top_p) in [(0, 1e-9), (1, 1e-9), (2, 0.0), (3, 0.0)] {
        tch::manual_seed(seed);
        let t = pick(
            &logits,
            Strategy::Sample {
                temperature: 1.0,
                top_p,
            },
        );
        assert_eq!(t.int64_value(&[0]), 0);
    }
    // p = softmax = [0.6285, 0.2312, 0.1402, 0.0001]: top_p 0.8 keeps tokens 0 and 1 only.
    tch::manual_seed(0);
    let draws: Vec<i64> = (0..400)
        .map(|_| {
            pick(
                &logits,
                Strategy::Sample {
                    temperature: 1.0,
                    top_p: 0.8,
                },
            )
            .int64_value(&[0])
        })
        .collect();
    assert!(draws.iter().all(|&t| t == 0 || t == 1));
    assert!(draws.contains(&1));
    // A seed fixes the samples.
    let (config, store) = load("llama-gqa-rope", Kind::Float);
    let model = llama(&config, &store, Kind::Float);
    let e = expected(&fixture("llama-gqa-rope"));
    let sample = Strategy::Sample {
        temperature: 1.5,
        top_p: 0.95,
    };
    let a = generate::decoder_only(&model, &e["gen_input_ids"], None, &options(sample, None));
    let b = generate::decoder_only(&model, &e["gen_input_ids"], None, &options(sample, None));
    assert_eq!(a, b);
}

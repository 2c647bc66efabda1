//! The data pipeline: exact token and label layouts, padding, epoch order, length grouping,
//! packing.

use runner::data::batch::{collate, Example};
use runner::data::instruction::{self, Item};
use runner::data::loader::group_by_length;
use runner::data::order::epoch_order;
use runner::data::packing;
use runner::data::tokenizer::Tokenizer;
use runner::plan::kinds::longlora::{Side, Template};
use tch::Tensor;

fn tokenizer() -> Tokenizer {
    Tokenizer::load("data/tiny/longlora/tokenizer.json".as_ref()).unwrap()
}

fn item(input: &str) -> Item {
    Item {
        instruction: "What is the pass key?".into(),
        input: input.into(),
        output: "The pass key is 42.".into(),
    }
}

#[test]
fn an_instruction_example_is_prompt_output_eos_with_loss_on_output_and_eos_only() {
    let tok = tokenizer();
    let eos = tok.id("</s>").unwrap();
    let it = item("The grass is green.");
    let prompt = instruction::prompt(Template::Llama2Chat, &it);
    assert!(prompt.starts_with("[INST] <<SYS>>\nYou are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe.  Your answers"));
    assert!(prompt.ends_with("<</SYS>> \n\n What is the pass key? \nThe grass is green. [/INST]"));
    let no_input = instruction::prompt(Template::Llama2Chat, &item(""));
    assert_eq!(no_input, "[INST]What is the pass key?[/INST]");

    // As LongLoRA's preprocess: prompt and output tokenized as one text, the first
    // len(tokenized prompt) labels masked, EOS appended.
    let e = instruction::encode(&tok, Template::Llama2Chat, &it, eos, 1000).unwrap();
    let source = tok.encode(&prompt, true).unwrap();
    let mut ids = tok
        .encode(&format!("{prompt}The pass key is 42."), true)
        .unwrap();
    assert_eq!(
        ids[0],
        tok.id("<s>").unwrap(),
        "BOS from the post-processor"
    );
    ids.push(eos);
    assert_eq!(e.ids, ids);
    let mut labels = ids.clone();
    labels[..source.len()].fill(-100);
    assert_eq!(e.labels, labels);
    // The output's tokens (and EOS) are what the loss sees.
    let answer: Vec<i64> = e.labels.iter().copied().filter(|&l| l != -100).collect();
    assert_eq!(
        tok.decode(&answer, true).unwrap().trim(),
        "The pass key is 42."
    );

    // Truncation keeps the first max_length tokens of both.
    let short = instruction::encode(&tok, Template::Llama2Chat, &it, eos, 10).unwrap();
    assert_eq!(short.ids, ids[..10]);
    assert!(short.labels.iter().all(|&l| l == -100));
}

#[test]
fn batches_pad_to_the_longest_left_or_right_with_mask_and_ignored_labels() {
    let a = Example {
        ids: vec![5, 6, 7],
        labels: vec![-100, 6, 7],
    };
    let b = Example {
        ids: vec![8],
        labels: vec![8],
    };
    let right = collate(&[&a, &b], 3, Side::Right, 4);
    assert_eq!(
        right.input_ids,
        Tensor::from_slice(&[5i64, 6, 7, 3, 8, 3, 3, 3]).view([2, 4])
    );
    assert_eq!(
        right.attention_mask,
        Tensor::from_slice(&[1i64, 1, 1, 0, 1, 0, 0, 0]).view([2, 4])
    );
    assert_eq!(
        right.labels,
        Tensor::from_slice(&[-100i64, 6, 7, -100, 8, -100, -100, -100]).view([2, 4])
    );
    let left = collate(&[&a, &b], 3, Side::Left, 1);
    assert_eq!(
        left.input_ids,
        Tensor::from_slice(&[5i64, 6, 7, 3, 3, 8]).view([2, 3])
    );
    assert_eq!(
        left.attention_mask,
        Tensor::from_slice(&[1i64, 1, 1, 0, 0, 1]).view([2, 3])
    );
    assert_eq!(right.tokens(), 4);
}

#[test]
fn the_epoch_order_is_a_fixed_permutation_of_seed_and_epoch() {
    let a = epoch_order(10, 42, 0);
    assert_eq!(a, epoch_order(10, 42, 0));
    assert_ne!(a, epoch_order(10, 42, 1));
    assert_ne!(a, epoch_order(10, 43, 0));
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    // SplitMix64 and Fisher–Yates are fully specified: these orders were computed by an
    // independent Python transcription of both, and must never change (resume relies on it).
    assert_eq!(epoch_order(6, 1, 0), [0, 1, 3, 2, 4, 5]);
    assert_eq!(a, [0, 9, 5, 8, 6, 4, 7, 2, 1, 3]);
}

#[test]
fn length_grouping_sorts_within_megabatches_and_keeps_every_example() {
    let examples: Vec<Example> = (0..250)
        .map(|i| Example {
            ids: vec![0; 1 + (i * 37) % 101],
            labels: vec![],
        })
        .collect();
    let order = epoch_order(examples.len(), 7, 0);
    let lengths: Vec<usize> = examples.iter().map(|e| e.ids.len()).collect();
    let grouped = group_by_length(&order, &lengths, 2);
    let mut all = grouped.clone();
    all.sort();
    assert_eq!(all, (0..250).collect::<Vec<_>>());
    // The longest example of all comes first.
    let max = lengths.iter().max().unwrap();
    assert_eq!(lengths[grouped[0]], *max);
    for (m, (chunk, original)) in grouped.chunks(100).zip(order.chunks(100)).enumerate() {
        let ls: Vec<usize> = chunk.iter().map(|&i| lengths[i]).collect();
        // Sorted longest first, apart from the one swapped example at the head of a megabatch.
        assert!(
            ls[1..].windows(2).all(|w| w[0] >= w[1]),
            "megabatch {m} is sorted"
        );
        let mut a = chunk.to_vec();
        let mut b = original.to_vec();
        a.sort();
        b.sort();
        let differing = a.iter().filter(|i| !b.contains(i)).count();
        assert!(
            differing <= 1,
            "a megabatch keeps its own examples but for the swapped one"
        );
    }
}

#[test]
fn texts_pack_into_full_blocks_joined_by_eos() {
    let tok = tokenizer();
    let eos = tok.id("</s>").unwrap();
    let texts = vec![
        "The grass is green.".to_string(),
        "The sky is blue. Here we go.".to_string(),
    ];
    let mut stream = Vec::new();
    for t in &texts {
        stream.extend(tok.encode(t, true).unwrap());
        stream.push(eos);
    }
    let blocks = packing::pack(&tok, &texts, eos, 5).unwrap();
    assert_eq!(blocks.len(), stream.len() / 5);
    for (i, b) in blocks.iter().enumerate() {
        assert_eq!(b.ids, stream[i * 5..i * 5 + 5]);
        assert_eq!(b.labels, b.ids, "the loss covers every token");
    }
}

/// A word-level tokenizer with Qwen-VL's special tokens and a newline token.
fn chatml_tokenizer(dir: &std::path::Path) -> runner::data::tokenizer::Tokenizer {
    let words = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<img>",
        "</img>",
        "<imgpad>",
        "\n",
        "system",
        "user",
        "assistant",
        "You",
        "are",
        "a",
        "helpful",
        "assistant.",
        "Picture:",
        "Answer:",
        "red",
        "Ask",
        "about",
        "it.",
        "What",
        "color",
        "is",
        "the",
        "square?",
        "[UNK]",
    ];
    let vocab: serde_json::Map<String, serde_json::Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = words[..7]
        .iter()
        .enumerate()
        .map(|(i, w)| {
            serde_json::json!({"id": i, "content": w, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": *w != "\n"})
        })
        .collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, json.to_string()).unwrap();
    runner::data::tokenizer::Tokenizer::load(&path).unwrap()
}

#[test]
fn a_multimodal_conversation_has_qwen_vls_tokens_and_labels() {
    use runner::data::chatml::{encode, Specials, Turn};
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = chatml_tokenizer(dir.path());
    let s = Specials::of(&tokenizer).unwrap();
    let turns = [
        Turn {
            from: "user".into(),
            value: "Picture: <img>shapes/7.png</img>\nAnswer: red\nAsk about it.".into(),
        },
        Turn {
            from: "assistant".into(),
            value: "What color is the square?".into(),
        },
    ];
    let e = encode(
        &tokenizer,
        &s,
        "You are a helpful assistant.",
        &turns,
        3,
        100,
    )
    .unwrap();
    let shown: Vec<String> = e
        .example
        .ids
        .iter()
        .zip(&e.example.labels)
        .map(|(&id, &label)| {
            let token = tokenizer.decode(&[id], false).unwrap().replace('\n', "\\n");
            match label {
                -100 => format!("({token})"),
                l => {
                    assert_eq!(l, id, "a supervised label is the token itself");
                    token
                }
            }
        })
        .collect();
    // (masked) tokens in parentheses: only im_start, im_end and the newline after it outside
    // the reply; the reply, its im_end and newline; image placeholders masked.
    let expected = [
        "<|im_start|>",
        "(system)",
        "(\\n)",
        "(You)",
        "(are)",
        "(a)",
        "(helpful)",
        "(assistant.)",
        "<|im_end|>",
        "\\n",
        "<|im_start|>",
        "(user)",
        "(\\n)",
        "(Picture:)",
        "(<img>)",
        "(<imgpad>)",
        "(<imgpad>)",
        "(<imgpad>)",
        "(</img>)",
        "(\\n)",
        "(Answer:)",
        "(red)",
        "(\\n)",
        "(Ask)",
        "(about)",
        "(it.)",
        "<|im_end|>",
        "\\n",
        "<|im_start|>",
        "(assistant)",
        "(\\n)",
        "What",
        "color",
        "is",
        "the",
        "square?",
        "<|im_end|>",
        "\\n",
    ];
    assert_eq!(shown, expected);
    assert_eq!(e.images, ["shapes/7.png"]);

    // A limit inside the image drops the image whole.
    let cut = encode(
        &tokenizer,
        &s,
        "You are a helpful assistant.",
        &turns,
        3,
        17,
    )
    .unwrap();
    assert_eq!(cut.example.ids.len(), 14, "cut before <img>");
    assert!(cut.images.is_empty());
    let wrong = [Turn {
        from: "bot".into(),
        value: "hi".into(),
    }];
    let message = encode(&tokenizer, &s, "x", &wrong, 3, 100)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("`bot`"), "{message}");
}

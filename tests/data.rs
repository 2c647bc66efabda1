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

    // Scoring a reply alone (the answering task's options): only its own five tokens stay
    // labelled; a reply cut by the limit is reported.
    let reply = tokenizer
        .encode("What color is the square?", false)
        .unwrap();
    let mut alone = e.example.clone();
    assert!(runner::data::chatml::label_last_reply_only(
        &mut alone, &reply, &s
    ));
    let labelled: Vec<usize> = (0..alone.labels.len())
        .filter(|&i| alone.labels[i] != -100)
        .collect();
    let n = alone.ids.len();
    assert_eq!(labelled, (n - 7..n - 2).collect::<Vec<_>>());
    let mut short = encode(
        &tokenizer,
        &s,
        "You are a helpful assistant.",
        &turns,
        3,
        n - 1,
    )
    .unwrap()
    .example;
    assert!(!runner::data::chatml::label_last_reply_only(
        &mut short, &reply, &s
    ));

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

#[test]
fn exemplars_rank_by_answer_plus_question_similarity_above_the_threshold() {
    use runner::data::exemplars::{cosine, retrieve, Tfidf};
    let items = [
        ("red", "What color is the square?"),
        ("red", "What color is the circle?"),
        ("blue", "What color is the square?"),
        ("three", "How many triangles are there?"),
    ];
    let corpus: Vec<&str> = items.iter().flat_map(|(a, q)| [*a, *q]).collect();
    let tfidf = Tfidf::fit(&corpus);
    // By hand: 8 texts; idf = ln(9 / (1 + df)) + 1, so what/color/is/the (df 3) get
    // ln(9/4) + 1, square (df 2) ln 3 + 1, circle (df 1) ln 4.5 + 1; the two questions share
    // four words: cos = 4a² / (√(4a² + b²) · √(4a² + c²)) = 0.711707…
    let cos01 = cosine(&tfidf.embed(items[0].1), &tfidf.embed(items[1].1));
    assert!((cos01 - 0.711_707_272_478_422_4).abs() < 1e-12, "{cos01}");
    let vectors: Vec<Vec<_>> = items
        .iter()
        .map(|(a, q)| vec![tfidf.embed(a), tfidf.embed(q)])
        .collect();
    let not_itself = |q: usize, p: usize| q == p;
    // Item 0: item 1 (same answer, similar question: 1.71), item 2 (same question: 1.0),
    // item 3 (nothing shared: 0).
    let ranked = retrieve(&vectors[..1], &vectors, 0.5, 5, not_itself);
    let order: Vec<usize> = ranked[0].iter().map(|e| e.index).collect();
    assert_eq!(order, [1, 2]);
    assert!((ranked[0][0].score - (1.0 + cos01)).abs() < 1e-12);
    // CoE's threshold (2 × 0.6) keeps only the first; top_k cuts.
    let strict = retrieve(&vectors[..1], &vectors, 1.2, 5, not_itself);
    assert_eq!(strict[0].len(), 1);
    assert_eq!(
        retrieve(&vectors[..1], &vectors, 0.5, 1, not_itself)[0].len(),
        1
    );
}

#[test]
fn the_task_mixture_draws_tasks_in_their_proportions() {
    use runner::data::mixture::{probabilities, Mixture};
    use runner::plan::kinds::coe::Mixing;
    let weights = [2.0, 1.0, 1.0, 0.0];
    assert_eq!(
        probabilities(&weights, Mixing::Proportional, 1.0),
        [0.5, 0.25, 0.25, 0.0]
    );
    // p ∝ w^(1/T): T = 2 gives √2 : 1 : 1.
    let t2 = probabilities(&weights, Mixing::Temperature, 2.0);
    let s = 2f64.sqrt() + 2.0;
    assert!((t2[0] - 2f64.sqrt() / s).abs() < 1e-12 && (t2[1] - 1.0 / s).abs() < 1e-12);
    let mut mixture = Mixture::new(&weights, Mixing::Proportional, 1.0, 7);
    let mut counts = [0usize; 4];
    let n = 40_000;
    for _ in 0..n {
        counts[mixture.next_task()] += 1;
    }
    assert_eq!(counts[3], 0, "a zero weight is never drawn");
    for (task, want) in [(0, 0.5), (1, 0.25), (2, 0.25)] {
        let share = counts[task] as f64 / n as f64;
        assert!((share - want).abs() < 0.01, "task {task}: {share}");
    }
    let again: Vec<usize> = {
        let mut m = Mixture::new(&weights, Mixing::Proportional, 1.0, 7);
        (0..10).map(|_| m.next_task()).collect()
    };
    let mut m = Mixture::new(&weights, Mixing::Proportional, 1.0, 7);
    assert_eq!(
        again,
        (0..10).map(|_| m.next_task()).collect::<Vec<_>>(),
        "seeded"
    );
}

#[test]
fn scienceqa_prompts_carry_the_scene_what_is_given_and_the_exemplar() {
    use runner::data::scienceqa::{conversation, Item, Task};
    let item = |id: &str, q: &str, a: &str| -> Item {
        serde_json::from_value(serde_json::json!({
            "id": id, "image": format!("{id}.png"), "question": q, "answer": a,
            "choices": ["red", "blue", a], "distractors": ["red", "blue"], "hint": "",
            "lecture": "Lecture: colors.", "solution": "Solution: it is."
        }))
        .unwrap()
    };
    let target = item("t", "What color is it?", "green");
    let exemplar = item("e", "Which color?", "yellow");
    let answer = conversation(Task::Answer, &target, Some(&exemplar));
    assert_eq!(
        answer[0].value,
        "Picture: <img>t.png</img>\nQuestion: What color is it?\nOptions: (A) red (B) blue (C) green\n\
         Refer to the following example, answer with the option's letter and text from the given choices.\n\
         Example:\nPicture: <img>e.png</img>\nQuestion: Which color?\nOptions: (A) red (B) blue (C) yellow\nAnswer: (C) yellow"
    );
    assert_eq!(answer[1].value, "(C) green");
    let question = conversation(Task::Question, &target, None);
    assert_eq!(
        question[0].value,
        "Picture: <img>t.png</img>\nAnswer: green\ngenerate a question based on the above picture, context and the corresponding answer."
    );
    assert_eq!(question[1].value, "What color is it?");
    assert_eq!(
        conversation(Task::Distractor, &target, None)[1].value,
        "(1) red\n(2) blue"
    );
    assert_eq!(
        conversation(Task::Rationale, &target, None)[1].value,
        "Lecture: colors. Solution: it is."
    );
}

#[test]
fn the_training_sequence_follows_task_and_category_weights() {
    use runner::data::mixture::{training_sequence, Mixture};
    use runner::plan::kinds::coe::Mixing;
    // Items 0..6: categories a = {0, 1, 2}, b = {3, 4}, c = {5}; only c weighs anything.
    let groups = vec![(0.0, vec![0, 1, 2]), (0.0, vec![3, 4]), (1.0, vec![5])];
    let mut tasks = Mixture::new(&[1.0, 1.0], Mixing::Proportional, 1.0, 3);
    let drawn = training_sequence(&mut tasks, &groups, 200, 3);
    assert!(drawn.iter().all(|&(_, item)| item == 5), "only category c");
    let first = drawn.iter().filter(|(task, _)| *task == 0).count();
    assert!(
        (80..=120).contains(&first),
        "two equal tasks: {first} of 200"
    );
    // Weights 1 : 3 between a and b.
    let groups = vec![(1.0, vec![0, 1, 2]), (3.0, vec![3, 4])];
    let mut tasks = Mixture::new(&[1.0], Mixing::Proportional, 1.0, 3);
    let drawn = training_sequence(&mut tasks, &groups, 8000, 3);
    let in_b = drawn.iter().filter(|(_, item)| *item >= 3).count() as f64 / 8000.0;
    assert!((in_b - 0.75).abs() < 0.02, "{in_b}");
    // One group of every item: each task sees its items in a seeded order, all of them per cycle.
    let all = vec![(1.0, (0..6).collect::<Vec<usize>>())];
    let mut tasks = Mixture::new(&[1.0], Mixing::Proportional, 1.0, 9);
    let drawn = training_sequence(&mut tasks, &all, 6, 9);
    let mut items: Vec<usize> = drawn.iter().map(|&(_, i)| i).collect();
    items.sort();
    assert_eq!(items, (0..6).collect::<Vec<_>>());
    let mut again = Mixture::new(&[1.0], Mixing::Proportional, 1.0, 9);
    assert_eq!(training_sequence(&mut again, &all, 6, 9), drawn, "seeded");
}

#[test]
fn error_rates_are_one_minus_accuracy_per_category_rounded_as_the_data_engine_writes_them() {
    use runner::data::categories::error_rates;
    let outcome = |c: &str, right: bool| (c.to_string(), right);
    let rates = error_rates(&[
        outcome("color", true),
        outcome("color", false),
        outcome("color", false),
        outcome("count", true),
        outcome("shape", false),
    ]);
    // color: 2 wrong of 3 = 0.6667 → 0.667; count: 0 of 1; shape: 1 of 1.
    let want: Vec<(String, f64)> = vec![
        ("color".into(), 0.667),
        ("count".into(), 0.0),
        ("shape".into(), 1.0),
    ];
    assert_eq!(rates.into_iter().collect::<Vec<_>>(), want);
    // 1 wrong of 16 = 0.0625 exactly: Python's round(0.0625, 3) is 0.062 (ties to even).
    let mut sixteen = vec![outcome("size", true); 15];
    sixteen.push(outcome("size", false));
    assert_eq!(error_rates(&sixteen)["size"], 0.062);
}

#[test]
fn category_weights_group_items_and_draw_categories_in_proportion() {
    use runner::data::categories::{read_weights, weighted_groups};
    use runner::data::mixture::Mixture;
    use runner::plan::kinds::coe::Mixing;
    let items: Vec<runner::data::scienceqa::Item> = serde_json::from_value(serde_json::json!([
        {"id": "a", "question": "q", "answer": "x", "category": "color"},
        {"id": "b", "question": "q", "answer": "x", "category": "shape"},
        {"id": "c", "question": "q", "answer": "x", "category": "color"},
        {"id": "d", "question": "q", "answer": "x", "category": "count"},
    ]))
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("error_rates.json");
    // count is not named: it weighs 1, as the DataEngine's sampler defaults it.
    std::fs::write(&path, r#"{"color": 0.6, "shape": 0.2, "gone": 1.0}"#).unwrap();
    let weights = read_weights(path.to_str().unwrap()).unwrap();
    let groups = weighted_groups(&items, "category", &weights, "items.json").unwrap();
    assert_eq!(
        groups,
        vec![(0.6, vec![0, 2]), (1.0, vec![3]), (0.2, vec![1])],
        "sorted by name: color, count, shape"
    );
    let w: Vec<f64> = groups.iter().map(|(w, _)| *w).collect();
    let mut sampler = Mixture::new(&w, Mixing::Proportional, 1.0, 11);
    let mut counts = [0usize; 3];
    let n = 36_000;
    for _ in 0..n {
        counts[sampler.next_task()] += 1;
    }
    for (g, want) in [(0, 0.6 / 1.8), (1, 1.0 / 1.8), (2, 0.2 / 1.8)] {
        let share = counts[g] as f64 / n as f64;
        assert!((share - want).abs() < 0.01, "group {g}: {share} vs {want}");
    }
    // Bad input: the error names the file and the key.
    std::fs::write(&path, r#"{"color": -1}"#).unwrap();
    let err = read_weights(path.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("error_rates.json") && err.contains("`color`"),
        "{err}"
    );
    let unlabelled: Vec<runner::data::scienceqa::Item> =
        serde_json::from_value(serde_json::json!([{"id": "z", "question": "q", "answer": "x"}]))
            .unwrap();
    let err = weighted_groups(&unlabelled, "category", &weights, "items.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains("items.json: item z: no `category`"), "{err}");
}

#[test]
fn images_load_as_clip_normalised_pixels() {
    use runner::data::images::{load, MEAN, STD};
    // coe-0000.png: two yellow (230, 200, 30) triangles on white, 32 × 32.
    let pixels = load(
        std::path::Path::new("data/tiny/coe/images/coe-0000.png"),
        32,
    )
    .unwrap();
    assert_eq!(pixels.size(), [3, 32, 32]);
    let value = |c: i64, y: i64, x: i64| pixels.double_value(&[c, y, x]);
    for c in 0..3 {
        let white = (1.0 - MEAN[c as usize]) / STD[c as usize];
        assert!((value(c, 0, 0) - white).abs() < 1e-5, "a white corner");
    }
    let yellow = [230.0, 200.0, 30.0].map(|v: f64| v / 255.0);
    let is_yellow = |y: i64, x: i64| {
        (0..3).all(|c| {
            (value(c, y, x) - (yellow[c as usize] - MEAN[c as usize]) / STD[c as usize]).abs()
                < 1e-5
        })
    };
    let yellow_pixels = (0..32)
        .flat_map(|y| (0..32).map(move |x| (y, x)))
        .filter(|&(y, x)| is_yellow(y, x))
        .count();
    assert!(yellow_pixels > 20, "{yellow_pixels} yellow pixels");
    // Another size is resized; a missing file names itself.
    assert_eq!(
        load(
            std::path::Path::new("data/tiny/coe/images/coe-0000.png"),
            16
        )
        .unwrap()
        .size(),
        [3, 16, 16]
    );
    let missing = format!(
        "{:#}",
        load(std::path::Path::new("nowhere.png"), 32).err().unwrap()
    );
    assert!(
        missing.contains("nowhere.png") && missing.contains("hint:"),
        "{missing}"
    );
}

#[test]
fn the_tiny_coe_tokenizer_has_chatmls_tokens() {
    let tokenizer = runner::data::tokenizer::Tokenizer::load(std::path::Path::new(
        "data/tiny/coe/tokenizer.json",
    ))
    .unwrap();
    let s = runner::data::chatml::Specials::of(&tokenizer).unwrap();
    assert_eq!(
        (s.im_start, s.im_end, s.img_start, s.img_end, s.img_pad),
        (1, 2, 3, 4, 5)
    );
}

fn qa_item(json: &str) -> runner::data::qa_expert::Item {
    serde_json::from_str(json).unwrap()
}

const TWO_HOP: &str = r#"{"src": "musicque.json", "question": "When was the museum known for its pear cider founded?",
  "final_answer": " Bouxglain was founded in 1595.\nFinal answer: 1595. ",
  "sub_questions": [
    {"question": "Which museum is known for its \"pear\" cider?", "paragraph": "Bouxglain. It is known for its pear cider.",
     "long_answer": " The context says that it is Bouxglain. "},
    {"question": "When was Bouxglain founded?", "paragraph": "Bouxglain. Bouxglain was founded in 1595.",
     "long_answer": "According to the context, Bouxglain was founded in 1595."}]}"#;

/// The text QA-Expert's prompt_utils.py renders for a two-hop item (khaimt/qa_expert 88c788a),
/// with the whitespace around the markers gone as transformers 4.34's added tokens strip it.
#[test]
fn a_qa_expert_dialogue_renders_as_prompt_utils_with_marker_whitespace_stripped() {
    use runner::data::qa_expert::render;
    let (text, targets) = render(&qa_item(TWO_HOP));
    let system = "This is a conversation between user and an artificial intelligence assistant. User will ask question and the assistant will use the function: `retrieve` to retrieve the most relevant context to answer the question. For complex question, assistant might need to use the function `retrieve` multiple times.\n`retrieve`: this function is useful for retrieving the most relevant information given a query. The only parameter of this function is: query(str): the query for retrieving relevant content.";
    let expected = format!(
        "system: {system}<|eot|>user: When was the museum known for its pear cider founded?<|eot|>\
         assistant:<|bof|>retrieve:\n{{\"query\": \"Which museum is known for its \\\"pear\\\" cider?\"}}<|eof|><|eot|>\
         retrieved context: Bouxglain. It is known for its pear cider.<|eot|>\
         assistant: The context says that it is Bouxglain.<|bof|>retrieve:\n{{\"query\": \"When was Bouxglain founded?\"}}<|eof|><|eot|>\
         retrieved context: Bouxglain. Bouxglain was founded in 1595.<|eot|>\
         assistant: According to the context, Bouxglain was founded in 1595.\nSummary: Bouxglain was founded in 1595.\nFinal answer: 1595.<|eot|>"
    );
    assert_eq!(text, expected);
    let supervised: Vec<&str> = targets.iter().map(|r| &text[r.clone()]).collect();
    assert_eq!(
        supervised,
        [
            "<|bof|>retrieve:\n{\"query\": \"Which museum is known for its \\\"pear\\\" cider?\"}<|eof|><|eot|>",
            " The context says that it is Bouxglain.<|bof|>retrieve:\n{\"query\": \"When was Bouxglain founded?\"}<|eof|><|eot|>",
            " According to the context, Bouxglain was founded in 1595.\nSummary: Bouxglain was founded in 1595.\nFinal answer: 1595.<|eot|>",
        ]
    );
}

#[test]
fn a_single_hop_item_calls_retrieve_with_its_own_question_and_answers_unstripped() {
    let item = qa_item(
        r#"{"question": "Where is X?", "final_answer": "X is in Y. ", "sub_questions": [
            {"question": "ignored", "paragraph": "X. X is in Y.", "long_answer": "unused"}]}"#,
    );
    let (text, targets) = runner::data::qa_expert::render(&item);
    assert!(text.ends_with(
        "user: Where is X?<|eot|>assistant:<|bof|>retrieve:\n{\"query\": \"Where is X?\"}<|eof|><|eot|>\
         retrieved context: X. X is in Y.<|eot|>assistant: X is in Y.<|eot|>"
    ), "{text}");
    assert_eq!(targets.len(), 2);
}

#[test]
fn qa_expert_labels_cover_the_assistant_turns_and_an_empty_item_is_refused_with_its_place() {
    use runner::data::qa_expert;
    let tok = Tokenizer::load(std::path::Path::new("data/tiny/qa_expert/tokenizer.json")).unwrap();
    let item = qa_item(TWO_HOP);
    let e = qa_expert::encode(&tok, &item, usize::MAX).unwrap();
    assert_eq!(e.ids[0], tok.id("<s>").unwrap(), "BOS first");
    assert_eq!(*e.ids.last().unwrap(), tok.id("<|eot|>").unwrap(), "no EOS");
    // The supervised tokens decode to the assistant turns, each through its <|eot|>.
    let eot = tok.id("<|eot|>").unwrap();
    let mut turns = Vec::new();
    let mut current = Vec::new();
    for (&id, &label) in e.ids.iter().zip(&e.labels) {
        if label != runner::models::loss::IGNORE {
            assert_eq!(label, id);
            current.push(id);
            if id == eot {
                turns.push(tok.decode(&current, false).unwrap());
                current.clear();
            }
        }
    }
    assert_eq!(turns.len(), 3, "{turns:?}");
    assert!(
        turns[0].starts_with("<|bof|>") && turns[0].ends_with("<|eof|><|eot|>"),
        "{}",
        turns[0]
    );
    assert!(
        turns[2].contains("Summary: Bouxglain was founded in 1595."),
        "{}",
        turns[2]
    );
    // Truncation keeps the labels up to the cut.
    let cut = qa_expert::encode(&tok, &item, 40).unwrap();
    assert_eq!((cut.ids.len(), &cut.labels[..]), (40, &e.labels[..40]));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(
        &path,
        r#"[{"question": "q", "final_answer": "a", "sub_questions": []}]"#,
    )
    .unwrap();
    let err = format!("{:#}", qa_expert::read(&path).unwrap_err());
    assert!(
        err.contains("bad.json (item 1): sub_questions is empty"),
        "{err}"
    );
}

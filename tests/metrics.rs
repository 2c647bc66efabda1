//! Exact match and token F1 against a literal transcription of the official SQuAD v1.1
//! evaluation script, from tests/fixtures/em_f1.json (scripts/make_fixtures.py, make_em_f1),
//! plus dataset means computed by hand.

use runner::eval::metrics::{exact_match, f1, mean_em_f1, normalize_answer};
use serde_json::Value;

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

#[test]
fn every_case_matches_the_official_squad_functions() {
    let text = std::fs::read_to_string("tests/fixtures/em_f1.json").unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 30, "{} fixture cases", cases.len());
    for case in &cases {
        let prediction = case["prediction"].as_str().unwrap();
        let golds: Vec<String> = serde_json::from_value(case["golds"].clone()).unwrap();
        let want_normalized = case["normalized_prediction"].as_str().unwrap();
        assert_eq!(
            normalize_answer(prediction),
            want_normalized,
            "normalize_answer({prediction:?})"
        );
        let (want_em, want_f1) = (case["em"].as_f64().unwrap(), case["f1"].as_f64().unwrap());
        assert_eq!(
            exact_match(prediction, &golds),
            want_em,
            "EM of {prediction:?} vs {golds:?}"
        );
        let got_f1 = f1(prediction, &golds);
        assert!(
            (got_f1 - want_f1).abs() <= 1e-12,
            "F1 of {prediction:?} vs {golds:?}: {got_f1} != {want_f1}"
        );
    }
}

#[test]
fn empty_strings_match_exactly_but_score_no_f1() {
    let empty = strings(&[""]);
    assert_eq!(exact_match("", &empty), 1.0);
    assert_eq!(f1("", &empty), 0.0);
    assert_eq!(exact_match("The!", &strings(&["a"])), 1.0);
    assert_eq!(f1("The!", &strings(&["a"])), 0.0);
}

#[test]
fn means_are_percentages_over_the_dataset() {
    let predictions = strings(&["The Eiffel Tower", "London", "red wine", ""]);
    let golds = vec![
        strings(&["Eiffel Tower"]),
        strings(&["Paris", "France"]),
        // "red red wine": 2 common tokens, P = 1, R = 2/3, F1 = 0.8; "white wine": F1 = 0.5.
        strings(&["red red wine", "white wine"]),
        // Both empty: EM 1, F1 0.
        strings(&[""]),
    ];
    let (em, f1_mean) = mean_em_f1(&predictions, &golds);
    // EM: (1 + 0 + 0 + 1) / 4 = 50%. F1: (1 + 0 + 0.8 + 0) / 4 = 45%.
    assert_eq!(em, 50.0);
    assert!((f1_mean - 45.0).abs() <= 1e-12, "{f1_mean}");
}

#[test]
#[should_panic(expected = "at least one gold answer")]
fn no_gold_answer_is_an_error_as_in_the_official_script() {
    exact_match("Paris", &[]);
}

/// A fixture case's prediction and references.
fn texts_of(case: &serde_json::Value) -> (&str, Vec<String>) {
    let references = case["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    (case["prediction"].as_str().unwrap(), references)
}

#[test]
fn bleu4_and_rouge_l_match_evaluate_sacrebleu_and_rouge_score() {
    let text = std::fs::read_to_string("tests/fixtures/text_metrics.json").unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 15);
    for case in &cases {
        let (prediction, references) = texts_of(case);
        let bleu = runner::eval::bleu::sentence_bleu4(prediction, &references);
        let rouge = runner::eval::rouge::rouge_l_multi(&references, prediction);
        let (want_bleu, want_rouge) = (
            case["bleu4"].as_f64().unwrap(),
            case["rouge_l"].as_f64().unwrap(),
        );
        assert!(
            (bleu - want_bleu).abs() < 1e-12,
            "BLEU {prediction:?}: {bleu} vs {want_bleu}"
        );
        assert!(
            (rouge - want_rouge).abs() < 1e-12,
            "ROUGE-L {prediction:?}: {rouge} vs {want_rouge}"
        );
    }
    // 13a (as sacrebleu prints it): punctuation split off, decimals and thousands kept whole,
    // a dash after a digit split.
    assert_eq!(
        runner::eval::bleu::tokenize_13a("It costs 3.5 dollars, or 1,000 (5-6) cents."),
        [
            "It", "costs", "3.5", "dollars", ",", "or", "1,000", "(", "5", "-", "6", ")", "cents",
            "."
        ]
    );
}

#[test]
fn runner_score_averages_per_sample_scores_overall_and_by_subgroup() {
    let dir = tempfile::tempdir().unwrap();
    let refs = dir.path().join("refs.jsonl");
    let preds = dir.path().join("preds.jsonl");
    std::fs::write(
        &refs,
        concat!(
            r#"{"id": "1", "reference": "Which of these states is farthest north?", "subject": "social science"}"#, "\n",
            r#"{"id": "2", "reference": "What is the capital of France?", "subject": "social science"}"#, "\n",
            r#"{"id": "3", "reference": "Which tissue makes up most of the bone?", "subject": "natural science"}"#, "\n",
        ),
    )
    .unwrap();
    // Out of order: paired by id.
    std::fs::write(
        &preds,
        concat!(
            r#"{"id": "3", "prediction": "which tissue makes up most of the bone?"}"#,
            "\n",
            r#"{"id": "1", "prediction": "Which state is farthest north?"}"#,
            "\n",
            r#"{"id": "2", "prediction": "What is the capital of France?"}"#,
            "\n",
        ),
    )
    .unwrap();
    let score = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
            .arg("score")
            .arg("--predictions")
            .arg(&preds)
            .arg("--references")
            .arg(&refs)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = score(&["--by", "subject"]);
    crate::assert_success(&o);
    let table = String::from_utf8_lossy(&o.stdout);
    // The fixture's per-sample values (0.384958…, 1, 0.863340… BLEU; 2/3, 1, 1 ROUGE-L), averaged.
    assert!(table.contains("| all | 3 | 74.94 | 88.89 |"), "{table}");
    assert!(
        table.contains("| subject=natural science | 1 | 86.33 | 100.00 |"),
        "{table}"
    );
    assert!(
        table.contains("| subject=social science | 2 | 69.25 | 83.33 |"),
        "{table}"
    );
    // METEOR as HF evaluate's (NLTK 3.10.4, word_tokenize): 0.754986, 0.998542, 0.999314.
    let o = score(&["--metrics", "meteor,bleu4", "--by", "subject"]);
    crate::assert_success(&o);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("| group | n | meteor | bleu4 |"), "{table}");
    assert!(table.contains("| all | 3 | 91.76 | 74.94 |"), "{table}");
    assert!(
        table.contains("| subject=social science | 2 | 87.68 | 69.25 |"),
        "{table}"
    );
    let o = score(&["--metrics", "bleurt"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("runner score knows bleu4, rouge_l and meteor")
    );
}

#[test]
fn meteor_of_raw_text_equals_hf_evaluates_on_the_fixture_cases() {
    use runner::eval::text_metrics::TextScorer;
    use runner::plan::kinds::coe::TextMetric;
    let text = std::fs::read_to_string("tests/fixtures/meteor.json").unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let scorer = TextScorer::new(&[TextMetric::Meteor]).unwrap();
    for case in fixture["cases"].as_array().unwrap() {
        let (prediction, references) = texts_of(case);
        let got = scorer.score(prediction, &references).unwrap()[0];
        let want = case["meteor"].as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-12,
            "{prediction:?}: {got} vs {want}"
        );
    }
}

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

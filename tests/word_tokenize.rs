//! Punkt sentence splitting and `word_tokenize` against NLTK 3.10.4 itself, from
//! tests/fixtures/word_tokenize.json (scripts/make_fixtures.py, make_word_tokenize).

use std::path::{Path, PathBuf};

use runner::eval::punkt::Punkt;
use runner::eval::word_tokenize::WordTokenizer;
use serde_json::Value;

/// NLTK's English punkt_tab model, found where runner finds it (`./dev` installs it).
fn punkt_dir() -> PathBuf {
    runner::eval::nltk_data::punkt_dir().unwrap_or_else(|e| panic!("{e:#}"))
}

fn strings(value: &Value) -> Vec<String> {
    serde_json::from_value(value.clone()).unwrap()
}

#[test]
fn every_case_matches_nltk() {
    let tokenizer = WordTokenizer::load(&punkt_dir()).unwrap();
    let punkt = Punkt::load(&punkt_dir()).unwrap();
    let text = std::fs::read_to_string("tests/fixtures/word_tokenize.json").unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 60, "{} fixture cases", cases.len());
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            punkt.sentences(text).unwrap(),
            strings(&case["sentences"]),
            "sent_tokenize({text:?})"
        );
        assert_eq!(
            tokenizer.tokenize(text).unwrap(),
            strings(&case["tokens"]),
            "word_tokenize({text:?})"
        );
    }
}

/// The error of loading a Punkt model from `dir`, with its causes.
fn load_error(dir: &Path) -> String {
    match Punkt::load(dir) {
        Ok(_) => panic!("loaded a Punkt model from {}", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn a_missing_or_malformed_model_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let error = load_error(dir.path());
    assert!(error.contains("collocations.tab"), "{error}");

    for file in ["abbrev_types.txt", "sent_starters.txt"] {
        std::fs::write(dir.path().join(file), "dr\n").unwrap();
    }
    std::fs::write(dir.path().join("collocations.tab"), "s.\tbach\n").unwrap();
    std::fs::write(dir.path().join("ortho_context.tab"), "the\tmany\n").unwrap();
    let error = load_error(dir.path());
    assert!(
        error.contains("ortho_context.tab") && error.contains("integer"),
        "{error}"
    );

    std::fs::write(dir.path().join("collocations.tab"), "s. bach\n").unwrap();
    let error = load_error(dir.path());
    assert!(
        error.contains("collocations.tab line 1") && error.contains("two tab-separated"),
        "{error}"
    );
}

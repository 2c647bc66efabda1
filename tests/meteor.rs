//! METEOR and its pieces (Porter stems, WordNet synonyms) against NLTK 3.10.4, from
//! tests/fixtures/meteor.json (scripts/make_fixtures.py, make_meteor). WordNet 3.0 is found
//! as runner finds it (`eval::nltk_data`: Debian's wordnet-base, which `./dev` installs); without
//! it these tests fail rather than skip.

use runner::eval::meteor::Meteor;
use runner::eval::porter;
use runner::eval::wordnet::WordNet;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Instant;

fn fixture() -> Value {
    let text = std::fs::read_to_string("tests/fixtures/meteor.json").unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load_wordnet() -> WordNet {
    let dir = runner::eval::nltk_data::wordnet_dir().unwrap_or_else(|e| panic!("{e:#}"));
    let start = Instant::now();
    let wordnet = WordNet::load(&dir).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "WordNet loaded from {} in {:.2?}",
        dir.display(),
        start.elapsed()
    );
    wordnet
}

#[test]
fn porter_stems_equal_nltks() {
    let stems: BTreeMap<String, String> =
        serde_json::from_value(fixture()["stems"].clone()).unwrap();
    assert!(stems.len() >= 1500, "{} fixture stems", stems.len());
    let wrong: Vec<String> = stems
        .iter()
        .filter(|(word, want)| porter::stem(word) != **want)
        .map(|(word, want)| format!("{word:?}: {:?} != {want:?}", porter::stem(word)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} stems differ:\n{}",
        wrong.len(),
        stems.len(),
        wrong.join("\n")
    );
}

#[test]
fn wordnet_lemma_names_equal_nltks() {
    let wordnet = load_wordnet();
    let synonyms: BTreeMap<String, Vec<String>> =
        serde_json::from_value(fixture()["synonyms"].clone()).unwrap();
    assert!(synonyms.len() >= 250, "{} fixture words", synonyms.len());
    let wrong: Vec<String> = synonyms
        .iter()
        .filter_map(|(word, want)| {
            let got: Vec<&str> = wordnet.lemma_names(word).into_iter().collect();
            (got != *want).then(|| format!("{word:?}: {got:?} != {want:?}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} words differ:\n{}",
        wrong.len(),
        synonyms.len(),
        wrong.join("\n")
    );
}

#[test]
fn meteor_equals_nltks_on_every_case() {
    let meteor = Meteor::new(load_wordnet());
    let cases = fixture()["cases"].as_array().unwrap().clone();
    assert!(cases.len() >= 40, "{} fixture cases", cases.len());
    for case in &cases {
        let hypothesis: Vec<String> =
            serde_json::from_value(case["prediction_tokens"].clone()).unwrap();
        let references: Vec<Vec<String>> =
            serde_json::from_value(case["reference_tokens"].clone()).unwrap();
        let (got, want) = (
            meteor.score(&references, &hypothesis),
            case["meteor"].as_f64().unwrap(),
        );
        assert!(
            (got - want).abs() <= 1e-12,
            "METEOR of {:?} vs {:?}: {got} != {want}",
            case["prediction"],
            case["references"]
        );
    }
}

#[test]
fn a_missing_wordnet_names_the_package() {
    let empty = tempfile::tempdir().unwrap();
    let message = format!("{:#}", WordNet::load(empty.path()).err().unwrap());
    assert!(
        message.contains("apt-get install wordnet-base"),
        "{message}"
    );
}

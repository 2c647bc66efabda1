//! Answer metrics for open-domain QA: exact match and token F1, exactly as the official scripts.
//!
//! Definitions followed:
//! - SQuAD v1.1 `evaluate-v1.1.py` (the official evaluation script, also copied into many
//!   repositories): `normalize_answer`, `exact_match_score`, `f1_score` and
//!   `metric_max_over_ground_truths`, reported as `100.0 * sum / total`.
//! - FiD's `src/evaluation.py` (facebookresearch/FiD, `normalize_answer`, `exact_match_score`,
//!   `ems`), which IAG follows for EM: the same normalisation and the max over gold answers.
//!
//! Normalisation is `white_space_fix(remove_articles(remove_punc(lower(s))))`:
//! 1. `lower`: Python's `str.lower()`, i.e. full Unicode lowercasing (`"İ"` becomes `"i\u{307}"`,
//!    a capital sigma at the end of a word becomes `"ς"`); Rust's `str::to_lowercase` implements
//!    the same mappings and the same final-sigma rule.
//! 2. `remove_punc`: drop the 32 ASCII characters of Python's `string.punctuation`; nothing else
//!    (an em dash, curly quotes or a full-width comma stay).
//! 3. `remove_articles`: `re.sub(r'\b(a|an|the)\b', ' ', text)` with Python's `re` on a `str`,
//!    whose `\b` is Unicode-aware: a word character is one with `str.isalnum()` or `_`. A match
//!    is therefore a maximal run of word characters equal to `a`, `an` or `the`, replaced by one
//!    space. Combining marks are not word characters there, so the `a` of a decomposed `"a\u{301}"`
//!    is an article.
//! 4. `white_space_fix`: `' '.join(text.split())`, splitting on Python's `str.isspace()`
//!    characters: Unicode `White_Space` plus the ASCII separators U+001C..U+001F.
//!
//! FiD itself calls the third-party `regex` module in `remove_articles`, whose `\w` differs from
//! `re`'s on combining marks, zero-width joiners and numbers such as `²` (`regex.sub` leaves
//! `"a\u{301}"` alone but removes the `the` of `"the²"`; `re` does the opposite). Such strings
//! are rare in QA answers; this module follows the SQuAD script (Python's `re`).
//!
//! Word characters are exact for Unicode 16.0 (the table below); characters assigned later follow
//! `char::is_alphanumeric`. Python 3.11 (Unicode 14.0) differs only on letters and digits
//! assigned after Unicode 14.0, which it does not know.

use std::collections::HashMap;

/// Python's `string.punctuation`.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Characters that `char::is_alphanumeric` accepts (Unicode `Alphabetic` or a number) but
/// Python's `str.isalnum()` (general category `L*` or `N*`) does not: the `Other_Alphabetic`
/// combining marks (`Mn`, `Mc`) and symbols (`So`, like `ⓐ`). Inclusive ranges; they may span
/// characters that are not alphanumeric for Rust either, since those are excluded anyway.
/// Generated from the Unicode 16.0 general categories (`L*`, `N*`) compared with
/// `char::is_alphanumeric` over all code points, and checked against Python's `str.isalnum()`.
#[rustfmt::skip]
const ALPHABETIC_NOT_ALNUM: &[(u32, u32)] = &[
    (0x0345, 0x036F), (0x05B0, 0x05C7), (0x0610, 0x061A), (0x064B, 0x065F), (0x0670, 0x0670),
    (0x06D6, 0x06E4), (0x06E7, 0x06ED), (0x0711, 0x0711), (0x0730, 0x073F), (0x07A6, 0x07B0),
    (0x0816, 0x0817), (0x081B, 0x0823), (0x0825, 0x0827), (0x0829, 0x082C), (0x088F, 0x0897),
    (0x08D4, 0x0903), (0x093A, 0x093B), (0x093E, 0x094F), (0x0955, 0x0957), (0x0962, 0x0963),
    (0x0981, 0x0983), (0x09BE, 0x09CC), (0x09D7, 0x09D7), (0x09E2, 0x09E3), (0x0A01, 0x0A03),
    (0x0A3E, 0x0A51), (0x0A70, 0x0A71), (0x0A75, 0x0A83), (0x0ABE, 0x0ACC), (0x0AE2, 0x0AE3),
    (0x0AFA, 0x0B03), (0x0B3E, 0x0B57), (0x0B62, 0x0B63), (0x0B82, 0x0B82), (0x0BBE, 0x0BCC),
    (0x0BD7, 0x0BD7), (0x0C00, 0x0C04), (0x0C3E, 0x0C56), (0x0C5C, 0x0C5C), (0x0C62, 0x0C63),
    (0x0C81, 0x0C83), (0x0CBE, 0x0CDC), (0x0CE2, 0x0CE3), (0x0CF3, 0x0D03), (0x0D3E, 0x0D4C),
    (0x0D57, 0x0D57), (0x0D62, 0x0D63), (0x0D81, 0x0D83), (0x0DCF, 0x0DDF), (0x0DF2, 0x0DF3),
    (0x0E31, 0x0E31), (0x0E34, 0x0E3A), (0x0E4D, 0x0E4D), (0x0EB1, 0x0EB1), (0x0EB4, 0x0EBC),
    (0x0ECD, 0x0ECD), (0x0F71, 0x0F83), (0x0F8D, 0x0FBC), (0x102B, 0x103E), (0x1056, 0x1059),
    (0x105E, 0x1060), (0x1062, 0x1064), (0x1067, 0x106D), (0x1071, 0x1074), (0x1082, 0x108D),
    (0x108F, 0x108F), (0x109A, 0x109D), (0x1712, 0x1713), (0x1732, 0x1733), (0x1752, 0x1753),
    (0x1772, 0x1773), (0x17B6, 0x17C8), (0x1885, 0x1886), (0x18A9, 0x18A9), (0x1920, 0x1938),
    (0x1A17, 0x1A1B), (0x1A55, 0x1A74), (0x1ABF, 0x1B04), (0x1B35, 0x1B43), (0x1B80, 0x1B82),
    (0x1BA1, 0x1BAD), (0x1BE7, 0x1BF1), (0x1C24, 0x1C36), (0x1DD3, 0x1DF4), (0x24B6, 0x24E9),
    (0x2DE0, 0x2DFF), (0xA674, 0xA67B), (0xA69E, 0xA69F), (0xA7CE, 0xA7CF), (0xA7D2, 0xA7D2),
    (0xA7D4, 0xA7D4), (0xA7F1, 0xA7F1), (0xA802, 0xA802), (0xA80B, 0xA80B), (0xA823, 0xA827),
    (0xA880, 0xA881), (0xA8B4, 0xA8C5), (0xA8FF, 0xA8FF), (0xA926, 0xA92A), (0xA947, 0xA952),
    (0xA980, 0xA983), (0xA9B4, 0xA9BF), (0xA9E5, 0xA9E5), (0xAA29, 0xAA36), (0xAA43, 0xAA43),
    (0xAA4C, 0xAA4D), (0xAA7B, 0xAA7D), (0xAAB0, 0xAAB0), (0xAAB2, 0xAAB4), (0xAAB7, 0xAAB8),
    (0xAABE, 0xAABE), (0xAAEB, 0xAAEF), (0xAAF5, 0xAAF5), (0xABE3, 0xABEA), (0xFB1E, 0xFB1E),
    (0x10376, 0x1037A), (0x10940, 0x10959), (0x10A01, 0x10A0F), (0x10D24, 0x10D27),
    (0x10D69, 0x10D69), (0x10EAB, 0x10EAC), (0x10EC5, 0x10EFC), (0x11000, 0x11002),
    (0x11038, 0x11045), (0x11073, 0x11074), (0x11080, 0x11082), (0x110B0, 0x110C2),
    (0x11100, 0x11102), (0x11127, 0x11132), (0x11145, 0x11146), (0x11180, 0x11182),
    (0x111B3, 0x111BF), (0x111CE, 0x111CF), (0x1122C, 0x1123E), (0x11241, 0x11241),
    (0x112DF, 0x112E8), (0x11300, 0x11303), (0x1133E, 0x1134C), (0x11357, 0x11357),
    (0x11362, 0x11363), (0x113B8, 0x113CD), (0x11435, 0x11445), (0x114B0, 0x114C1),
    (0x115AF, 0x115BE), (0x115DC, 0x115DD), (0x11630, 0x11640), (0x116AB, 0x116B5),
    (0x1171D, 0x1172A), (0x1182C, 0x11838), (0x11930, 0x1193C), (0x11940, 0x11940),
    (0x11942, 0x11942), (0x119D1, 0x119DF), (0x119E4, 0x119E4), (0x11A01, 0x11A0A),
    (0x11A35, 0x11A39), (0x11A3B, 0x11A3E), (0x11A51, 0x11A5B), (0x11A8A, 0x11A97),
    (0x11B60, 0x11B67), (0x11C2F, 0x11C3E), (0x11C92, 0x11CB6), (0x11D31, 0x11D43),
    (0x11D47, 0x11D47), (0x11D8A, 0x11D96), (0x11DB0, 0x11DE9), (0x11EF3, 0x11F01),
    (0x11F03, 0x11F03), (0x11F34, 0x11F40), (0x1611E, 0x1612E), (0x16EA0, 0x16ED3),
    (0x16F4F, 0x16F4F), (0x16F51, 0x16F92), (0x16FF0, 0x16FF6), (0x187F8, 0x187FF),
    (0x18D09, 0x18DF2), (0x1BC9E, 0x1BC9E), (0x1E000, 0x1E02A), (0x1E08F, 0x1E08F),
    (0x1E6C0, 0x1E6FF), (0x1E947, 0x1E947), (0x1F130, 0x1F189), (0x2B73A, 0x2B73F),
    (0x2CEA2, 0x2CEAD), (0x323B0, 0x33479),
];

/// Python's `str.isalnum()`.
fn is_python_alnum(c: char) -> bool {
    if !c.is_alphanumeric() {
        return false;
    }
    if c.is_ascii() {
        return true;
    }
    let cp = c as u32;
    // The first range ending at or after cp; cp is alphanumeric for Python unless that range starts
    // at or before it.
    let i = ALPHABETIC_NOT_ALNUM.partition_point(|&(_, hi)| hi < cp);
    ALPHABETIC_NOT_ALNUM.get(i).is_none_or(|&(lo, _)| lo > cp)
}

/// A word character for the `\b` of Python's `re` on a `str` pattern: `str.isalnum()` or `_`.
fn is_python_word(c: char) -> bool {
    c == '_' || is_python_alnum(c)
}

/// Python's `str.isspace()`: Unicode `White_Space`, plus U+001C..U+001F (Python counts the
/// bidirectional classes B and S as space; Unicode's `White_Space` does not list those four).
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `re.sub(r'\b(a|an|the)\b', ' ', text)`: every maximal run of word characters that is exactly
/// `a`, `an` or `the` becomes one space (the pattern needs a boundary on both sides, and its
/// letters are word characters, so a match is always a whole run).
fn remove_articles(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_python_word) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest
            .find(|c: char| !is_python_word(c))
            .unwrap_or(rest.len());
        let word = &rest[..end];
        if matches!(word, "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// SQuAD v1.1's `normalize_answer` (identical in FiD's `evaluation.py`): lowercase, drop ASCII
/// punctuation, replace the articles `a`/`an`/`the` by a space, collapse whitespace. See the
/// module documentation for the exact Python semantics reproduced.
pub fn normalize_answer(s: &str) -> String {
    let lowered = s.to_lowercase();
    let no_punc: String = lowered
        .chars()
        .filter(|c| !PUNCTUATION.contains(*c))
        .collect();
    let no_articles = remove_articles(&no_punc);
    no_articles
        .split(is_python_space)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// SQuAD v1.1's `metric_max_over_ground_truths`; Python's `max([])` raises, hence the panic.
fn max_over_golds(golds: &[String], metric: impl Fn(&str) -> f64) -> f64 {
    assert!(!golds.is_empty(), "EM/F1 need at least one gold answer");
    golds
        .iter()
        .map(|gold| metric(gold))
        .fold(f64::NEG_INFINITY, f64::max)
}

/// Exact match: SQuAD v1.1's `exact_match_score` (`normalize_answer(prediction) ==
/// normalize_answer(ground_truth)`) maxed over the golds, as FiD's `ems`: 1.0 or 0.0. Two strings
/// that both normalise to `""` match.
///
/// # Panics
/// If `golds` is empty (the Python `max` raises).
pub fn exact_match(prediction: &str, golds: &[String]) -> f64 {
    let prediction = normalize_answer(prediction);
    max_over_golds(golds, |gold| {
        if normalize_answer(gold) == prediction {
            1.0
        } else {
            0.0
        }
    })
}

/// Token F1 of one prediction against one gold, SQuAD v1.1's `f1_score`: tokens are the
/// space-separated words of the normalised strings, overlap is the multiset intersection
/// (`Counter & Counter`), and no overlap (including either side empty) gives 0.
fn f1_score(prediction_tokens: &[&str], gold: &str) -> f64 {
    let gold = normalize_answer(gold);
    let gold_tokens: Vec<&str> = gold.split(' ').filter(|t| !t.is_empty()).collect();
    let mut gold_counts: HashMap<&str, usize> = HashMap::new();
    for token in &gold_tokens {
        *gold_counts.entry(token).or_default() += 1;
    }
    let mut num_same = 0usize;
    for token in prediction_tokens {
        if let Some(count) = gold_counts.get_mut(token) {
            if *count > 0 {
                *count -= 1;
                num_same += 1;
            }
        }
    }
    if num_same == 0 {
        return 0.0;
    }
    // The same operations in the same order as the Python, so the result is bit-identical.
    let precision = 1.0 * num_same as f64 / prediction_tokens.len() as f64;
    let recall = 1.0 * num_same as f64 / gold_tokens.len() as f64;
    (2.0 * precision * recall) / (precision + recall)
}

/// Token F1: SQuAD v1.1's `f1_score` maxed over the golds (`metric_max_over_ground_truths`),
/// in [0, 1]. Two strings that both normalise to `""` score 0 (the script's `num_same == 0`
/// branch), although their exact match is 1.
///
/// # Panics
/// If `golds` is empty (the Python `max` raises).
pub fn f1(prediction: &str, golds: &[String]) -> f64 {
    let prediction = normalize_answer(prediction);
    let prediction_tokens: Vec<&str> = prediction.split(' ').filter(|t| !t.is_empty()).collect();
    max_over_golds(golds, |gold| f1_score(&prediction_tokens, gold))
}

/// Mean exact match and mean F1 over a dataset, in percent, as SQuAD v1.1's `evaluate` reports
/// them (`100.0 * total / count`); EM is the figure IAG and FiD report for NQ and TriviaQA.
///
/// # Panics
/// If the lists differ in length, are empty, or an example has no gold answer.
pub fn mean_em_f1(predictions: &[String], golds: &[Vec<String>]) -> (f64, f64) {
    assert_eq!(
        predictions.len(),
        golds.len(),
        "one list of gold answers per prediction"
    );
    assert!(
        !predictions.is_empty(),
        "EM/F1 of an empty set of predictions"
    );
    let (mut em_sum, mut f1_sum) = (0.0, 0.0);
    for (prediction, golds) in predictions.iter().zip(golds) {
        em_sum += exact_match(prediction, golds);
        f1_sum += f1(prediction, golds);
    }
    let total = predictions.len() as f64;
    (100.0 * em_sum / total, 100.0 * f1_sum / total)
}

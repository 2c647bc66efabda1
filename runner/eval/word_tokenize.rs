//! NLTK 3.10.4's `nltk.word_tokenize(text)` (English, `preserve_line=False`), which HF
//! `evaluate`'s METEOR tokenizes with: Punkt sentences, each split by `NLTKWordTokenizer` (the
//! improved Penn Treebank tokenizer) with `convert_parentheses=False`.
//!
//! The tokenizer rewrites the text with an ordered list of substitutions that pad tokens with
//! spaces, then splits on whitespace. NLTK compiles most of them with the `regex` module, whose
//! `\w`, `\s`, `\d`, `\b` and case folding are Rust's; the contraction patterns use Python's
//! `re`, whose differ (see `contraction_patterns`).

use std::path::Path;

use anyhow::{Context, Result};
use fancy_regex::Regex;

use super::punkt::{is_py_space, Punkt};

/// Substitutions before the text is padded with a space on each side, in NLTK's order:
/// starting quotes, punctuation, brackets, double dashes. Replacements use `${n}` for groups;
/// `(?=\n?\z)` is Python's `$` (the end, or just before a final newline).
const BEFORE_PADDING: &[(&str, &str)] = &[
    // Starting quotes: opening quotes stand alone, and a straight `"` (or `''`) at the start or
    // after a space or opening bracket becomes ``.
    (r"([«“‘„]|`+)", " ${1} "),
    (r#"^""#, "``"),
    (r"(``)", " ${1} "),
    (r#"([ (\[{<])("|'{2})"#, "${1} `` "),
    // A ' opening a word, unless it starts a clitic ('re, 's, ...).
    (r"(?i)(?<!\w)(')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)", "${1} "),
    // Punctuation. The final period (and closing quotes or brackets after it); `*+` keeps
    // NLTK's possessive run.
    (
        r#"([^.])(\.)([\]\)}>"'»”’ ]*+)\s*(?=\n?\z)"#,
        "${1} ${2} ${3} ",
    ),
    (r"([:,])([^\d])", " ${1} ${2}"),
    (r"([:,])(?=\n?\z)", " ${1} "),
    (r"\.{2,}", " ${0} "),
    (r"[;@#$%&]", " ${0} "),
    // Figure dash, en and em dashes, horizontal bar.
    (r"[\x{2012}-\x{2015}]", " ${0} "),
    (r#"([^.])(\.)([\]\)}>"']*)\s*(?=\n?\z)"#, "${1} ${2}${3} "),
    (r"[?!]", " ${0} "),
    (r"([^'])' ", "${1} ' "),
    (r"[*]", " ${0} "),
    // Parentheses and brackets.
    (r"[\]\[(){}<>]", " ${0} "),
    // Double dashes.
    (r"--", " -- "),
];

/// Substitutions after padding: ending quotes and clitics.
const AFTER_PADDING: &[(&str, &str)] = &[
    (r"([»”’])", " ${1} "),
    (r"''", " '' "),
    (r#"""#, " '' "),
    (r"\s+", " "),
    (r"([^' ])('[sS]|'[mM]|'[dD]|') ", "${1} ${2} "),
    (r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", "${1} ${2} "),
];

/// MacIntyre's contractions split in two (NLTK's CONTRACTIONS2 and CONTRACTIONS3; its
/// CONTRACTIONS4 are unused). These use Python's `re`, not `regex`: its `\w` is letters, all
/// numbers and `_` (no combining marks), so `\b` next to a letter is a look-around on that;
/// its `\s` also has U+001C..U+001F; and its case-insensitive `i` also matches `İ` and `ı`.
fn contraction_patterns() -> Vec<String> {
    const W: &str = r"[\p{L}\p{N}_]";
    let word = |first: &str, second: &str| format!("(?i)(?<!{W})({first})({second})(?!{W})");
    vec![
        word("can", "not"),
        word("d", "'ye"),
        word("g[iİı]m", "me"),
        word("gon", "na"),
        word("got", "ta"),
        word("lem", "me"),
        word("more", "'n"),
        format!(r"(?i)(?<!{W})(wan)(na)(?=[\s\x1C-\x1F])"),
        format!("(?i) ('t)([iİı]s)(?!{W})"),
        format!("(?i) ('t)(was)(?!{W})"),
    ]
}

/// `nltk.word_tokenize` with its Punkt model loaded.
pub struct WordTokenizer {
    punkt: Punkt,
    before_padding: Vec<(Regex, &'static str)>,
    after_padding: Vec<(Regex, &'static str)>,
}

fn compile(pattern: &str) -> Result<Regex> {
    Regex::new(pattern).with_context(|| format!("compiling the word tokenizer pattern {pattern}"))
}

fn compile_all(rules: &[(&str, &'static str)]) -> Result<Vec<(Regex, &'static str)>> {
    rules
        .iter()
        .map(|&(pattern, replacement)| Ok((compile(pattern)?, replacement)))
        .collect()
}

/// Applies `rules` in order, each to every non-overlapping match.
fn substitute(mut text: String, rules: &[(Regex, &str)]) -> Result<String> {
    for (regex, replacement) in rules {
        text = regex
            .try_replacen(&text, 0, *replacement)
            .with_context(|| format!("applying the word tokenizer pattern {}", regex.as_str()))?
            .into_owned();
    }
    Ok(text)
}

impl WordTokenizer {
    /// Loads the Punkt model from `punkt_dir` (NLTK's `tokenizers/punkt_tab/english`).
    pub fn load(punkt_dir: &Path) -> Result<Self> {
        let mut after_padding = compile_all(AFTER_PADDING)?;
        for pattern in contraction_patterns() {
            after_padding.push((compile(&pattern)?, " ${1} ${2} "));
        }
        Ok(WordTokenizer {
            punkt: Punkt::load(punkt_dir)?,
            before_padding: compile_all(BEFORE_PADDING)?,
            after_padding,
        })
    }

    /// The tokens of `text`, as `nltk.word_tokenize(text)` gives them. Errs only when a pattern
    /// exceeds its backtracking limit (on pathologically long input).
    pub fn tokenize(&self, text: &str) -> Result<Vec<String>> {
        let mut tokens = Vec::new();
        for sentence in self.punkt.sentences(text)? {
            let padded = format!(
                " {} ",
                substitute(sentence.to_string(), &self.before_padding)?
            );
            let rewritten = substitute(padded, &self.after_padding)?;
            tokens.extend(
                rewritten
                    .split(is_py_space)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string),
            );
        }
        Ok(tokens)
    }
}

//! BLEU as HF `evaluate`'s `bleu` metric computes it (which CoE's scoring script calls once per
//! sample): sacrebleu's `13a` tokenizer, then tensorflow/nmt's `compute_bleu` with
//! `max_order = 4` and no smoothing (so a sample with no matching 4-gram scores 0).

use std::collections::HashMap;

/// Characters rule 1 of `13a` puts spaces around: ASCII punctuation except `'`, `,`, `-`, `.`
/// (the class `[\{-\~\[-\` -\&\(-\+\:-\@\/]`).
fn spaced(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// One `re.sub` of a two-character pattern, left to right without overlaps, as Python does.
fn substitute(
    line: &[char],
    hit: impl Fn(char, char) -> bool,
    emit: impl Fn(char, char, &mut Vec<char>),
) -> Vec<char> {
    let mut out = Vec::with_capacity(line.len() + 8);
    let mut i = 0;
    while i < line.len() {
        if i + 1 < line.len() && hit(line[i], line[i + 1]) {
            emit(line[i], line[i + 1], &mut out);
            i += 2;
        } else {
            out.push(line[i]);
            i += 1;
        }
    }
    out
}

/// sacrebleu's `Tokenizer13a` (mteval-v13a), returning the words as `evaluate` does.
pub fn tokenize_13a(text: &str) -> Vec<String> {
    let mut line = text
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let chars: Vec<char> = format!(" {line} ").chars().collect();
    let mut spaced_out = Vec::with_capacity(chars.len() * 2);
    for c in chars {
        if spaced(c) {
            spaced_out.extend([' ', c, ' ']);
        } else {
            spaced_out.push(c);
        }
    }
    let digit = |c: char| c.is_ascii_digit();
    let stop = |c: char| c == '.' || c == ',';
    // Period and comma unless preceded by a digit: `([^0-9])([\.,])` → `\1 \2 `.
    let s = substitute(
        &spaced_out,
        |a, b| !digit(a) && stop(b),
        |a, b, o| o.extend([a, ' ', b, ' ']),
    );
    // Unless followed by a digit: `([\.,])([^0-9])` → ` \1 \2`.
    let s = substitute(
        &s,
        |a, b| stop(a) && !digit(b),
        |a, b, o| o.extend([' ', a, ' ', b]),
    );
    // Dash after a digit: `([0-9])(-)` → `\1 \2 `.
    let s = substitute(
        &s,
        |a, b| digit(a) && b == '-',
        |a, b, o| o.extend([a, ' ', b, ' ']),
    );
    s.into_iter()
        .collect::<String>()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn ngrams(tokens: &[String], max_order: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for n in 1..=max_order {
        for gram in tokens.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// nmt's `compute_bleu(reference_corpus, translation_corpus, max_order, smooth=False)` over
/// tokenized text: clipped n-gram precisions over the corpus, their geometric mean (0 if any
/// is 0), and the brevity penalty against the shortest reference of each segment.
pub fn compute_bleu(
    references: &[Vec<Vec<String>>],
    translations: &[Vec<String>],
    max_order: usize,
) -> f64 {
    let mut matches = vec![0usize; max_order];
    let mut possible = vec![0usize; max_order];
    let (mut reference_length, mut translation_length) = (0usize, 0usize);
    for (refs, translation) in references.iter().zip(translations) {
        reference_length += refs.iter().map(Vec::len).min().unwrap_or(0);
        translation_length += translation.len();
        let mut merged: HashMap<&[String], usize> = HashMap::new();
        for r in refs {
            for (gram, n) in ngrams(r, max_order) {
                let m = merged.entry(gram).or_insert(0);
                *m = (*m).max(n);
            }
        }
        for (gram, n) in ngrams(translation, max_order) {
            matches[gram.len() - 1] += n.min(merged.get(gram).copied().unwrap_or(0));
        }
        for order in 1..=max_order {
            possible[order - 1] += (translation.len() + 1).saturating_sub(order);
        }
    }
    let precisions: Vec<f64> = (0..max_order)
        .map(|i| match possible[i] {
            0 => 0.0,
            p => matches[i] as f64 / p as f64,
        })
        .collect();
    let geo_mean = match precisions.iter().all(|&p| p > 0.0) {
        true => precisions
            .iter()
            .map(|p| p.ln() / max_order as f64)
            .sum::<f64>()
            .exp(),
        false => 0.0,
    };
    if translation_length == 0 || reference_length == 0 {
        return 0.0; // nmt divides by zero here; nothing matched either way
    }
    let ratio = translation_length as f64 / reference_length as f64;
    let brevity = if ratio > 1.0 {
        1.0
    } else {
        (1.0 - 1.0 / ratio).exp()
    };
    geo_mean * brevity
}

/// `evaluate.load("bleu").compute(predictions=[prediction], references=[references])["bleu"]`.
pub fn sentence_bleu4(prediction: &str, references: &[String]) -> f64 {
    let refs: Vec<Vec<String>> = references.iter().map(|r| tokenize_13a(r)).collect();
    compute_bleu(&[refs], &[tokenize_13a(prediction)], 4)
}

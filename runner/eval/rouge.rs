//! ROUGE-L as Google's `rouge-score` computes it (`RougeScorer(["rougeL"])`, no stemmer, which
//! is what HF `evaluate`'s `rouge` uses by default): lower-case, non-alphanumerics to spaces,
//! ASCII letters and digits only, then the F-measure of the longest common subsequence.

/// `rouge_score.tokenize.tokenize(text, stemmer=None)`.
pub fn tokenize(text: &str) -> Vec<String> {
    let lowered = text.to_lowercase();
    let cleaned: String = lowered
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                ' '
            }
        })
        .collect();
    cleaned.split_whitespace().map(str::to_string).collect()
}

fn lcs(a: &[String], b: &[String]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diagonal = 0;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y {
                diagonal + 1
            } else {
                above.max(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The ROUGE-L F-measure of `prediction` against `target` (0 when either has no tokens).
pub fn rouge_l(target: &str, prediction: &str) -> f64 {
    let (t, p) = (tokenize(target), tokenize(prediction));
    if t.is_empty() || p.is_empty() {
        return 0.0;
    }
    let common = lcs(&t, &p) as f64;
    let (precision, recall) = (common / p.len() as f64, common / t.len() as f64);
    match precision + recall {
        s if s > 0.0 => 2.0 * precision * recall / s,
        _ => 0.0,
    }
}

/// With several references, `rouge-score`'s `score_multi` keeps the best F-measure.
pub fn rouge_l_multi(references: &[String], prediction: &str) -> f64 {
    references
        .iter()
        .map(|r| rouge_l(r, prediction))
        .fold(0.0, f64::max)
}

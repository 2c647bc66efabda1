//! CoE's exemplar retrieval (`retrieve.py`): every training item is embedded by its answer and
//! its question (and, optionally, its context); a candidate's score for a query item is the sum
//! over those signals of the cosine similarity; candidates scoring at least the threshold are
//! ranked, the best `top_k` kept, and the first goes into the prompt. The embedder is a
//! sentence encoder, or TF-IDF (below) when none is configured.

use std::collections::HashMap;

/// A sparse, L2-normalised vector: (term, weight), sorted by term.
pub type Sparse = Vec<(usize, f64)>;

/// TF-IDF as scikit-learn's `TfidfVectorizer` defaults: lower-cased tokens of two or more word
/// characters, raw term counts, `idf = ln((1 + n) / (1 + df)) + 1`, rows L2-normalised.
pub struct Tfidf {
    vocabulary: HashMap<String, usize>,
    idf: Vec<f64>,
}

/// `(?u)\b\w\w+\b` on the lower-cased text.
fn tokens(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|t| t.chars().count() >= 2)
        .map(str::to_string)
        .collect()
}

impl Tfidf {
    pub fn fit(corpus: &[&str]) -> Tfidf {
        let mut vocabulary: HashMap<String, usize> = HashMap::new();
        let mut df: Vec<usize> = Vec::new();
        for text in corpus {
            let mut seen: Vec<usize> = tokens(text)
                .into_iter()
                .map(|t| {
                    let next = vocabulary.len();
                    let id = *vocabulary.entry(t).or_insert(next);
                    if id == df.len() {
                        df.push(0);
                    }
                    id
                })
                .collect();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                df[id] += 1;
            }
        }
        let n = corpus.len() as f64;
        let idf = df
            .iter()
            .map(|&d| ((1.0 + n) / (1.0 + d as f64)).ln() + 1.0)
            .collect();
        Tfidf { vocabulary, idf }
    }

    /// The text's vector (words outside the fitted vocabulary count for nothing).
    pub fn embed(&self, text: &str) -> Sparse {
        let mut counts: HashMap<usize, f64> = HashMap::new();
        for t in tokens(text) {
            if let Some(&id) = self.vocabulary.get(&t) {
                *counts.entry(id).or_insert(0.0) += 1.0;
            }
        }
        let mut v: Sparse = counts
            .into_iter()
            .map(|(id, c)| (id, c * self.idf[id]))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        let norm = v.iter().map(|(_, w)| w * w).sum::<f64>().sqrt();
        if norm > 0.0 {
            for (_, w) in &mut v {
                *w /= norm;
            }
        }
        v
    }
}

/// The dot product of two normalised sparse vectors: their cosine.
pub fn cosine(a: &Sparse, b: &Sparse) -> f64 {
    let (mut i, mut j, mut sum) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                sum += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    sum
}

/// A retrieved exemplar: its index in the pool and its score.
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    pub index: usize,
    pub score: f64,
}

/// For each query (one vector per signal), the pool items (one vector per signal, in the same
/// order) scoring at least `threshold`, best first (ties by pool order), at most `top_k`.
/// `skip(q, p)` leaves a pair out: an item is not its own exemplar.
pub fn retrieve(
    queries: &[Vec<Sparse>],
    pool: &[Vec<Sparse>],
    threshold: f64,
    top_k: usize,
    skip: impl Fn(usize, usize) -> bool,
) -> Vec<Vec<Exemplar>> {
    queries
        .iter()
        .enumerate()
        .map(|(q, signals)| {
            let mut found: Vec<Exemplar> = pool
                .iter()
                .enumerate()
                .filter(|(p, _)| !skip(q, *p))
                .map(|(p, candidate)| Exemplar {
                    index: p,
                    score: signals
                        .iter()
                        .zip(candidate)
                        .map(|(a, b)| cosine(a, b))
                        .sum(),
                })
                .filter(|e| e.score >= threshold)
                .collect();
            found.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
            found.truncate(top_k);
            found
        })
        .collect()
}

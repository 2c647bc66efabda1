//! METEOR as NLTK 3.10.4's `nltk.translate.meteor_score.meteor_score` computes it on tokenized
//! text (what HF `evaluate`'s `meteor` calls, after `word_tokenize`), with NLTK's defaults:
//! lower-cased words, alpha 0.9, beta 3, gamma 0.5, the Porter stemmer, WordNet 3.0.
//!
//! Words are aligned in three stages, each on what the previous left unaligned: identical words,
//! identical Porter stems, then WordNet synonyms (of the stems, since NLTK passes the stemmed
//! words on). The score is the harmonic F-mean (recall weighted by alpha) times one minus a
//! penalty for how many contiguous chunks the alignment breaks into.

use super::porter;
use super::wordnet::WordNet;
use std::collections::HashMap;

const ALPHA: f64 = 0.9;
const BETA: f64 = 3.0;
const GAMMA: f64 = 0.5;

/// A word not aligned yet: its position in the sentence and its current form.
type Word = (usize, String);

/// The METEOR scorer, holding the WordNet it reads synonyms from.
pub struct Meteor {
    wordnet: WordNet,
}

impl Meteor {
    pub fn new(wordnet: WordNet) -> Self {
        Meteor { wordnet }
    }

    /// `meteor_score(references, hypothesis)`: the best score over the references (0 with no
    /// references, where NLTK raises).
    pub fn score(&self, references: &[Vec<String>], hypothesis: &[String]) -> f64 {
        references
            .iter()
            .map(|reference| self.single(reference, hypothesis))
            .fold(0.0, f64::max)
    }

    /// `single_meteor_score(reference, hypothesis)`: 0 when nothing aligns.
    fn single(&self, reference: &[String], hypothesis: &[String]) -> f64 {
        let lower = |words: &[String]| -> Vec<Word> {
            words.iter().map(|w| w.to_lowercase()).enumerate().collect()
        };
        let (hypothesis, reference) = (lower(hypothesis), lower(reference));
        let (translation_length, reference_length) = (hypothesis.len(), reference.len());
        let matches = self.align(hypothesis, reference);
        if matches.is_empty() {
            return 0.0;
        }
        let matched = matches.len() as f64;
        let precision = matched / translation_length as f64;
        let recall = matched / reference_length as f64;
        let fmean = precision * recall / (ALPHA * precision + (1.0 - ALPHA) * recall);
        let fragmentation = count_chunks(&matches) as f64 / matched;
        (1.0 - GAMMA * fragmentation.powf(BETA)) * fmean
    }

    /// The aligned (hypothesis position, reference position) pairs of the three stages, by
    /// hypothesis position.
    fn align(&self, hypothesis: Vec<Word>, reference: Vec<Word>) -> Vec<(usize, usize)> {
        let mut matches = Vec::new();
        let same = |word: &str| vec![word.to_string()];
        let (hypothesis, reference) = align_stage(hypothesis, reference, same, &mut matches);
        let stems = |words: Vec<Word>| -> Vec<Word> {
            words
                .into_iter()
                .map(|(i, w)| (i, porter::stem(&w)))
                .collect()
        };
        let (hypothesis, reference) =
            align_stage(stems(hypothesis), stems(reference), same, &mut matches);
        let synonyms = |word: &str| -> Vec<String> {
            // Multi-word lemmas cannot equal a single token.
            let lemmas = self.wordnet.lemma_names(word).into_iter();
            let mut forms: Vec<String> = lemmas
                .filter(|l| !l.contains('_'))
                .map(str::to_string)
                .collect();
            forms.push(word.to_string());
            forms
        };
        align_stage(hypothesis, reference, synonyms, &mut matches);
        matches.sort_unstable();
        matches
    }
}

/// One NLTK alignment stage: from the last hypothesis word to the first, align it with the
/// latest still unaligned reference word whose form is one of `forms(hypothesis word)`. Appends
/// the pairs to `matches` and returns what stays unaligned on each side.
fn align_stage(
    hypothesis: Vec<Word>,
    reference: Vec<Word>,
    forms: impl Fn(&str) -> Vec<String>,
    matches: &mut Vec<(usize, usize)>,
) -> (Vec<Word>, Vec<Word>) {
    // Positions in `reference` of each form, ascending, so the last one is the latest unused.
    let mut positions: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, (_, word)) in reference.iter().enumerate() {
        positions.entry(word.as_str()).or_default().push(j);
    }
    let mut hypothesis_aligned = vec![false; hypothesis.len()];
    let mut reference_aligned = vec![false; reference.len()];
    for (i, (position, word)) in hypothesis.iter().enumerate().rev() {
        let latest = forms(word)
            .into_iter()
            .filter_map(|form| Some((*positions.get(form.as_str())?.last()?, form)))
            .max_by_key(|&(j, _)| j);
        if let Some((j, form)) = latest {
            if let Some(available) = positions.get_mut(form.as_str()) {
                available.pop();
            }
            hypothesis_aligned[i] = true;
            reference_aligned[j] = true;
            matches.push((*position, reference[j].0));
        }
    }
    let unaligned = |words: Vec<Word>, aligned: &[bool]| -> Vec<Word> {
        words
            .into_iter()
            .zip(aligned)
            .filter(|(_, &a)| !a)
            .map(|(w, _)| w)
            .collect()
    };
    (
        unaligned(hypothesis, &hypothesis_aligned),
        unaligned(reference, &reference_aligned),
    )
}

/// The fewest chunks of matches adjacent in both sentences, for matches sorted by hypothesis
/// position.
fn count_chunks(matches: &[(usize, usize)]) -> usize {
    1 + matches
        .windows(2)
        .filter(|pair| pair[1] != (pair[0].0 + 1, pair[0].1 + 1))
        .count()
}

//! The generation metrics CoE's `scoring.py` reports, each per sample: BLEU-4 (HF evaluate's
//! `bleu`), ROUGE-L (rouge-score's `rougeL` F) and METEOR (HF evaluate's `meteor`: NLTK's,
//! on `word_tokenize`d text, with WordNet synonyms).

use anyhow::{Context, Result};

use super::meteor::Meteor;
use super::word_tokenize::WordTokenizer;
use super::wordnet::WordNet;
use super::{bleu, nltk_data, rouge};
use crate::plan::kinds::coe::TextMetric;

impl TextMetric {
    /// The name metrics are reported under.
    pub fn name(self) -> &'static str {
        match self {
            TextMetric::Bleu4 => "bleu4",
            TextMetric::RougeL => "rouge_l",
            TextMetric::Meteor => "meteor",
            TextMetric::Loss => "loss",
        }
    }
}

/// One metric, with what computing it needs.
enum Scorer {
    Bleu4,
    RougeL,
    Meteor(Box<(WordTokenizer, Meteor)>),
}

pub struct TextScorer {
    metrics: Vec<TextMetric>,
    scorers: Vec<Scorer>,
}

impl TextScorer {
    /// A scorer of the text metrics among `metrics` (loss is not one); METEOR loads Punkt's
    /// English model and WordNet (see `nltk_data`).
    pub fn new(metrics: &[TextMetric]) -> Result<TextScorer> {
        let metrics: Vec<TextMetric> = metrics
            .iter()
            .copied()
            .filter(|m| *m != TextMetric::Loss)
            .collect();
        let scorers = metrics
            .iter()
            .map(|m| match m {
                TextMetric::Bleu4 => Ok(Scorer::Bleu4),
                TextMetric::RougeL => Ok(Scorer::RougeL),
                _ => {
                    let punkt = nltk_data::punkt_dir()?;
                    let wordnet = nltk_data::wordnet_dir()?;
                    let tokenizer = WordTokenizer::load(&punkt)
                        .with_context(|| format!("loading Punkt from {}", punkt.display()))?;
                    let wordnet = WordNet::load(&wordnet)
                        .with_context(|| format!("loading WordNet from {}", wordnet.display()))?;
                    Ok(Scorer::Meteor(Box::new((tokenizer, Meteor::new(wordnet)))))
                }
            })
            .collect::<Result<_>>()?;
        Ok(TextScorer { metrics, scorers })
    }

    /// The metrics `score` computes, in its order.
    pub fn metrics(&self) -> &[TextMetric] {
        &self.metrics
    }

    /// Each metric of `prediction` against the best-matching of `references`, in [0, 1].
    pub fn score(&self, prediction: &str, references: &[String]) -> Result<Vec<f64>> {
        self.scorers
            .iter()
            .map(|s| match s {
                Scorer::Bleu4 => Ok(bleu::sentence_bleu4(prediction, references)),
                Scorer::RougeL => Ok(rouge::rouge_l_multi(references, prediction)),
                Scorer::Meteor(m) => {
                    let (tokenizer, meteor) = m.as_ref();
                    let references: Vec<Vec<String>> = references
                        .iter()
                        .map(|r| tokenizer.tokenize(r))
                        .collect::<Result<_>>()?;
                    Ok(meteor.score(&references, &tokenizer.tokenize(prediction)?))
                }
            })
            .collect()
    }
}

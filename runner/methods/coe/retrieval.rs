//! CoE's retrieval stage: each item's best exemplar among the training items, by the summed
//! cosine similarities of its signal texts (answer, question, context), embedded by TF-IDF
//! fitted on the training items or by a BERT-family sentence encoder; cached by content hash.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use tch::{Device, Tensor};

use crate::data::exemplars::{retrieve, Exemplar, Sparse, Tfidf};
use crate::data::scienceqa::Item;
use crate::data::tokenizer::Tokenizer;
use crate::files::write_atomic;
use crate::models::bert::Bert;
use crate::plan::kinds::coe::{Retrieval as RetrievalSpec, Signal};

/// Retrieval over the training items, kept for items met later (`runner generate`).
pub struct Retrieval {
    embedder: Embedder,
    /// Each training item's vectors, one per signal.
    pool: Vec<Vec<Sparse>>,
    signals: Vec<Signal>,
    threshold: f64,
}

/// Each item's exemplar (an index into the training items), for the training and the
/// validation items.
pub type Exemplars = (Vec<Option<usize>>, Vec<Option<usize>>);

impl Retrieval {
    /// Fits the embedder on the training items and finds every item's exemplar (from the
    /// cache when the same retrieval ran before). A training item is never its own exemplar.
    pub fn build(
        r: &RetrievalSpec,
        train: &[Item],
        validation: &[Item],
        device: Device,
    ) -> Result<(Retrieval, Exemplars)> {
        let embedder = match &r.embedder {
            Some(dir) => Embedder::Encoder(Box::new(Encoder {
                bert: Bert::load(Path::new(dir), device)?,
                tokenizer: Tokenizer::load(&Path::new(dir).join("tokenizer.json"))?,
                dir: PathBuf::from(dir),
            })),
            None => {
                let corpus: Vec<&str> = train
                    .iter()
                    .flat_map(|i| r.signals.iter().map(move |s| signal_text(i, *s)))
                    .collect();
                Embedder::Tfidf(Tfidf::fit(&corpus))
            }
        };
        let vectors = |items: &[Item]| -> Result<Vec<Vec<Sparse>>> {
            let per_signal: Vec<Vec<Sparse>> = r
                .signals
                .iter()
                .map(|s| {
                    embedder.embed(&items.iter().map(|i| signal_text(i, *s)).collect::<Vec<_>>())
                })
                .collect::<Result<_>>()?;
            Ok((0..items.len())
                .map(|i| per_signal.iter().map(|v| v[i].clone()).collect())
                .collect())
        };
        let pool = vectors(train)?;
        let cached = exemplar_cache(&embedder, r, train, validation)?;
        let exemplars = match cached.load() {
            Some(found) => found,
            None => {
                let best = |found: Vec<Vec<Exemplar>>| -> Vec<Option<usize>> {
                    found
                        .into_iter()
                        .map(|f| f.first().map(|e| e.index))
                        .collect()
                };
                let top_k = r.top_k as usize;
                let train = best(retrieve(&pool, &pool, r.threshold, top_k, |q, p| q == p));
                let validation = best(retrieve(
                    &vectors(validation)?,
                    &pool,
                    r.threshold,
                    top_k,
                    |_, _| false,
                ));
                cached.save(&train, &validation)?;
                (train, validation)
            }
        };
        let retrieval = Retrieval {
            embedder,
            pool,
            signals: r.signals.clone(),
            threshold: r.threshold,
        };
        Ok((retrieval, exemplars))
    }

    /// The index of the best training item to show as the exemplar of a new item.
    pub fn exemplar(&self, item: &Item) -> Option<usize> {
        let query: Vec<Sparse> = self
            .signals
            .iter()
            .map(|s| {
                self.embedder
                    .embed(&[signal_text(item, *s)])
                    .map(|mut v| v.remove(0))
            })
            .collect::<Result<_>>()
            .ok()?;
        let found = retrieve(&[query], &self.pool, self.threshold, 1, |_, _| false);
        found[0].first().map(|e| e.index)
    }
}

/// The texts of an item that retrieval compares.
fn signal_text(item: &Item, signal: Signal) -> &str {
    match signal {
        Signal::Answer => &item.answer,
        Signal::Question => &item.question,
        Signal::Context => &item.hint,
    }
}

/// How an item's signal texts become vectors: TF-IDF fitted on the training items, or a
/// BERT-family sentence encoder's mean-pooled, L2-normalised embeddings.
enum Embedder {
    Tfidf(Tfidf),
    Encoder(Box<Encoder>),
}

struct Encoder {
    bert: Bert,
    tokenizer: Tokenizer,
    dir: PathBuf,
}

impl Embedder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Sparse>> {
        match self {
            Embedder::Tfidf(t) => Ok(texts.iter().map(|x| t.embed(x)).collect()),
            Embedder::Encoder(encoder) => {
                let Encoder {
                    bert, tokenizer, ..
                } = encoder.as_ref();
                let mut out = Vec::with_capacity(texts.len());
                for chunk in texts.chunks(32) {
                    let encoded: Vec<Vec<i64>> = chunk
                        .iter()
                        .map(|x| tokenizer.encode(x, true))
                        .collect::<Result<_>>()?;
                    let longest = encoded.iter().map(Vec::len).max().unwrap_or(1);
                    let (mut ids, mut mask) = (Vec::new(), Vec::new());
                    for e in &encoded {
                        ids.extend(
                            e.iter()
                                .copied()
                                .chain(std::iter::repeat_n(0, longest - e.len())),
                        );
                        mask.extend((0..longest).map(|i| i64::from(i < e.len())));
                    }
                    let shape = [encoded.len() as i64, longest as i64];
                    let device = bert.device();
                    let pooled = bert.embed_sentences(
                        &Tensor::from_slice(&ids).view(shape).to_device(device),
                        &Tensor::from_slice(&mask).view(shape).to_device(device),
                    );
                    let norm = pooled.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
                    let unit = (pooled / norm).to_device(Device::Cpu);
                    for row in 0..encoded.len() as i64 {
                        let v = Vec::<f32>::try_from(unit.get(row))
                            .map_err(|e| anyhow!("reading embeddings: {e}"))?;
                        out.push(
                            v.into_iter()
                                .enumerate()
                                .map(|(i, w)| (i, f64::from(w)))
                                .collect(),
                        );
                    }
                }
                Ok(out)
            }
        }
    }
}

/// The retrieval stage's cache, `results/cache/exemplars-<hash>.json` (or under
/// `RUNNER_CACHE_DIR`), keyed by everything the
/// exemplars depend on: the embedder (TF-IDF, or the encoder folder's files), the retrieval
/// settings and the items' signal texts.
struct ExemplarCache {
    path: PathBuf,
}

fn exemplar_cache(
    embedder: &Embedder,
    r: &RetrievalSpec,
    train: &[Item],
    validation: &[Item],
) -> Result<ExemplarCache> {
    let mut hasher = blake3::Hasher::new();
    match embedder {
        Embedder::Tfidf(_) => {
            hasher.update(b"tfidf");
        }
        Embedder::Encoder(encoder) => {
            let dir = &encoder.dir;
            for file in ["config.json", "tokenizer.json", "model.safetensors"] {
                let path = dir.join(file);
                let bytes =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                hasher.update(&bytes);
            }
        }
    }
    let texts = |items: &[Item]| -> Vec<Vec<String>> {
        items
            .iter()
            .map(|i| {
                r.signals
                    .iter()
                    .map(|s| signal_text(i, *s).to_string())
                    .collect()
            })
            .collect()
    };
    let key = serde_json::json!({
        "signals": format!("{:?}", r.signals),
        "threshold": r.threshold,
        "top_k": r.top_k,
        "train": texts(train),
        "validation": texts(validation),
    });
    hasher.update(key.to_string().as_bytes());
    let hash = hasher.finalize().to_hex();
    Ok(ExemplarCache {
        path: crate::files::cache_dir().join(format!("exemplars-{}.json", &hash[..16])),
    })
}

impl ExemplarCache {
    fn load(&self) -> Option<Exemplars> {
        let bytes = std::fs::read(&self.path).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn save(&self, train: &[Option<usize>], validation: &[Option<usize>]) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let bytes = serde_json::to_vec(&(train, validation))?;
        write_atomic(&self.path, &bytes)
    }
}

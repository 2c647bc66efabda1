//! `coe_multitask` (Chain-of-Exemplar, ACL 2024): a vision-language model trained on question,
//! rationale and distractor generation from ScienceQA-style items, each prompt carrying the
//! best retrieved exemplar; evaluated by generating each task (and CoE's chain: question, then
//! rationale from it, then distractors from both) and scoring with BLEU-4, ROUGE-L and METEOR.
//! Optionally also multiple-choice answering, whose per-category error rates drive the
//! MLLM-DataEngine loop: `error_rates.json` from one run weights the categories of the next.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::data::batch::{collate, Batch, Example};
use crate::data::categories;
use crate::data::chatml::{self, Specials, Turn};
use crate::data::exemplars::{retrieve, Sparse, Tfidf};
use crate::data::images;
use crate::data::loader::{Loader, MakeBatch};
use crate::data::mixture::{training_sequence, Mixture};
use crate::data::scienceqa::{self, Item, Task as CoeTask, TASKS};
use crate::data::tokenizer::Tokenizer;
use crate::eval::text_metrics::TextScorer;
use crate::models::adapters::lora::{self, LoraSpec};
use crate::models::bert::Bert;
use crate::models::connector::{sincos_2d, Connector};
use crate::models::generate::{self, GenerateOptions, Strategy};
use crate::models::hf_folder::{write_safetensors, HfConfig};
use crate::models::llama::{DecoderOptions, Llama};
use crate::models::loss::causal_lm_example_losses;
use crate::models::qwen_vl;
use crate::models::vit::{self, Vit};
use crate::models::vlm::Vlm;
use crate::models::{hf_model, Compute, ParamStore, Tape};
use crate::plan::arch::Connector as ConnectorSpec;
use crate::plan::inventory;
use crate::plan::kinds::coe::{Signal, TextMetric};
use crate::plan::kinds::longlora::Side;
use crate::plan::recipe::CoeRecipe;
use crate::plan::training::Adapter;
use crate::train::task::{Evaluation, Task};

/// One tokenized training or validation conversation, of the plan's task `task`.
struct Conversation {
    example: Example,
    images: Vec<String>,
    task: usize,
}

pub struct CoeMultitask {
    decoder_store: ParamStore,
    vision_store: ParamStore,
    connector_store: ParamStore,
    vlm: Vlm,
    tokenizer: Tokenizer,
    specials: Specials,
    loader: Loader,
    make: MakeBatch,
    /// Validation items, each with its exemplar (an index into `train`).
    validation: Vec<(Item, Option<usize>)>,
    validation_conversations: usize,
    /// The answering task's option conversations (`(A) …`, `(B) …` per validation item, in
    /// item order) and how many options each item has.
    make_options: MakeBatch,
    options_per_item: Vec<usize>,
    category_field: String,
    scorer: TextScorer,
    /// Per task, the summed token losses and tokens of the current step's micro-batches.
    step_losses: Mutex<Vec<(f64, i64)>>,
    train: Arc<Vec<Item>>,
    /// Retrieval over the training items, for items met later (`runner generate`).
    embedder: Embedder,
    pool: Vec<Vec<Sparse>>,
    signals: Vec<Signal>,
    threshold: f64,
    tasks: Vec<CoeTask>,
    system: String,
    image_tokens: usize,
    max_length: usize,
    max_new_tokens: i64,
    /// Item fields the text metrics are also broken down by.
    subgroups: Vec<String>,
    best: TextMetric,
    chain: bool,
    images: Arc<HashMap<String, Vec<f32>>>,
    image_root: PathBuf,
    image_size: i64,
    device: Device,
}

/// Per-sample scores collected under metric-name suffixes (`""` for all items, `/field=value`
/// for a subgroup), in the order the suffixes first appear.
#[derive(Default)]
struct Groups(Vec<(String, Vec<Vec<f64>>)>);

impl Groups {
    fn add(&mut self, keys: Vec<String>, row: Vec<f64>) {
        for key in keys {
            match self.0.iter_mut().find(|(k, _)| *k == key) {
                Some((_, rows)) => rows.push(row.clone()),
                None => self.0.push((key, vec![row.clone()])),
            }
        }
    }

    /// Each suffix with the mean of each column of its rows.
    fn means(&self) -> impl Iterator<Item = (&str, Vec<f64>)> + '_ {
        self.0.iter().map(|(key, rows)| {
            let columns = rows.first().map_or(0, Vec::len);
            let means = (0..columns)
                .map(|i| rows.iter().map(|r| r[i]).sum::<f64>() / rows.len() as f64)
                .collect();
            (key.as_str(), means)
        })
    }
}

/// A metric name's suffix for the items whose `field` is `value`: `/field=value`, without the
/// commas and spaces that metrics.csv and TensorBoard tags cannot hold.
fn group_suffix(field: &str, value: &str) -> String {
    format!("/{field}={}", value.replace([',', ' '], "_"))
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

type Exemplars = (Vec<Option<usize>>, Vec<Option<usize>>);

fn exemplar_cache(
    embedder: &Embedder,
    r: &crate::plan::kinds::coe::Retrieval,
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
    // RUNNER_CACHE_DIR moves the cache (a cluster's shared disk, a test's own folder).
    let dir = std::env::var_os("RUNNER_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("results/cache"));
    Ok(ExemplarCache {
        path: dir.join(format!("exemplars-{}.json", &hash[..16])),
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
        crate::files::write_atomic(&self.path, &bytes)
    }
}

/// Every image the items show, as normalised pixels.
fn load_images(items: &[&Item], root: &Path, size: u32) -> Result<HashMap<String, Vec<f32>>> {
    let mut out = HashMap::new();
    for item in items.iter().filter(|i| !i.image.is_empty()) {
        if out.contains_key(&item.image) {
            continue;
        }
        let pixels = images::load(&root.join(&item.image), size)?;
        let values = Vec::<f32>::try_from(pixels.flatten(0, -1))
            .map_err(|e| anyhow!("reading pixels: {e}"))?;
        out.insert(item.image.clone(), values);
    }
    Ok(out)
}

pub fn build(recipe: &CoeRecipe, device: Device) -> Result<CoeMultitask> {
    let m = &recipe.model;
    // First what fails fastest: METEOR's data (WordNet, Punkt) before any weights load.
    let scorer = TextScorer::new(&recipe.evaluation.metrics)?;
    let compute = Compute::of(recipe.training.precision);
    let seed = recipe.seed as i64;
    let tokenizer_path = match (&m.tokenizer, &m.path) {
        (Some(t), _) => PathBuf::from(t),
        (None, Some(dir)) => Path::new(dir).join("tokenizer.json"),
        (None, None) => bail!("model.tokenizer: a model built from parts needs a tokenizer.json"),
    };
    let tokenizer = match (&m.tokenizer, Tokenizer::load(&tokenizer_path)) {
        (None, Err(e)) => Err(e).context("Qwen-VL-Chat ships its tokenizer as qwen.tiktoken: convert it once with `scripts/qwen_tokenizer.py FOLDER` (writes FOLDER/tokenizer.json), or set model.tokenizer")?,
        (_, loaded) => loaded?,
    };
    let specials = Specials::of(&tokenizer)?;

    // The parts: from one Qwen-VL folder, or a CLIP tower (given or fresh), a fresh connector
    // and a fresh decoder.
    let arch = &m.vision.arch;
    let (vision_store, connector_store, mut decoder_store) = match &m.path {
        Some(dir) => {
            if m.vision.path.is_some() {
                bail!("model.vision.path: model.path already holds the vision tower\n  hint: set model.vision.path: null");
            }
            let parts = qwen_vl::Parts {
                vision: arch.clone(),
                connector: m.connector.clone(),
                decoder: m.decoder.clone(),
            };
            qwen_vl::load(Path::new(dir), &parts, device, compute.weights)?
        }
        None => {
            let init = |params: &[inventory::Param], std: f64, seed: i64| {
                ParamStore::init(params, |_| std, seed, device, compute.weights)
            };
            let vision_store = match &m.vision.path {
                Some(p) => vit::load(Path::new(p), device, compute.weights)?.1,
                None => init(&inventory::vision(arch), 0.02, seed + 1),
            };
            let connector_params = inventory::connector(&m.connector, arch, &m.decoder);
            let mut connector_store = init(&connector_params, 0.02, seed + 2);
            if let ConnectorSpec::Resampler { num_queries, .. } = &m.connector {
                let grid = (*num_queries as f64).sqrt().round() as i64;
                let table = sincos_2d(m.decoder.hidden_size as i64, grid);
                connector_store.insert("connector.pos_embed", table, inventory::Group::Connector);
            }
            let config = HfConfig::Decoder {
                arch: m.decoder.clone(),
                rope_factor: 1.0,
            };
            let decoder_store = hf_model::random(&config, seed, device, compute.weights);
            (vision_store, connector_store, decoder_store)
        }
    };
    // The class token's post-norm feeds CLIP's pooled output, which the model does not read.
    vision_store.set_trainable(|name, _| !m.vision.frozen && !name.contains("post_layernorm"));
    // Full fine-tuning trains the connector; with LoRA it stays frozen, as PEFT leaves Qwen-VL's
    // resampler, unless training.adapter.also_train names it (`connector`).
    let lora_spec = LoraSpec::of(&recipe.training.adapter);
    connector_store.set_trainable(|name, _| {
        name != "connector.pos_embed"
            && lora_spec
                .as_ref()
                .is_none_or(|s| s.also_train.iter().any(|a| name.contains(a.as_str())))
    });
    match (&recipe.training.adapter, &lora_spec) {
        (Adapter::Full, _) => decoder_store.set_trainable(|_, _| true),
        (_, Some(spec)) => {
            lora::attach(&mut decoder_store, spec, seed)?;
        }
        (_, None) => {
            bail!("training.adapter: hyperlora is IAG's; coe_multitask trains lora or full")
        }
    }
    let vlm = Vlm {
        vision: Vit::new(&vision_store, arch, compute.activations)?,
        connector: Connector::new(&connector_store, &m.connector)?,
        decoder: Llama::new(
            &decoder_store,
            &m.decoder,
            DecoderOptions::default(),
            compute.activations,
        )?,
        image_pad: specials.img_pad,
    };

    // Items, exemplars, conversations.
    let d = &recipe.data;
    let train_items = scienceqa::read(Path::new(&d.train))?;
    let validation_items = scienceqa::read(Path::new(&d.validation))?;
    if train_items.is_empty() {
        bail!("{}: no training items", d.train);
    }
    let root = d.image_root.as_ref().map(PathBuf::from).unwrap_or_else(|| {
        Path::new(&d.train)
            .parent()
            .unwrap_or(Path::new(""))
            .to_path_buf()
    });
    let all: Vec<&Item> = train_items.iter().chain(&validation_items).collect();
    let images = Arc::new(load_images(&all, &root, arch.image_size as u32)?);
    let r = &recipe.method.retrieval;
    let embedder = match &r.embedder {
        Some(dir) => Embedder::Encoder(Box::new(Encoder {
            bert: Bert::load(Path::new(dir), device)?,
            tokenizer: Tokenizer::load(&Path::new(dir).join("tokenizer.json"))?,
            dir: PathBuf::from(dir),
        })),
        None => {
            let corpus: Vec<&str> = train_items
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
            .map(|s| embedder.embed(&items.iter().map(|i| signal_text(i, *s)).collect::<Vec<_>>()))
            .collect::<Result<_>>()?;
        Ok((0..items.len())
            .map(|i| per_signal.iter().map(|v| v[i].clone()).collect())
            .collect())
    };
    let pool = vectors(&train_items)?;
    let cached = exemplar_cache(&embedder, r, &train_items, &validation_items)?;
    let (train_exemplars, validation_exemplars) = match cached.load() {
        Some(found) => found,
        None => {
            let best = |found: Vec<Vec<crate::data::exemplars::Exemplar>>| -> Vec<Option<usize>> {
                found
                    .into_iter()
                    .map(|f| f.first().map(|e| e.index))
                    .collect()
            };
            let top_k = r.top_k as usize;
            let train = best(retrieve(&pool, &pool, r.threshold, top_k, |q, p| q == p));
            let validation = best(retrieve(
                &vectors(&validation_items)?,
                &pool,
                r.threshold,
                top_k,
                |_, _| false,
            ));
            cached.save(&train, &validation)?;
            (train, validation)
        }
    };

    let t = &recipe.method.tasks;
    let weights = [t.question, t.rationale, t.distractor, t.answer];
    let tasks: Vec<CoeTask> = TASKS
        .iter()
        .zip(weights)
        .filter(|(_, w)| *w > 0.0)
        .map(|(t, _)| *t)
        .collect();
    if tasks.contains(&CoeTask::Answer) {
        for (items, file) in [(&train_items, &d.train), (&validation_items, &d.validation)] {
            if let Some(item) = items.iter().find(|i| i.answer_index().is_none()) {
                bail!(
                    "{file}: item {}: its answer {:?} is not one of its choices {:?}, which the answering task needs\n  hint: give each item `choices` that include the answer, or set method.tasks.answer: 0",
                    item.id,
                    item.answer,
                    item.choices
                );
            }
        }
    }
    let image_tokens = m.connector.tokens_per_image(arch) as usize;
    let max_length = d.max_length as usize;
    let encode_turns = |turns: &[Turn], item: &Item, task: usize| -> Result<Conversation> {
        let e = chatml::encode(
            &tokenizer,
            &specials,
            &d.system_prompt,
            turns,
            image_tokens,
            max_length,
        )
        .with_context(|| format!("item {}", item.id))?;
        Ok(Conversation {
            example: e.example,
            images: e.images,
            task,
        })
    };
    let encode = |k: usize, item: &Item, exemplar: Option<&Item>| -> Result<Conversation> {
        encode_turns(&scienceqa::conversation(tasks[k], item, exemplar), item, k)
    };
    // The mixture decides which task each training example comes from (each task's items in
    // a seeded order, cycling), as many examples as the tasks have items together.
    let mut per_task: Vec<Vec<Conversation>> = Vec::new();
    for k in 0..tasks.len() {
        let mut list = Vec::new();
        for (i, item) in train_items.iter().enumerate() {
            list.push(encode(
                k,
                item,
                train_exemplars[i].map(|j| &train_items[j]),
            )?);
        }
        per_task.push(list);
    }
    let task_weights: Vec<f64> = tasks
        .iter()
        .map(|t| weights[TASKS.iter().position(|x| x == t).unwrap_or(0)])
        .collect();
    let mut mixture = Mixture::new(&task_weights, t.mixing, t.temperature, recipe.seed);
    // Within a task, items come category by category when the plan weights categories (the
    // DataEngine loop), else all from one group; each group's items in a seeded order, cycling.
    let groups = match &d.category_weights {
        Some(path) => categories::weighted_groups(
            &train_items,
            &d.category_field,
            &categories::read_weights(path)?,
            &d.train,
        )?,
        None => vec![(1.0, (0..train_items.len()).collect())],
    };
    let total: usize = per_task.iter().map(Vec::len).sum();
    let train: Vec<Conversation> = training_sequence(&mut mixture, &groups, total, recipe.seed)
        .into_iter()
        .map(|(k, i)| {
            let c = &per_task[k][i];
            Conversation {
                example: Example {
                    ids: c.example.ids.clone(),
                    labels: c.example.labels.clone(),
                },
                images: c.images.clone(),
                task: k,
            }
        })
        .collect();
    let mut validation_conversations = Vec::new();
    for k in 0..tasks.len() {
        for (i, item) in validation_items.iter().enumerate() {
            validation_conversations.push(encode(
                k,
                item,
                validation_exemplars[i].map(|j| &train_items[j]),
            )?);
        }
    }
    // Answering is scored by the option the model finds likeliest: one conversation per option.
    let (mut options, mut options_per_item) = (Vec::new(), Vec::new());
    if let Some(k) = tasks.iter().position(|t| *t == CoeTask::Answer) {
        for (i, item) in validation_items.iter().enumerate() {
            let exemplar = validation_exemplars[i].map(|j| &train_items[j]);
            let mut turns = scienceqa::conversation(CoeTask::Answer, item, exemplar);
            for c in 0..item.choices.len() {
                turns[1].value = scienceqa::choice(item, c);
                let mut option = encode_turns(&turns, item, k)?;
                let reply = tokenizer.encode(&turns[1].value, false)?;
                if !chatml::label_last_reply_only(&mut option.example, &reply, &specials) {
                    bail!(
                        "{}: item {}: the answering prompt with its options is longer than data.max_length ({max_length} tokens), so option {} is cut\n  hint: raise data.max_length",
                        d.validation,
                        item.id,
                        turns[1].value
                    );
                }
                options.push(option);
            }
            options_per_item.push(item.choices.len());
        }
    }
    let n_validation = validation_conversations.len();
    let size = arch.image_size as i64;
    let pad = tokenizer.id("<|endoftext|>")?;
    let make_of = |list: Vec<Conversation>| -> MakeBatch {
        let list = Arc::new(list);
        let images = Arc::clone(&images);
        Arc::new(move |indices: &[usize]| {
            let members: Vec<&Conversation> = indices.iter().map(|&i| &list[i]).collect();
            let examples: Vec<&Example> = members.iter().map(|c| &c.example).collect();
            let mut batch = collate(&examples, pad, Side::Right, 1);
            let mut pixels = Vec::new();
            let mut count = 0;
            for c in &members {
                for image in &c.images {
                    pixels.extend_from_slice(&images[image]);
                    count += 1;
                }
            }
            batch.extra.push((
                "pixels",
                Tensor::from_slice(&pixels).view([count, 3, size, size]),
            ));
            let task: Vec<i64> = members.iter().map(|c| c.task as i64).collect();
            batch.extra.push(("task", Tensor::from_slice(&task)));
            batch
        })
    };
    let train_len = train.len();
    let loader = Loader {
        len: train_len,
        batch_size: recipe.training.micro_batch_size as usize,
        seed: recipe.seed,
        lengths: None,
        make: make_of(train),
    };
    let ev = &recipe.evaluation;
    Ok(CoeMultitask {
        decoder_store,
        vision_store,
        connector_store,
        vlm,
        tokenizer,
        specials,
        loader,
        make: make_of(validation_conversations),
        make_options: make_of(options),
        options_per_item,
        category_field: d.category_field.clone(),
        scorer,
        step_losses: Mutex::new(vec![(0.0, 0); tasks.len()]),
        validation: validation_items
            .into_iter()
            .zip(validation_exemplars)
            .collect(),
        validation_conversations: n_validation,
        train: Arc::new(train_items),
        embedder,
        pool,
        signals: r.signals.clone(),
        threshold: r.threshold,
        tasks,
        system: d.system_prompt.clone(),
        image_tokens,
        max_length,
        max_new_tokens: ev.max_new_tokens as i64,
        subgroups: ev.subgroups.clone(),
        best: ev.best_metric,
        chain: ev.chain,
        images,
        image_root: root,
        image_size: size,
        device,
    })
}

impl CoeMultitask {
    /// The tasks the plan trains, in CoE's order.
    pub fn tasks(&self) -> &[CoeTask] {
        &self.tasks
    }

    /// The best training item to show as the exemplar of a new item.
    pub fn exemplar(&self, item: &Item) -> Option<&Item> {
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
        found[0].first().map(|e| &self.train[e.index])
    }

    /// The model's reply to `task` on `item`, given the item's own question.
    pub fn reply(&self, task: CoeTask, item: &Item) -> Result<String> {
        self.generate(task, item, self.exemplar(item), None, None)
    }

    /// CoE's chain on `item`: its question, a rationale from that question, and distractors
    /// from both.
    pub fn chain(&self, item: &Item) -> Result<[String; 3]> {
        let exemplar = self.exemplar(item);
        let question = self.generate(CoeTask::Question, item, exemplar, None, None)?;
        let rationale = self.generate(CoeTask::Rationale, item, exemplar, Some(&question), None)?;
        let distractors = self.generate(
            CoeTask::Distractor,
            item,
            exemplar,
            Some(&question),
            Some(&rationale),
        )?;
        Ok([question, rationale, distractors])
    }

    fn pixels(&self, batch: &Batch) -> Option<Tensor> {
        let p = batch.extra("pixels");
        (p.size()[0] > 0).then(|| p.shallow_clone())
    }

    /// The model's greedy reply to `task` on `item` (given a generated question and rationale
    /// in the chain).
    fn generate(
        &self,
        task: CoeTask,
        item: &Item,
        exemplar: Option<&Item>,
        question: Option<&str>,
        rationale: Option<&str>,
    ) -> Result<String> {
        let turns = [Turn {
            from: "user".into(),
            value: scienceqa::prompt(task, item, exemplar, question, rationale),
        }];
        let e = chatml::encode(
            &self.tokenizer,
            &self.specials,
            &self.system,
            &turns,
            self.image_tokens,
            self.max_length,
        )?;
        let mut ids = e.example.ids;
        ids.push(self.specials.im_start);
        ids.extend(self.tokenizer.encode("assistant", false)?);
        ids.push(self.specials.newline);
        let prompt = Tensor::from_slice(&ids)
            .view([1, -1])
            .to_device(self.device);
        let mut pixels: Vec<f32> = Vec::new();
        for image in &e.images {
            match self.images.get(image) {
                Some(p) => pixels.extend(p),
                None => {
                    let loaded =
                        images::load(&self.image_root.join(image), self.image_size as u32)?;
                    pixels.extend(
                        Vec::<f32>::try_from(loaded.flatten(0, -1))
                            .map_err(|e| anyhow!("reading pixels: {e}"))?,
                    );
                }
            }
        }
        let s = self.image_size;
        let pixels = (!e.images.is_empty()).then(|| {
            Tensor::from_slice(&pixels)
                .view([e.images.len() as i64, 3, s, s])
                .to_device(self.device)
        });
        let options = GenerateOptions {
            max_new_tokens: self.max_new_tokens,
            strategy: Strategy::Greedy,
            eos: Some(self.specials.im_end),
            pad: 0,
            seed: 0,
        };
        let out = generate::multimodal(&self.vlm, &prompt, None, pixels.as_ref(), &options)?;
        let out = Vec::<i64>::try_from(out.view([-1]).to_device(Device::Cpu))
            .map_err(|e| anyhow!("reading generated tokens: {e}"))?;
        let end = out
            .iter()
            .position(|&t| t == self.specials.im_end)
            .unwrap_or(out.len());
        // An image tag in a reply would be read as an image where the chain feeds it on.
        let text = self.tokenizer.decode(&out[..end], true)?;
        Ok(text
            .replace("<img>", "")
            .replace("</img>", "")
            .trim()
            .to_string())
    }

    /// The metric-name suffixes an item's scores count under: `""` (all items) and
    /// `/field=value` for each subgroup field it has.
    fn subgroup_keys(&self, item: &Item) -> Vec<String> {
        let mut keys = vec![String::new()];
        for field in &self.subgroups {
            if let Some(value) = categories::category(item, field) {
                keys.push(group_suffix(field, &value));
            }
        }
        keys
    }

    /// Answering accuracy (×100; overall and per category) with each item's answer taken as
    /// its lowest-loss option (mean over the option's tokens), as the DataEngine's evaluation
    /// picks it; and `round(1 − accuracy, 3)` per category.
    fn answer_accuracy(&self) -> (Vec<(String, f64)>, std::collections::BTreeMap<String, f64>) {
        let n: usize = self.options_per_item.iter().sum();
        let all: Vec<usize> = (0..n).collect();
        let mut losses = Vec::with_capacity(n);
        self.example_losses(&self.make_options, &all, |sums, counts| {
            let mean = (sums / counts.clamp_min(1)).to_kind(Kind::Double);
            losses.extend(Vec::<f64>::try_from(mean).expect("a CPU vector"));
        });
        let mut outcomes = Vec::new();
        let mut start = 0;
        for ((item, _), &count) in self.validation.iter().zip(&self.options_per_item) {
            let picked = losses[start..start + count]
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i);
            start += count;
            let category =
                categories::category(item, &self.category_field).unwrap_or_else(|| "(none)".into());
            outcomes.push((item, category, picked == item.answer_index()));
        }
        let mut groups = Groups::default();
        for (item, category, right) in &outcomes {
            // By subgroup, and by the category the error rates are kept by.
            let mut keys = self.subgroup_keys(item);
            if !self.subgroups.contains(&self.category_field) {
                keys.push(group_suffix(&self.category_field, category));
            }
            groups.add(keys, vec![f64::from(u8::from(*right))]);
        }
        let metrics = groups
            .means()
            .map(|(key, mean)| (format!("answer_accuracy{key}"), 100.0 * mean[0]))
            .collect();
        let rates = categories::error_rates(
            &outcomes
                .into_iter()
                .map(|(_, c, right)| (c, right))
                .collect::<Vec<_>>(),
        );
        (metrics, rates)
    }

    /// Token-weighted validation loss of each task's conversations (they come task by task),
    /// and of all together.
    fn validation_losses(&self) -> (Vec<f64>, f64) {
        let per_task = self.validation_conversations / self.tasks.len().max(1);
        let sums: Vec<(f64, i64)> = (0..self.tasks.len())
            .map(|k| self.loss_over(&(k * per_task..(k + 1) * per_task).collect::<Vec<_>>()))
            .collect();
        let (total, tokens) = sums.iter().fold((0.0, 0), |(a, b), (c, d)| (a + c, b + d));
        (
            sums.iter().map(|(l, n)| l / (*n).max(1) as f64).collect(),
            total / tokens.max(1) as f64,
        )
    }

    /// Summed token losses and the token count over the given validation conversations.
    fn loss_over(&self, indices: &[usize]) -> (f64, i64) {
        let (mut total, mut tokens) = (0.0, 0i64);
        self.example_losses(&self.make, indices, |sums, counts| {
            total += sums.sum(Kind::Double).double_value(&[]);
            tokens += counts.sum(Kind::Int64).int64_value(&[]);
        });
        (total, tokens)
    }

    /// Each example's summed token losses and token count (on the CPU), eight conversations of
    /// `make`'s list at a time, without gradients.
    fn example_losses(
        &self,
        make: &MakeBatch,
        indices: &[usize],
        mut each: impl FnMut(Tensor, Tensor),
    ) {
        tch::no_grad(|| {
            for chunk in indices.chunks(8) {
                let batch = make(chunk).to_device(self.device);
                let logits = self
                    .vlm
                    .forward(
                        &batch.input_ids,
                        Some(&batch.attention_mask),
                        self.pixels(&batch).as_ref(),
                        &Tape::plain(),
                        false,
                    )
                    .expect("image placeholders match the images");
                let (sums, counts) = causal_lm_example_losses(&logits, &batch.labels);
                each(sums.to_device(Device::Cpu), counts.to_device(Device::Cpu));
            }
        });
    }
}

impl Task for CoeMultitask {
    fn stores(&self) -> Vec<(&'static str, &ParamStore)> {
        vec![
            ("", &self.decoder_store),
            ("vision.", &self.vision_store),
            ("connector.", &self.connector_store),
        ]
    }

    fn device(&self) -> Device {
        self.device
    }

    fn loader(&self) -> &Loader {
        &self.loader
    }

    fn loss<'a>(&'a self, batch: &Batch, tape: &Tape<'a>, _step: u64) -> Tensor {
        let logits = self
            .vlm
            .forward(
                &batch.input_ids,
                Some(&batch.attention_mask),
                self.pixels(batch).as_ref(),
                tape,
                true,
            )
            .expect("image placeholders match the images");
        let (sums, counts) = causal_lm_example_losses(&logits, &batch.labels);
        // Each task's share of the step, for its own loss curve.
        let cpu = |t: &Tensor, kind: Kind| t.detach().to_device(Device::Cpu).to_kind(kind);
        let values = Vec::<f64>::try_from(cpu(&sums, Kind::Double)).expect("a CPU vector");
        let tokens = Vec::<i64>::try_from(cpu(&counts, Kind::Int64)).expect("a CPU vector");
        let tasks =
            Vec::<i64>::try_from(cpu(batch.extra("task"), Kind::Int64)).expect("a CPU vector");
        let mut step = self.step_losses.lock().unwrap_or_else(|e| e.into_inner());
        for ((v, n), k) in values.iter().zip(&tokens).zip(&tasks) {
            step[*k as usize].0 += v;
            step[*k as usize].1 += n;
        }
        sums.sum(Kind::Float) / counts.sum(Kind::Int64).clamp_min(1)
    }

    /// Each task's token-weighted loss over the step's micro-batches (tasks the step did not
    /// draw are left out of it).
    fn step_metrics(&self) -> Vec<(String, f64)> {
        let mut step = self.step_losses.lock().unwrap_or_else(|e| e.into_inner());
        let metrics = self
            .tasks
            .iter()
            .zip(step.iter())
            .filter(|(_, (_, n))| *n > 0)
            .map(|(t, (sum, n))| (format!("{}_loss", t.name()), sum / *n as f64))
            .collect();
        step.iter_mut().for_each(|s| *s = (0.0, 0));
        metrics
    }

    /// Validation loss (overall and per task); each generation task's text metrics (×100) over
    /// greedy generations, overall and by subgroup; the answering task's accuracy by its
    /// likeliest option, with `error_rates.json` per category; CoE's chain on the first item.
    fn evaluate(&self) -> Result<Evaluation> {
        let (task_losses, loss) = self.validation_losses();
        let mut metrics = vec![("loss".to_string(), loss)];
        for (task, l) in self.tasks.iter().zip(task_losses) {
            metrics.push((format!("{}_loss", task.name()), l));
        }
        for &task in self.tasks.iter().filter(|t| **t != CoeTask::Answer) {
            let mut groups = Groups::default();
            for (item, exemplar) in &self.validation {
                let exemplar = exemplar.map(|j| &self.train[j]);
                let generated = self.generate(task, item, exemplar, None, None)?;
                let scores = self.scorer.score(&generated, &[task.target(item)])?;
                groups.add(self.subgroup_keys(item), scores);
            }
            for (suffix, means) in groups.means() {
                for (metric, mean) in self.scorer.metrics().iter().zip(means) {
                    metrics.push((
                        format!("{}_{}{suffix}", task.name(), metric.name()),
                        100.0 * mean,
                    ));
                }
            }
        }
        let mut files = Vec::new();
        if self.tasks.contains(&CoeTask::Answer) {
            let (accuracy, rates) = self.answer_accuracy();
            metrics.extend(accuracy);
            files.push((
                "error_rates.json".to_string(),
                serde_json::to_string_pretty(&rates)? + "\n",
            ));
        }
        let mut samples = Vec::new();
        if let (true, Some((item, _))) = (self.chain, self.validation.first()) {
            let [question, rationale, distractors] = self.chain(item)?;
            samples.push((
                "chain".to_string(),
                format!(
                    "answer: {}\n\nquestion → {question}\n\nrationale → {rationale}\n\ndistractors → {distractors}\n\n(gold question: {})",
                    item.answer, item.question
                ),
            ));
        }
        Ok(Evaluation {
            metrics,
            samples,
            files,
        })
    }

    fn best_metric(&self) -> (&'static str, bool) {
        match self.best {
            TextMetric::Bleu4 => ("question_bleu4", true),
            TextMetric::RougeL => ("question_rouge_l", true),
            TextMetric::Meteor => ("question_meteor", true),
            TextMetric::Loss => ("loss", false),
        }
    }

    /// Every weight of the three parts in `model/model.safetensors` (HF names).
    fn save(&self, dir: &Path) -> Result<()> {
        let dir = dir.join("model");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tensors: Vec<(String, Tensor)> = [
            &self.decoder_store,
            &self.vision_store,
            &self.connector_store,
        ]
        .iter()
        .flat_map(|s| {
            s.iter()
                .map(|(n, t, _)| (n.to_string(), t.detach()))
                .collect::<Vec<_>>()
        })
        .collect();
        let refs: Vec<&(String, Tensor)> = tensors.iter().collect();
        write_safetensors(&dir.join("model.safetensors"), &refs)
    }
}

//! CoE's training data: ScienceQA-style items and their images, turned into ChatML
//! conversations per task (each prompt carrying the item's exemplar), mixed across tasks and,
//! in the DataEngine loop, drawn category by category; and the batches they make.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use tch::Tensor;

use crate::data::batch::{collate, Example};
use crate::data::chatml::{self, Specials, Turn};
use crate::data::images;
use crate::data::loader::MakeBatch;
use crate::data::mixture::{training_sequence, Mixture};
use crate::data::scienceqa::{self, Item, Task as CoeTask, TASKS};
use crate::data::tokenizer::Tokenizer;
use crate::plan::kinds::coe::{Data, Tasks};
use crate::plan::kinds::longlora::Side;

/// One tokenized conversation, of the plan's task number `task`.
pub struct Conversation {
    pub example: Example,
    pub images: Vec<String>,
    pub task: usize,
}

/// The items a run reads, and every image they show as normalised pixels.
pub struct Items {
    pub train: Vec<Item>,
    pub validation: Vec<Item>,
    /// Where the items' image paths start (`data.image_root`, else the training file's folder).
    pub root: PathBuf,
    pub images: Arc<HashMap<String, Vec<f32>>>,
}

impl Items {
    pub fn read(d: &Data, image_size: u32) -> Result<Items> {
        let train = scienceqa::read(Path::new(&d.train))?;
        let validation = scienceqa::read(Path::new(&d.validation))?;
        if train.is_empty() {
            bail!("{}: no training items", d.train);
        }
        let root = d.image_root.as_ref().map(PathBuf::from).unwrap_or_else(|| {
            Path::new(&d.train)
                .parent()
                .unwrap_or(Path::new(""))
                .to_path_buf()
        });
        let all: Vec<&Item> = train.iter().chain(&validation).collect();
        let images = Arc::new(load_images(&all, &root, image_size)?);
        Ok(Items {
            train,
            validation,
            root,
            images,
        })
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

/// The tasks the plan trains, in CoE's order, with their mixture weights.
pub fn tasks(t: &Tasks) -> Vec<(CoeTask, f64)> {
    let weights = [t.question, t.rationale, t.distractor, t.answer];
    TASKS
        .iter()
        .zip(weights)
        .filter(|(_, w)| *w > 0.0)
        .map(|(t, w)| (*t, w))
        .collect()
}

/// How items become conversations: the tokenizer, the system prompt, and the room an image
/// takes in a sequence of at most `max_length` tokens.
pub struct Prompts<'a> {
    pub tokenizer: &'a Tokenizer,
    pub specials: &'a Specials,
    pub system: &'a str,
    pub image_tokens: usize,
    pub max_length: usize,
    pub tasks: &'a [CoeTask],
}

impl Prompts<'_> {
    fn encode_turns(&self, turns: &[Turn], item: &Item, task: usize) -> Result<Conversation> {
        let e = chatml::encode(
            self.tokenizer,
            self.specials,
            self.system,
            turns,
            self.image_tokens,
            self.max_length,
        )
        .with_context(|| format!("item {}", item.id))?;
        Ok(Conversation {
            example: e.example,
            images: e.images,
            task,
        })
    }

    fn encode(&self, k: usize, item: &Item, exemplar: Option<&Item>) -> Result<Conversation> {
        self.encode_turns(
            &scienceqa::conversation(self.tasks[k], item, exemplar),
            item,
            k,
        )
    }

    /// The answering task needs each item's answer among its choices.
    pub fn check_answers(&self, items: &[Item], file: &str) -> Result<()> {
        if !self.tasks.contains(&CoeTask::Answer) {
            return Ok(());
        }
        if let Some(item) = items.iter().find(|i| i.answer_index().is_none()) {
            bail!(
                "{file}: item {}: its answer {:?} is not one of its choices {:?}, which the answering task needs\n  hint: give each item `choices` that include the answer, or set method.tasks.answer: 0",
                item.id,
                item.answer,
                item.choices
            );
        }
        Ok(())
    }

    /// The training conversations in order: the mixture decides which task each comes from
    /// (each task's items in a seeded order, cycling), as many as the tasks have items
    /// together; within a task, items come from `groups` (category weights), each group's
    /// items in a seeded order, cycling.
    pub fn training(
        &self,
        items: &[Item],
        exemplars: &[Option<usize>],
        mixture: &mut Mixture,
        groups: &[(f64, Vec<usize>)],
        seed: u64,
    ) -> Result<Vec<Conversation>> {
        let mut per_task: Vec<Vec<Conversation>> = Vec::new();
        for k in 0..self.tasks.len() {
            let mut list = Vec::new();
            for (i, item) in items.iter().enumerate() {
                list.push(self.encode(k, item, exemplars[i].map(|j| &items[j]))?);
            }
            per_task.push(list);
        }
        let total: usize = per_task.iter().map(Vec::len).sum();
        Ok(training_sequence(mixture, groups, total, seed)
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
            .collect())
    }

    /// Every task's conversation of every validation item, task by task.
    pub fn validation(
        &self,
        items: &[Item],
        exemplars: &[Option<usize>],
        train: &[Item],
    ) -> Result<Vec<Conversation>> {
        let mut out = Vec::new();
        for k in 0..self.tasks.len() {
            for (i, item) in items.iter().enumerate() {
                out.push(self.encode(k, item, exemplars[i].map(|j| &train[j]))?);
            }
        }
        Ok(out)
    }

    /// Answering is scored by the option the model finds likeliest: one conversation per
    /// option of each validation item (labelled on the option's own tokens), and how many
    /// options each item has.
    pub fn options(
        &self,
        items: &[Item],
        exemplars: &[Option<usize>],
        train: &[Item],
        file: &str,
    ) -> Result<(Vec<Conversation>, Vec<usize>)> {
        let (mut options, mut per_item) = (Vec::new(), Vec::new());
        let Some(k) = self.tasks.iter().position(|t| *t == CoeTask::Answer) else {
            return Ok((options, per_item));
        };
        for (i, item) in items.iter().enumerate() {
            let exemplar = exemplars[i].map(|j| &train[j]);
            let mut turns = scienceqa::conversation(CoeTask::Answer, item, exemplar);
            for c in 0..item.choices.len() {
                turns[1].value = scienceqa::choice(item, c);
                let mut option = self.encode_turns(&turns, item, k)?;
                let reply = self.tokenizer.encode(&turns[1].value, false)?;
                if !chatml::label_last_reply_only(&mut option.example, &reply, self.specials) {
                    bail!(
                        "{file}: item {}: the answering prompt with its options is longer than data.max_length ({} tokens), so option {} is cut\n  hint: raise data.max_length",
                        item.id,
                        self.max_length,
                        turns[1].value
                    );
                }
                options.push(option);
            }
            per_item.push(item.choices.len());
        }
        Ok((options, per_item))
    }
}

/// Batches of `list`'s conversations: padded tokens, the pixels of their images in order, and
/// each conversation's task.
pub fn batches(
    list: Vec<Conversation>,
    images: &Arc<HashMap<String, Vec<f32>>>,
    pad: i64,
    size: i64,
) -> MakeBatch {
    let list = Arc::new(list);
    let images = Arc::clone(images);
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
}

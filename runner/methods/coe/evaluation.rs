//! CoE's evaluation: validation loss per task, greedy generations scored by BLEU-4, ROUGE-L
//! and METEOR (overall and by subgroup), answering accuracy by the likeliest option with the
//! error rates per category that the DataEngine loop reads, and CoE's chain on one item.

use anyhow::{anyhow, Result};
use tch::{Device, Kind, Tensor};

use super::CoeMultitask;
use crate::data::batch::Batch;
use crate::data::categories;
use crate::data::chatml::{self, Turn};
use crate::data::images;
use crate::data::loader::MakeBatch;
use crate::data::scienceqa::{self, Item, Task as CoeTask};
use crate::models::generate::{self, GenerateOptions, Strategy};
use crate::models::loss::causal_lm_example_losses;
use crate::models::Tape;
use crate::train::task::Evaluation;

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

impl CoeMultitask {
    /// Validation loss (overall and per task); each generation task's text metrics (×100) over
    /// greedy generations, overall and by subgroup; the answering task's accuracy by its
    /// likeliest option, with `error_rates.json` per category; CoE's chain on the first item.
    pub(super) fn evaluation(&self) -> Result<Evaluation> {
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
            ..Evaluation::default()
        })
    }

    /// The model's logits for a batch of conversations with their images, through `tape`.
    pub(super) fn logits<'a>(&'a self, batch: &Batch, tape: &Tape<'a>, train: bool) -> Tensor {
        self.model
            .vlm
            .forward(
                &batch.input_ids,
                Some(&batch.attention_mask),
                self.pixels(batch).as_ref(),
                tape,
                train,
            )
            .expect("image placeholders match the images")
    }

    pub(super) fn pixels(&self, batch: &Batch) -> Option<Tensor> {
        let p = batch.extra("pixels");
        (p.size()[0] > 0).then(|| p.shallow_clone())
    }

    /// The model's greedy reply to `task` on `item` (given a generated question and rationale
    /// in the chain).
    pub(super) fn generate(
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
        let out = generate::multimodal(&self.model.vlm, &prompt, None, pixels.as_ref(), &options)?;
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
                let logits = self.logits(&batch, &Tape::plain(), false);
                let (sums, counts) = causal_lm_example_losses(&logits, &batch.labels);
                each(sums.to_device(Device::Cpu), counts.to_device(Device::Cpu));
            }
        });
    }
}

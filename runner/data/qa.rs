//! Open-domain QA data in FiD/DPR's JSON format, as IAG reads it:
//! `{question, answers, target?, ctxs: [{title, text, score?}], pred?, compressed_ctxs_N?}`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Result};
use serde::Deserialize;
use serde_json::Value;

use super::records;
use crate::models::fid;

#[derive(Clone, Debug, Deserialize)]
pub struct Passage {
    #[serde(default)]
    pub title: String,
    pub text: String,
    /// Retrieval score; DPR files write it as a number or a string.
    #[serde(default)]
    pub score: Option<Value>,
}

impl Passage {
    fn score(&self) -> f64 {
        match &self.score {
            Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
            Some(Value::String(s)) => s.parse().unwrap_or(0.0),
            _ => 0.0,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct QaItem {
    pub question: String,
    #[serde(default)]
    pub answers: Vec<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub ctxs: Vec<Passage>,
    /// Every other field: `pred`, `compressed_ctxs_N`, ids.
    #[serde(flatten)]
    pub fields: BTreeMap<String, Value>,
}

/// Reads a JSON list (or JSONL) of QA items.
pub fn read(path: &Path) -> Result<Vec<QaItem>> {
    records::read(path, "questions")?
        .into_iter()
        .map(|(place, v)| {
            let item: QaItem = serde_json::from_value(v).map_err(|e| {
                anyhow!(
                    "{} ({place}): {e}\n  hint: FiD/DPR format: question, answers, ctxs [{{title, text, score}}]",
                    path.display()
                )
            })?;
            if item.answers.is_empty() && item.target.is_none() {
                return Err(anyhow!("{} ({place}): no `answers` and no `target`", path.display()));
            }
            Ok(item)
        })
        .collect()
}

impl QaItem {
    /// The teacher's passages: the first `n` contexts (highest score first when `sort`), each
    /// as FiD writes it; a question without contexts reads the question alone, as FiD does.
    pub fn passages(&self, n: usize, sort: bool) -> Vec<String> {
        let mut ctxs: Vec<&Passage> = self.ctxs.iter().collect();
        if sort {
            ctxs.sort_by(|a, b| b.score().total_cmp(&a.score()));
        }
        if ctxs.is_empty() {
            return vec![format!("question: {}", self.question)];
        }
        ctxs.iter()
            .take(n)
            .map(|c| fid::passage_text(&self.question, &c.title, &c.text))
            .collect()
    }

    /// The student's input: `question \n context`, the context taken from `field` with its first
    /// `skip` characters cut (IAG cuts the instruction of compressed prompts); the question alone
    /// when there is no field (closed book).
    pub fn student_input(&self, field: Option<&str>, skip: usize) -> Result<String> {
        let Some(field) = field else {
            return Ok(self.question.clone());
        };
        let context = self.fields.get(field).and_then(Value::as_str).ok_or_else(|| {
            anyhow!(
                "question {:?} has no text field `{field}`\n  hint: model.student.context_field names the imagined context (pred, compressed_ctxs_N) or is null",
                self.question
            )
        })?;
        let context: String = context.chars().skip(skip).collect();
        Ok(format!("{}\n{}", self.question, context))
    }

    /// The training target: `target`, else the first answer (IAG draws one at random each epoch).
    pub fn target(&self) -> &str {
        self.target
            .as_deref()
            .or(self.answers.first().map(String::as_str))
            .unwrap_or("")
    }

    /// The gold answers for EM/F1 (the target when a file has no answers).
    pub fn golds(&self) -> Vec<String> {
        match self.answers.is_empty() {
            true => vec![self.target().to_string()],
            false => self.answers.clone(),
        }
    }
}

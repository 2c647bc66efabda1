//! ScienceQA-style items and the prompts CoE builds from them (`prepare_multitask.py`,
//! `prepare_dg.py`): for each task a user turn of the picture, the context, what is given,
//! the task's instruction and one retrieved exemplar, and the assistant's target.
//!
//! - question generation (QG): given the answer → the question;
//! - rationale generation (RG): given question and answer → `lecture + solution`;
//! - distractor generation (DG): given question and answer → `(1) d1\n(2) d2…`;
//! - answering (A, ScienceQA's own task, which the data-engine loop's error rates measure):
//!   given the question and its options → `(B) choice`.

use std::path::Path;

use anyhow::Result;
use serde::Deserialize;

use super::chatml::Turn;
use super::records;

#[derive(Clone, Debug, Deserialize)]
pub struct Item {
    pub id: String,
    /// Image file, relative to the data's image root; empty for none.
    #[serde(default)]
    pub image: String,
    pub question: String,
    pub answer: String,
    #[serde(default)]
    pub distractors: Vec<String>,
    /// The multiple-choice options, the answer among them (for the answering task).
    #[serde(default)]
    pub choices: Vec<String>,
    /// The context (ScienceQA's hint); empty for none.
    #[serde(default)]
    pub hint: String,
    #[serde(default)]
    pub lecture: String,
    #[serde(default)]
    pub solution: String,
    /// Any other fields (subject, grade, context_type), for subgroup metrics.
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

pub fn read(path: &Path) -> Result<Vec<Item>> {
    records::read_as(
        path,
        "{id, image, question, answer, choices, distractors, hint, lecture, solution}",
        "each item needs string keys id, question and answer",
    )
}

/// The three CoE tasks and answering, in the plan's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    Question,
    Rationale,
    Distractor,
    Answer,
}

pub const TASKS: [Task; 4] = [
    Task::Question,
    Task::Rationale,
    Task::Distractor,
    Task::Answer,
];

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Question => "question",
            Task::Rationale => "rationale",
            Task::Distractor => "distractor",
            Task::Answer => "answer",
        }
    }

    fn instruction(self) -> &'static str {
        match self {
            Task::Question => "generate a question based on the above picture, context and the corresponding answer.",
            Task::Rationale => "generate a rationale based on the above picture, context, question and answer.",
            Task::Distractor => "generate at least 1 plausible yet incorrect answers which should be similar and grammatically consistent with the correct answer and seperate them with numbers like (1) (2) (3).",
            Task::Answer => "answer with the option's letter and text from the given choices.",
        }
    }

    /// What the model should write for `item`.
    pub fn target(self, item: &Item) -> String {
        match self {
            Task::Question => item.question.clone(),
            Task::Rationale => format!("{} {}", item.lecture, item.solution)
                .trim()
                .to_string(),
            Task::Distractor => numbered(&item.distractors),
            Task::Answer => choice(item, item.answer_index().unwrap_or(0)),
        }
    }
}

impl Item {
    /// Where the answer is among the choices; None when it is not one of them.
    pub fn answer_index(&self) -> Option<usize> {
        self.choices.iter().position(|c| *c == self.answer)
    }
}

/// Choice `i` as the answering task writes it: `(C) yellow`.
pub fn choice(item: &Item, i: usize) -> String {
    let letter = char::from(b'A' + (i % 26) as u8);
    format!(
        "({letter}) {}",
        item.choices.get(i).map_or("", String::as_str)
    )
}

/// `(A) red (B) blue (C) yellow`.
fn options(item: &Item) -> String {
    (0..item.choices.len())
        .map(|i| choice(item, i))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `(1) a\n(2) b`.
pub fn numbered(items: &[String]) -> String {
    items
        .iter()
        .enumerate()
        .map(|(i, d)| format!("({}) {d}", i + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Picture and context lines, as every prompt and exemplar starts.
fn scene(item: &Item) -> String {
    let mut s = String::new();
    if !item.image.is_empty() {
        s += &format!("Picture: <img>{}</img>\n", item.image);
    }
    if !item.hint.is_empty() {
        s += &format!("Context: {}\n", item.hint);
    }
    s
}

/// What a task is given: the answer (QG), the question and answer (RG, DG), or the question
/// and its options (A). `question` replaces the item's own in the chain, where it was generated.
fn given(task: Task, item: &Item, question: &str, rationale: Option<&str>) -> String {
    match task {
        Task::Question => format!("Answer: {}\n", item.answer),
        Task::Rationale => format!("Question: {question}\nAnswer: {}\n", item.answer),
        Task::Distractor => match rationale {
            Some(r) => format!(
                "Question: {question}\nReasoning: {r}\nAnswer: {}\n",
                item.answer
            ),
            None => format!("Question: {question}\nAnswer: {}\n", item.answer),
        },
        Task::Answer => format!("Question: {question}\nOptions: {}\n", options(item)),
    }
}

/// The exemplar block: `\nExample:\n` + the exemplar's scene, what it was given and its target.
fn example(task: Task, exemplar: &Item) -> String {
    let shown = match task {
        Task::Question => format!(
            "Answer: {}\nQuestion: {}",
            exemplar.answer, exemplar.question
        ),
        Task::Rationale => format!(
            "Question: {}\nAnswer: {}\nRationale: {}",
            exemplar.question,
            exemplar.answer,
            Task::Rationale.target(exemplar)
        ),
        Task::Distractor => format!(
            "Question: {}\nAnswer: {}\nDistractors: {}\n",
            exemplar.question,
            exemplar.answer,
            Task::Distractor.target(exemplar)
        ),
        Task::Answer => format!(
            "Question: {}\nOptions: {}\nAnswer: {}",
            exemplar.question,
            options(exemplar),
            Task::Answer.target(exemplar)
        ),
    };
    format!("\nExample:\n{}{shown}", scene(exemplar))
}

/// The user turn for `task` on `item` with an exemplar; `question` and `rationale` come from
/// earlier links of the chain at generation time (the item's own question otherwise).
pub fn prompt(
    task: Task,
    item: &Item,
    exemplar: Option<&Item>,
    question: Option<&str>,
    rationale: Option<&str>,
) -> String {
    let question = question.unwrap_or(&item.question);
    let mut s = scene(item) + &given(task, item, question, rationale);
    match exemplar {
        Some(e) => {
            s += &format!(
                "Refer to the following example, {}{}",
                task.instruction(),
                example(task, e)
            )
        }
        None => s += task.instruction(),
    }
    s
}

/// The training conversation of `task` on `item`.
pub fn conversation(task: Task, item: &Item, exemplar: Option<&Item>) -> Vec<Turn> {
    vec![
        Turn {
            from: "user".into(),
            value: prompt(task, item, exemplar, None, None),
        },
        Turn {
            from: "assistant".into(),
            value: task.target(item),
        },
    ]
}

//! The papers' own numbers (`results/papers/*.csv`, transcribed from the methods reference)
//! and the rules that pick the rows a run can be compared with.
//!
//! The CSVs are embedded at build time ([`Papers::builtin`]), so `runner report` works from
//! any directory; [`Papers::load`] reads them from a folder instead.
//!
//! Matching reads only the resolved plan (as JSON, so fields added later do not break it):
//!
//! - `longlora_sft` (LongLoRA Table 3, proof-pile; Table 14, PG19): model size from
//!   `model.arch.hidden_size` (4096 → 7B, 5120 → 13B; a family other than llama matches
//!   nothing), train context = `data.max_length`, config from
//!   `method.shifted_sparse_attention` and `training.adapter`: full fine-tuning without S²-Attn
//!   → "full-FT, full attn" (13B: "full-FT"); full fine-tuning with S²-Attn → "S²-Attn" / "S²";
//!   LoRA with S²-Attn and `also_train` naming both embed and norm → "S²-Attn + LoRA+" /
//!   "S² + LoRA+". Plain LoRA, LoRA+ with full attention and other adapters match nothing.
//!   The table is chosen by `evaluation.perplexity.data` (a path naming proof-pile → Table 3,
//!   PG19 → Table 14), both otherwise. Every paper value of the setting is listed; the run's
//!   value is its `perplexity_<eval_context>` where it measured that context.
//! - `iag_distill` (IAG Table 1): model from the student's `d_model` (768 → Base; 1024 → Large,
//!   or XL when `d_ff` ≥ 16384 as in T5-3B), dataset from the validation, test or train path
//!   (a path part starting with nq → NQ, tqa or triviaqa → TQA, webq → WebQ), method from the
//!   adapter (hyperlora → IMcQA, lora → LoRA, full → T5) and setting from the student's
//!   `context_field` (null → closed-book, which is "0 docs" for IMcQA; a field → "1 imagined";
//!   T5 reading an imagined context has no row). The run's value is its `exact_match` (percent,
//!   as the paper).
//! - `coe_multitask`: no table is recorded yet.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// File names under `results/papers/`.
pub const IAG_TABLE1: &str = "iag_table1.csv";
pub const LONGLORA_TABLE3: &str = "longlora_table3.csv";
pub const LONGLORA_TABLE14: &str = "longlora_table14.csv";

const IAG_TABLE1_CSV: &str = include_str!("../../../results/papers/iag_table1.csv");
const LONGLORA_TABLE3_CSV: &str = include_str!("../../../results/papers/longlora_table3.csv");
const LONGLORA_TABLE14_CSV: &str = include_str!("../../../results/papers/longlora_table14.csv");

/// One cell of IAG Table 1 (exact match, percent).
#[derive(Clone, Debug, PartialEq)]
pub struct IagRow {
    /// The paper's column: Base, Large or XL.
    pub model: String,
    /// 220M, 770M, 3B.
    pub params: String,
    /// T5, LoRA, IMcQA, IMcQA-l, FiD.
    pub method: String,
    /// closed-book, 0 docs, 10 docs, 10 retrieved, 30 retrieved, 10 generated, 1 imagined.
    pub setting: String,
    /// NQ, TQA, WebQ.
    pub dataset: String,
    /// None where the paper leaves the cell empty.
    pub em: Option<PaperValue>,
    /// "from earlier papers" (the table's `*`), "5 docs", or empty.
    pub note: String,
}

/// One cell of LongLoRA Table 3 or 14 (perplexity).
#[derive(Clone, Debug, PartialEq)]
pub struct LongLoraRow {
    /// 7B or 13B (Llama-2).
    pub model_size: String,
    /// Tokens the model was fine-tuned at.
    pub train_context: u64,
    /// As the paper's row writes it ("S²-Attn + LoRA+", "S² + LoRA+", "full-FT, full attn", …).
    pub config: String,
    /// Tokens the perplexity was measured at.
    pub eval_context: u64,
    /// None where the paper leaves the cell empty.
    pub perplexity: Option<PaperValue>,
}

/// A number as the paper prints it: its value and its text ("3.20" stays "3.20").
#[derive(Clone, Debug, PartialEq)]
pub struct PaperValue {
    pub value: f64,
    pub text: String,
}

impl fmt::Display for PaperValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// All the paper tables.
#[derive(Clone, Debug, PartialEq)]
pub struct Papers {
    pub iag_table1: Vec<IagRow>,
    pub longlora_table3: Vec<LongLoraRow>,
    pub longlora_table14: Vec<LongLoraRow>,
}

impl Papers {
    /// The tables as built into the binary.
    pub fn builtin() -> Result<Papers> {
        Papers::parse(IAG_TABLE1_CSV, LONGLORA_TABLE3_CSV, LONGLORA_TABLE14_CSV)
    }

    /// The tables from a folder (normally `results/papers`).
    pub fn load(dir: &Path) -> Result<Papers> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))
        };
        Papers::parse(
            &read(IAG_TABLE1)?,
            &read(LONGLORA_TABLE3)?,
            &read(LONGLORA_TABLE14)?,
        )
    }

    fn parse(iag: &str, table3: &str, table14: &str) -> Result<Papers> {
        Ok(Papers {
            iag_table1: parse_iag(iag).context(IAG_TABLE1)?,
            longlora_table3: parse_longlora(table3).context(LONGLORA_TABLE3)?,
            longlora_table14: parse_longlora(table14).context(LONGLORA_TABLE14)?,
        })
    }
}

/// CSV text into records, the header first. A field may be double-quoted to hold commas
/// (`""` inside quotes is one quote); blank lines are skipped.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>> {
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        records.push(parse_line(line).with_context(|| format!("line {}", i + 1))?);
    }
    Ok(records)
}

fn parse_line(line: &str) -> Result<Vec<String>> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                    if !matches!(chars.peek(), None | Some(',')) {
                        bail!("text after a closing quote");
                    }
                }
            } else {
                field.push(c);
            }
        } else if c == ',' {
            fields.push(std::mem::take(&mut field));
            at_start = true;
            continue;
        } else if c == '"' && at_start {
            quoted = true;
        } else {
            field.push(c);
        }
        at_start = false;
    }
    if quoted {
        bail!("unterminated quote");
    }
    fields.push(field);
    Ok(fields)
}

/// Records with named columns.
struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn parse(text: &str, expected: &[&str]) -> Result<Table> {
        let mut records = parse_csv(text)?.into_iter();
        let Some(columns) = records.next() else {
            bail!("empty file (no header)");
        };
        for name in expected {
            if !columns.iter().any(|c| c == name) {
                bail!("no `{name}` column in the header {}", columns.join(","));
            }
        }
        let rows: Vec<Vec<String>> = records.collect();
        for (i, row) in rows.iter().enumerate() {
            if row.len() != columns.len() {
                bail!(
                    "row {} has {} fields, the header {}",
                    i + 2,
                    row.len(),
                    columns.len()
                );
            }
        }
        Ok(Table { columns, rows })
    }

    fn get<'a>(&self, row: &'a [String], column: &str) -> &'a str {
        let i = self
            .columns
            .iter()
            .position(|c| c == column)
            .expect("columns are checked on parsing");
        row[i].trim()
    }
}

fn number(text: &str, what: &str, row: usize) -> Result<Option<PaperValue>> {
    if text.is_empty() {
        return Ok(None);
    }
    let value = text
        .parse::<f64>()
        .with_context(|| format!("row {row}: {what} `{text}` is not a number"))?;
    Ok(Some(PaperValue {
        value,
        text: text.to_string(),
    }))
}

fn parse_iag(text: &str) -> Result<Vec<IagRow>> {
    let t = Table::parse(
        text,
        &[
            "model", "params", "method", "setting", "dataset", "em", "note",
        ],
    )?;
    t.rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(IagRow {
                model: t.get(r, "model").to_string(),
                params: t.get(r, "params").to_string(),
                method: t.get(r, "method").to_string(),
                setting: t.get(r, "setting").to_string(),
                dataset: t.get(r, "dataset").to_string(),
                em: number(t.get(r, "em"), "em", i + 2)?,
                note: t.get(r, "note").to_string(),
            })
        })
        .collect()
}

fn parse_longlora(text: &str) -> Result<Vec<LongLoraRow>> {
    let t = Table::parse(
        text,
        &[
            "model_size",
            "train_context",
            "config",
            "eval_context",
            "perplexity",
        ],
    )?;
    let tokens = |r: &[String], column: &str, row: usize| -> Result<u64> {
        let text = t.get(r, column);
        text.parse()
            .with_context(|| format!("row {row}: {column} `{text}` is not a token count"))
    };
    t.rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(LongLoraRow {
                model_size: t.get(r, "model_size").to_string(),
                train_context: tokens(r, "train_context", i + 2)?,
                config: t.get(r, "config").to_string(),
                eval_context: tokens(r, "eval_context", i + 2)?,
                perplexity: number(t.get(r, "perplexity"), "perplexity", i + 2)?,
            })
        })
        .collect()
}

/// LongLoRA's three training configurations; the tables write each in two ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LongLoraConfig {
    /// Full fine-tuning, full attention ("full-FT, full attn"; 13B: "full-FT").
    FullFt,
    /// Full fine-tuning with S²-Attn ("S²-Attn", "S²").
    S2,
    /// S²-Attn with LoRA plus trainable embeddings and norms ("S²-Attn + LoRA+", "S² + LoRA+").
    S2LoraPlus,
}

impl LongLoraConfig {
    /// The configuration a row's `config` text names.
    pub fn of(text: &str) -> Option<LongLoraConfig> {
        let t = text.trim();
        if t.contains("LoRA+") && t.starts_with("S²") {
            Some(LongLoraConfig::S2LoraPlus)
        } else if t == "S²" || t == "S²-Attn" {
            Some(LongLoraConfig::S2)
        } else if t.starts_with("full-FT") {
            Some(LongLoraConfig::FullFt)
        } else {
            None
        }
    }

    fn describe(self) -> &'static str {
        match self {
            LongLoraConfig::FullFt => "full fine-tuning, full attention",
            LongLoraConfig::S2 => "full fine-tuning with S²-Attn",
            LongLoraConfig::S2LoraPlus => "S²-Attn + LoRA+",
        }
    }
}

/// One paper value beside the run's.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// Which table, e.g. "LongLoRA Table 3 (proof-pile test)".
    pub table: String,
    /// The paper's setting, e.g. "Llama-2 7B, trained at 8192, S²-Attn + LoRA+".
    pub setting: String,
    /// The run's metric the paper value corresponds to (`perplexity_4096`, `exact_match`).
    pub metric: String,
    pub paper: PaperValue,
    /// The run's last evaluated value; None where it did not measure this metric.
    pub run: Option<f64>,
    /// The paper's footnote, if any.
    pub note: String,
}

/// What the paper tables hold for a run.
#[derive(Clone, Debug, PartialEq)]
pub enum Match {
    /// The paper values of the run's setting, and remarks (which table, missing metrics).
    Rows {
        rows: Vec<Comparison>,
        notes: Vec<String>,
    },
    /// No paper row fits; the reasons.
    None(String),
}

/// The paper rows for a run. `plan` is the resolved recipe (`plan.json`'s `plan`, or the whole
/// `{hash, plan}` file); `metrics` are the run's last evaluation, by metric name.
pub fn match_run(papers: &Papers, plan: &Value, metrics: &BTreeMap<String, f64>) -> Match {
    let plan = match plan.get("plan") {
        Some(inner) if plan.get("hash").is_some() => inner,
        _ => plan,
    };
    match plan.get("kind").and_then(Value::as_str) {
        Some("longlora_sft") => longlora(papers, plan, metrics),
        Some("iag_distill") => iag(papers, plan, metrics),
        Some("coe_multitask") => Match::None(
            "there is no paper table for coe_multitask yet (the methods reference records no \
             Chain-of-Exemplar results)"
                .into(),
        ),
        Some(kind) => Match::None(format!("there is no paper table for kind `{kind}`")),
        None => Match::None("the plan names no kind".into()),
    }
}

fn u64_at(plan: &Value, pointer: &str) -> Option<u64> {
    plan.pointer(pointer).and_then(Value::as_u64)
}

fn str_at<'a>(plan: &'a Value, pointer: &str) -> Option<&'a str> {
    plan.pointer(pointer).and_then(Value::as_str)
}

fn list(values: &[u64]) -> String {
    values
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn longlora(papers: &Papers, plan: &Value, metrics: &BTreeMap<String, f64>) -> Match {
    let mut why = Vec::new();
    let mut notes = Vec::new();

    let family = str_at(plan, "/model/arch/family");
    let size = match (family, u64_at(plan, "/model/arch/hidden_size")) {
        (Some(f), _) if f != "llama" => {
            why.push(format!(
                "a {f} model has no paper counterpart (the tables are Llama-2 7B and 13B)"
            ));
            None
        }
        (_, Some(4096)) => Some("7B"),
        (_, Some(5120)) => Some("13B"),
        (_, Some(h)) => {
            why.push(format!(
                "a {h}-wide model (model.arch.hidden_size {h}) has no paper counterpart \
                 (Llama-2 7B is 4096 wide, 13B 5120)"
            ));
            None
        }
        (_, None) => {
            why.push("the plan has no model.arch.hidden_size".into());
            None
        }
    };

    let s2 = plan
        .pointer("/method/shifted_sparse_attention")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let adapter = plan.pointer("/training/adapter");
    let adapter_type = adapter
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("full");
    let also_train: Vec<&str> = adapter
        .and_then(|a| a.get("also_train"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let trains = |part: &str| also_train.iter().any(|t| t.contains(part));
    let config = match (adapter_type, s2) {
        ("full", false) => Some(LongLoraConfig::FullFt),
        ("full", true) => Some(LongLoraConfig::S2),
        ("lora", true) if trains("embed") && trains("norm") => Some(LongLoraConfig::S2LoraPlus),
        ("lora", _) if !(trains("embed") && trains("norm")) => {
            why.push(
                "LoRA without trainable embed and norm is not in Tables 3 and 14 (LongLoRA's \
                 LoRA+ trains both: training.adapter.also_train [embed, norm])"
                    .into(),
            );
            None
        }
        ("lora", _) => {
            why.push(
                "LoRA+ with full attention is not in Tables 3 and 14 (they pair it with \
                 S²-Attn: method.shifted_sparse_attention true)"
                    .into(),
            );
            None
        }
        (other, _) => {
            why.push(format!(
                "a `{other}` adapter has no LongLoRA counterpart (full fine-tuning or LoRA)"
            ));
            None
        }
    };

    let ppl_data = str_at(plan, "/evaluation/perplexity/data");
    let tables: Vec<(&str, &[LongLoraRow])> = {
        let table3 = (
            "LongLoRA Table 3 (proof-pile test)",
            papers.longlora_table3.as_slice(),
        );
        let table14 = (
            "LongLoRA Table 14 (PG19 test)",
            papers.longlora_table14.as_slice(),
        );
        let lower = ppl_data.map(str::to_lowercase);
        match lower.as_deref() {
            Some(p) if p.contains("proof") => vec![table3],
            Some(p) if ["pg19", "pg-19", "pg_19"].iter().any(|k| p.contains(k)) => vec![table14],
            Some(_) => {
                notes.push(format!(
                    "evaluation.perplexity.data ({}) names neither proof-pile nor PG19: rows of \
                     both tables are shown",
                    ppl_data.unwrap_or_default()
                ));
                vec![table3, table14]
            }
            None => {
                notes.push(
                    "the plan has no evaluation.perplexity: rows of both tables are shown".into(),
                );
                vec![table3, table14]
            }
        }
    };

    let mut trained_at: Vec<u64> = tables
        .iter()
        .flat_map(|(_, rows)| rows.iter().map(|r| r.train_context))
        .collect();
    trained_at.sort_unstable();
    trained_at.dedup();
    let train_context = match u64_at(plan, "/data/max_length") {
        Some(n) if trained_at.contains(&n) => Some(n),
        Some(n) => {
            why.push(format!(
                "it trains at {n} tokens (data.max_length), the paper's runs at {}",
                list(&trained_at)
            ));
            None
        }
        None => {
            why.push("the plan has no data.max_length".into());
            None
        }
    };

    let (Some(size), Some(config), Some(train_context)) = (size, config, train_context) else {
        return Match::None(why.join("; "));
    };
    let mut rows = Vec::new();
    for (table, table_rows) in &tables {
        for r in table_rows.iter() {
            let Some(paper) = &r.perplexity else { continue };
            if r.model_size != size
                || r.train_context != train_context
                || LongLoraConfig::of(&r.config) != Some(config)
            {
                continue;
            }
            let metric = format!("perplexity_{}", r.eval_context);
            rows.push(Comparison {
                table: table.to_string(),
                setting: format!("Llama-2 {size}, trained at {train_context}, {}", r.config),
                run: metrics.get(&metric).copied(),
                metric,
                paper: paper.clone(),
                note: String::new(),
            });
        }
    }
    if rows.is_empty() {
        let names: Vec<&str> = tables.iter().map(|(t, _)| *t).collect();
        return Match::None(format!(
            "{} has no row for Llama-2 {size} trained at {train_context} with {}",
            names.join(" or "),
            config.describe()
        ));
    }
    if rows.iter().all(|c| c.run.is_none()) {
        let mut contexts: Vec<u64> = rows
            .iter()
            .filter_map(|c| c.metric.strip_prefix("perplexity_")?.parse().ok())
            .collect();
        contexts.sort_unstable();
        contexts.dedup();
        notes.push(format!(
            "this run's last evaluation has none of these perplexities \
             (evaluation.perplexity.context_lengths [{}] measures them)",
            list(&contexts)
        ));
    }
    Match::Rows { rows, notes }
}

/// The dataset a path names: a part (split at non-alphanumerics) starting with nq, tqa,
/// triviaqa or webq, case-insensitive.
pub fn iag_dataset(path: &str) -> Option<&'static str> {
    let lower = path.to_lowercase();
    for part in lower.split(|c: char| !c.is_ascii_alphanumeric()) {
        if part.starts_with("webq") {
            return Some("WebQ");
        }
        if part.starts_with("tqa") || part.starts_with("triviaqa") {
            return Some("TQA");
        }
        if part.starts_with("nq") {
            return Some("NQ");
        }
    }
    None
}

fn iag(papers: &Papers, plan: &Value, metrics: &BTreeMap<String, f64>) -> Match {
    let mut why = Vec::new();

    let d_model = u64_at(plan, "/model/student/arch/d_model");
    let d_ff = u64_at(plan, "/model/student/arch/d_ff").unwrap_or(0);
    let model = match d_model {
        Some(768) => Some("Base"),
        Some(1024) if d_ff >= 16384 => Some("XL"),
        Some(1024) => Some("Large"),
        Some(d) => {
            why.push(format!(
                "a {d}-wide T5 student (model.student.arch.d_model {d}) has no paper \
                 counterpart (T5-base is 768 wide, T5-large and T5-3B 1024)"
            ));
            None
        }
        None => {
            why.push("the plan has no model.student.arch.d_model".into());
            None
        }
    };

    let paths: Vec<&str> = ["/data/validation", "/data/test", "/data/train"]
        .iter()
        .filter_map(|p| str_at(plan, p))
        .collect();
    let dataset = paths.iter().find_map(|p| iag_dataset(p));
    if dataset.is_none() {
        why.push(format!(
            "its data ({}) names none of NQ, TQA (TriviaQA), WebQ",
            paths.join(", ")
        ));
    }

    let adapter_type = str_at(plan, "/training/adapter/type").unwrap_or("full");
    let closed_book = plan
        .pointer("/model/student/context_field")
        .is_none_or(Value::is_null);
    let method = match adapter_type {
        "hyperlora" => Some("IMcQA"),
        "lora" => Some("LoRA"),
        "full" => Some("T5"),
        other => {
            why.push(format!("a `{other}` adapter has no IAG counterpart"));
            None
        }
    };
    let setting = match (method, closed_book) {
        (Some("IMcQA"), true) => Some("0 docs"),
        (Some(_), true) => Some("closed-book"),
        (Some("T5"), false) => {
            why.push(
                "Table 1 has no fully fine-tuned T5 reading an imagined context \
                 (model.student.context_field null is closed-book T5)"
                    .into(),
            );
            None
        }
        (Some(_), false) => Some("1 imagined"),
        (None, _) => None,
    };

    let (Some(model), Some(dataset), Some(method), Some(setting)) =
        (model, dataset, method, setting)
    else {
        return Match::None(why.join("; "));
    };
    let rows: Vec<Comparison> = papers
        .iag_table1
        .iter()
        .filter(|r| {
            r.model == model && r.dataset == dataset && r.method == method && r.setting == setting
        })
        .filter_map(|r| {
            Some(Comparison {
                table: "IAG Table 1 (EM, test)".into(),
                setting: format!(
                    "T5-{} {}, {method}, {setting}, {dataset}",
                    r.model, r.params
                ),
                metric: "exact_match".into(),
                paper: r.em.clone()?,
                run: metrics.get("exact_match").copied(),
                note: r.note.clone(),
            })
        })
        .collect();
    if rows.is_empty() {
        return Match::None(format!(
            "IAG Table 1 has no {method} ({setting}) value for {model} on {dataset}"
        ));
    }
    let mut notes = Vec::new();
    if rows.iter().all(|c| c.run.is_none()) {
        notes.push("this run recorded no exact_match".into());
    }
    Match::Rows { rows, notes }
}

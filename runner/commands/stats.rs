//! `runner stats DATA --tokenizer FILE`: the token-length distribution of a data file
//! (percentiles, a histogram, how many examples exceed a length), to choose max_length before
//! training, as qa-expert's `find_max_token_length.py` did (which found 1,350 tokens covers all
//! but about 100 of its items).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::data::tokenizer::Tokenizer;
use crate::data::{instruction, packing, qa_expert};
use crate::plan::kinds::longlora::Template;

/// `runner stats DATA --tokenizer T`.
#[derive(clap::Args)]
pub struct Args {
    data: PathBuf,
    /// An HF tokenizer.json.
    #[arg(long)]
    tokenizer: PathBuf,
    /// The prompt template instruction data is formatted with.
    #[arg(long, value_enum, default_value = "llama2-chat")]
    template: Template,
    /// Also count the examples longer than this.
    #[arg(long)]
    max_length: Option<usize>,
}

impl Args {
    pub fn run(&self, out: &mut dyn Write) -> std::io::Result<i32> {
        run(
            &self.data,
            &self.tokenizer,
            self.template,
            self.max_length,
            out,
        )
    }
}

pub fn run(
    data: &Path,
    tokenizer: &Path,
    template: Template,
    max_length: Option<usize>,
    out: &mut dyn Write,
) -> std::io::Result<i32> {
    super::finish(stats(data, tokenizer, template, max_length), out)
}

fn stats(
    data: &Path,
    tokenizer: &Path,
    template: Template,
    max_length: Option<usize>,
) -> Result<String> {
    let mut tok = Tokenizer::load(tokenizer)?;
    // Instruction and QA-Expert data count what training sees; anything else counts each text
    // with the tokenizer's special tokens.
    let (what, mut lengths) = match instruction::read(data) {
        Ok(items) => {
            // The example training builds, untruncated (the EOS id does not change lengths).
            let eos = tok.id("</s>").unwrap_or(0);
            let mut lengths = Vec::new();
            for item in &items {
                lengths.push(
                    instruction::encode(&tok, template, item, eos, usize::MAX)?
                        .ids
                        .len(),
                );
            }
            ("instruction examples (prompt + output + EOS)", lengths)
        }
        Err(_) => match qa_expert::read(data) {
            Ok(items) => {
                // As training: the markers are single tokens (added when the tokenizer lacks them).
                for marker in qa_expert::MARKERS {
                    tok.id_or_add(marker);
                }
                let mut lengths = Vec::new();
                for item in &items {
                    lengths.push(qa_expert::encode(&tok, item, usize::MAX)?.ids.len());
                }
                ("QA-Expert dialogues (BOS + turns)", lengths)
            }
            Err(_) => {
                let texts = packing::read_texts(data)?;
                let lengths = texts
                    .iter()
                    .map(|t| tok.encode(t, true).map(|ids| ids.len()))
                    .collect::<Result<Vec<_>>>()?;
                ("texts", lengths)
            }
        },
    };
    if lengths.is_empty() {
        return Ok(format!("{}: no examples", data.display()));
    }
    lengths.sort_unstable();
    let n = lengths.len();
    // Nearest-rank percentiles.
    let pct = |p: f64| lengths[((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1];
    let mean = lengths.iter().sum::<usize>() as f64 / n as f64;
    let mut report = format!(
        "{}: {n} {what}, tokens with {}\n  min {}  p50 {}  p90 {}  p95 {}  p99 {}  max {}  mean {mean:.1}\n",
        data.display(),
        tokenizer.display(),
        lengths[0],
        pct(50.0),
        pct(90.0),
        pct(95.0),
        pct(99.0),
        lengths[n - 1]
    );
    let (lo, hi) = (lengths[0], lengths[n - 1]);
    let bins = 10.min(hi - lo + 1);
    let width = (hi - lo + 1).div_ceil(bins);
    let mut counts = vec![0usize; bins];
    for &l in &lengths {
        counts[((l - lo) / width).min(bins - 1)] += 1;
    }
    let most = counts.iter().copied().max().unwrap_or(1).max(1);
    for (i, c) in counts.iter().enumerate() {
        let from = lo + i * width;
        let bar = "█".repeat((c * 40).div_ceil(most));
        report += &format!("  {:>7}–{:<7} {bar} {c}\n", from, from + width - 1);
    }
    if let Some(max) = max_length {
        let over = lengths.iter().filter(|&&l| l > max).count();
        report += &format!(
            "  longer than {max}: {over} ({:.1}%), truncated in training\n",
            100.0 * over as f64 / n as f64
        );
    }
    Ok(report.trim_end().to_string())
}

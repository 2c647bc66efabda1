//! Where a run's numbers go as it trains: `metrics.csv` (one row per value, appended and
//! flushed), TensorBoard event files, and a progress line on stderr.

use std::fs::{self, File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::artifacts::tensorboard::{EventWriter, HParamValue};
use crate::files::write_atomic;

const HEADER: &str = "step,split,metric,value\n";

pub struct MetricsLog {
    csv_path: PathBuf,
    csv: Option<File>,
    events: Option<EventWriter>,
    terminal: bool,
    /// Print no progress.
    quiet: bool,
}

impl MetricsLog {
    /// Opens the logs of `run`, keeping only rows up to `resumed_step` when resuming (the steps
    /// after it will be trained again and logged again).
    pub fn open(
        run: &Path,
        csv: bool,
        tensorboard: bool,
        resumed_step: Option<u64>,
    ) -> Result<MetricsLog> {
        let csv_path = run.join("metrics.csv");
        if let (Some(step), true) = (resumed_step, csv_path.is_file()) {
            keep_rows_until(&csv_path, step)?;
        } else if csv {
            write_atomic(&csv_path, HEADER.as_bytes())?;
        }
        let file = match csv {
            true => Some(
                OpenOptions::new()
                    .append(true)
                    .open(&csv_path)
                    .with_context(|| format!("cannot append to {}", csv_path.display()))?,
            ),
            false => None,
        };
        let events = match tensorboard {
            true => {
                let mut writer = EventWriter::create(&run.join("events"))?;
                if let Some(step) = resumed_step {
                    // TensorBoard keeps what came before the restart's step.
                    writer.restart(step as i64 + 1)?;
                }
                Some(writer)
            }
            false => None,
        };
        Ok(MetricsLog {
            csv_path,
            csv: file,
            events,
            terminal: std::io::stderr().is_terminal(),
            quiet: false,
        })
    }

    /// A log that writes and prints nothing (a rank other than 0).
    pub fn silent() -> MetricsLog {
        MetricsLog {
            csv_path: PathBuf::new(),
            csv: None,
            events: None,
            terminal: false,
            quiet: true,
        }
    }

    /// Records `values` of one split at `step` in every log, flushed.
    pub fn record(&mut self, step: u64, split: &str, values: &[(String, f64)]) -> Result<()> {
        if let Some(csv) = &mut self.csv {
            let mut rows = String::new();
            for (name, value) in values {
                rows += &format!("{step},{split},{name},{value}\n");
            }
            csv.write_all(rows.as_bytes())
                .and_then(|_| csv.flush())
                .with_context(|| format!("cannot write {}", self.csv_path.display()))?;
        }
        if let Some(events) = &mut self.events {
            for (name, value) in values {
                events.scalar(&format!("{split}/{name}"), *value, step as i64)?;
            }
            events.flush()?;
        }
        Ok(())
    }

    pub fn text(&mut self, step: u64, tag: &str, text: &str) -> Result<()> {
        if let Some(events) = &mut self.events {
            events.text(tag, text, step as i64)?;
            events.flush()?;
        }
        Ok(())
    }

    /// The run's hyperparameters, for TensorBoard's HParams view.
    pub fn hparams(&mut self, params: &[(String, HParamValue)], metrics: &[&str]) -> Result<()> {
        if let Some(events) = &mut self.events {
            events.hparams(params, metrics)?;
            events.flush()?;
        }
        Ok(())
    }

    /// A progress line: rewritten in place on a terminal, one line per call otherwise (logs
    /// under Slurm).
    pub fn progress(&self, line: &str) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = match self.terminal {
            true => write!(err, "\r\x1b[2K{line}"),
            false => writeln!(err, "{line}"),
        };
        let _ = err.flush();
    }

    /// A warning on its own line (the progress line is redrawn after it).
    pub fn warn(&self, line: &str) {
        let mut err = std::io::stderr().lock();
        let clear = if self.terminal { "\r\x1b[2K" } else { "" };
        let _ = writeln!(err, "{clear}warning: {line}");
    }

    pub fn end_progress(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

/// Keeps the header and the whole rows of steps ≤ `step`.
fn keep_rows_until(path: &Path, step: u64) -> Result<()> {
    let text = fs::read_to_string(path)?;
    let mut kept = String::from(HEADER);
    for line in text.lines().skip(1) {
        // A run killed while writing may leave half a row: only whole rows are kept.
        let fields: Vec<&str> = line.split(',').collect();
        let whole = fields.len() == 4 && fields[3].parse::<f64>().is_ok();
        let row_step = fields[0].parse::<u64>().ok();
        if whole && row_step.is_some_and(|s| s <= step) {
            kept += line;
            kept.push('\n');
        }
    }
    write_atomic(path, kept.as_bytes())
}

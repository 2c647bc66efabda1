//! `runner bench checkpointing`: the activation memory gradient checkpointing saves, measured
//! as the growth of peak resident memory (VmHWM) over one training step of a randomly
//! initialised Llama-style model, in a fresh process per mode so the peaks do not mix.

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

use super::peak_rss_kib;
use crate::models::hf_folder::HfConfig;
use crate::models::llama::{DecoderOptions, Llama};
use crate::models::{hf_model, loss, Checkpointing, Tape};
use crate::plan::arch::{DecoderArch, Family};

/// `runner bench checkpointing`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 12)]
    layers: u64,
    #[arg(long, default_value_t = 2048)]
    tokens: i64,
    #[arg(long, default_value_t = 256)]
    hidden: u64,
    /// Internal: measure one mode in this process.
    #[arg(long, hide = true)]
    child: Option<String>,
}

impl Args {
    pub fn run(&self, out: &mut dyn Write) -> std::io::Result<i32> {
        let shape = Shape {
            layers: self.layers,
            tokens: self.tokens,
            hidden: self.hidden,
        };
        run(shape, self.child.as_deref(), out)
    }
}

/// The benchmark's model and batch.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub layers: u64,
    pub tokens: i64,
    pub hidden: u64,
}

pub fn run(shape: Shape, child: Option<&str>, out: &mut dyn Write) -> std::io::Result<i32> {
    let result = match child {
        Some(mode) => measure(shape, mode).map(|v| v.to_string()),
        None => compare(shape),
    };
    crate::commands::finish(result, out)
}

/// Runs both modes in child processes and reports them side by side.
fn compare(shape: Shape) -> Result<String> {
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for mode in ["off", "recompute"] {
        let output = Command::new(&exe)
            .args(["bench", "checkpointing", "--child", mode])
            .args(["--layers", &shape.layers.to_string()])
            .args(["--tokens", &shape.tokens.to_string()])
            .args(["--hidden", &shape.hidden.to_string()])
            .output()
            .context("cannot start the benchmark process")?;
        let text = String::from_utf8_lossy(&output.stdout);
        let row: Value = serde_json::from_str(text.trim()).map_err(|_| {
            anyhow!(
                "benchmark process failed: {text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
        rows.push(row);
    }
    let growth = |r: &Value| r["step_growth_mib"].as_f64().unwrap_or(f64::NAN);
    let mut report = format!(
        "gradient checkpointing, {} layers, hidden {}, {} tokens, fp32, CPU\n{:<10} {:>16} {:>10} {:>14}\n",
        shape.layers, shape.hidden, shape.tokens, "mode", "step growth MiB", "seconds", "loss"
    );
    for r in &rows {
        report += &format!(
            "{:<10} {:>16.1} {:>10.2} {:>14.6}\n",
            r["mode"].as_str().unwrap_or("?"),
            growth(r),
            r["seconds"].as_f64().unwrap_or(f64::NAN),
            r["loss"].as_f64().unwrap_or(f64::NAN)
        );
    }
    report += &format!(
        "recompute keeps {:.0}% of the memory a step adds without it ({:.1} MiB saved)",
        100.0 * growth(&rows[1]) / growth(&rows[0]),
        growth(&rows[0]) - growth(&rows[1])
    );
    Ok(report)
}

/// One training step in this process; peak memory growth as JSON.
fn measure(shape: Shape, mode: &str) -> Result<Value> {
    if shape.hidden == 0 || shape.hidden % 64 != 0 || shape.tokens < 2 || shape.layers == 0 {
        return Err(anyhow!(
            "--hidden must be a multiple of 64 (heads of width 64), --tokens at least 2 and --layers at least 1"
        ));
    }
    let checkpointing = match mode {
        "off" => Checkpointing::Off,
        "recompute" => Checkpointing::Recompute,
        other => return Err(anyhow!("mode {other:?}: expected off or recompute")),
    };
    let arch = DecoderArch {
        family: Family::Llama,
        vocab_size: 512,
        hidden_size: shape.hidden,
        intermediate_size: shape.hidden * 8 / 3,
        num_hidden_layers: shape.layers,
        num_attention_heads: shape.hidden / 64,
        num_key_value_heads: None,
        max_position_embeddings: shape.tokens as u64,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-6,
        attention_bias: false,
        sliding_window: None,
        tie_word_embeddings: false,
    };
    let config = HfConfig::Decoder {
        arch: arch.clone(),
        rope_factor: 1.0,
    };
    let store = hf_model::random(&config, 0, Device::Cpu, Kind::Float);
    let model = Llama::new(&store, &arch, DecoderOptions::default(), Kind::Float)?;
    let ids = Tensor::randint(512, [1, shape.tokens], (Kind::Int64, Device::Cpu));
    let before = peak_rss_kib()?;
    let start = Instant::now();
    let tape = Tape::training(checkpointing, 0);
    let logits = model.forward(&ids, None, &tape, true);
    let loss = loss::causal_lm_loss(&logits, &ids);
    drop(logits);
    tape.backward(&loss);
    let seconds = start.elapsed().as_secs_f64();
    let peak = peak_rss_kib()?;
    Ok(json!({
        "mode": mode,
        "step_growth_mib": (peak - before) as f64 / 1024.0,
        "seconds": seconds,
        "loss": loss.double_value(&[]),
    }))
}

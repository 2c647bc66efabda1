//! `runner plan RECIPE [KEY=VALUE…]`: the resolved plan as YAML (a valid recipe itself), its
//! hash, and what it costs: parameters, tokens per step, memory per device.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{Format, OK};
use crate::config::emit;
use crate::plan::estimate::{estimate, Estimate};

/// `runner plan RECIPE [KEY=VALUE…]`.
#[derive(clap::Args)]
pub struct Args {
    recipe: PathBuf,
    /// Overrides, KEY.PATH=VALUE.
    overrides: Vec<String>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

impl Args {
    pub fn run(&self, out: &mut dyn Write) -> std::io::Result<i32> {
        run(&self.recipe, &self.overrides, self.format, out)
    }
}

pub fn run(
    recipe: &Path,
    overrides: &[String],
    format: Format,
    out: &mut dyn Write,
) -> std::io::Result<i32> {
    let plan = match super::resolve_or_report(recipe, overrides, out)? {
        Ok(plan) => plan,
        Err(code) => return Ok(code),
    };
    let cost = estimate(&plan.recipe);
    match format {
        Format::Json => {
            let doc = json!({"hash": plan.hash, "plan": plan.recipe.to_json(), "estimate": cost});
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&doc).expect("JSON values serialize")
            )?;
        }
        Format::Text => {
            writeln!(out, "# plan of {}", plan.source.display())?;
            writeln!(out, "# hash: {}", plan.hash)?;
            write!(out, "{}", emit::to_yaml(&plan.recipe.to_json()))?;
            write!(
                out,
                "{}",
                summary(&cost, plan.recipe.training().gradient_checkpointing)
            )?;
        }
    }
    Ok(OK)
}

/// The estimate as YAML comments, so the printed plan stays a loadable recipe.
pub fn summary(e: &Estimate, checkpointing: bool) -> String {
    let mut s = String::from("#\n# parameters (estimated from the architecture)\n");
    s += &format!(
        "#   {:<24} {:>14} {:>14}\n",
        "part.group", "total", "trainable"
    );
    for g in &e.groups {
        s += &format!(
            "#   {:<24} {:>14} {:>14}\n",
            format!("{}.{}", g.part, g.group),
            thousands(g.total),
            thousands(g.trainable)
        );
    }
    for p in &e.parts {
        let own = match p.adapters {
            0 => String::new(),
            a => format!("  ({} + {} adapters)", thousands(p.total - a), thousands(a)),
        };
        s += &format!(
            "#   {:<24} {:>14} {:>14}{own}\n",
            format!("{} (all)", p.part),
            thousands(p.total),
            thousands(p.trainable)
        );
    }
    let share = 100.0 * e.trainable_params as f64 / e.total_params.max(1) as f64;
    s += &format!(
        "#   {:<24} {:>14} {:>14}  ({share:.3}% trainable)\n",
        "total",
        thousands(e.total_params),
        thousands(e.trainable_params)
    );
    s += &format!(
        "# per optimizer step: {} examples, {} input tokens\n",
        thousands(e.examples_per_step),
        thousands(e.tokens_per_step)
    );
    let m = &e.memory_per_device;
    s += "# peak memory per device (estimate)\n";
    let weights = match e.quantized_params {
        0 => "weights".to_string(),
        n => format!("weights ({} in 4 bits)", thousands(n)),
    };
    for (name, bytes) in [
        (weights.as_str(), m.weights),
        ("gradients", m.gradients),
        ("optimizer state", m.optimizer),
    ] {
        s += &format!("#   {name:<34} {}\n", gib(bytes));
    }
    let (on, off) = if checkpointing {
        (" (in use)", "")
    } else {
        ("", " (in use)")
    };
    s += &format!(
        "#   {:<34} {}\n",
        format!("activations{off}"),
        gib(m.activations)
    );
    s += &format!(
        "#   {:<34} {}\n",
        format!("activations, checkpointed{on}"),
        gib(m.activations_checkpointed)
    );
    s += &format!("#   {:<34} {}\n", "peak", gib(m.peak));
    s
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

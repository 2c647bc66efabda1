//! `runner explain RECIPE [KEY=VALUE…]`: each resolved value and where it came from.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::OK;
use crate::plan::explain::explain;

/// `runner explain RECIPE [KEY=VALUE…]`.
#[derive(clap::Args)]
pub struct Args {
    recipe: PathBuf,
    /// Overrides, KEY.PATH=VALUE.
    overrides: Vec<String>,
}

impl Args {
    pub fn run(&self, out: &mut dyn Write) -> std::io::Result<i32> {
        run(&self.recipe, &self.overrides, out)
    }
}

pub fn run(recipe: &Path, overrides: &[String], out: &mut dyn Write) -> std::io::Result<i32> {
    let plan = match super::resolve_or_report(recipe, overrides, out)? {
        Ok(plan) => plan,
        Err(code) => return Ok(code),
    };
    let lines = explain(&plan);
    let width = lines
        .iter()
        .map(|l| l.key.len() + l.value.len() + 3)
        .max()
        .unwrap_or(0)
        .min(72);
    for line in lines {
        let setting = format!("{} = {}", line.key, line.value);
        let origin = line
            .origin
            .as_ref()
            .map_or_else(|| "default".to_string(), |o| o.describe());
        write!(out, "{setting:<width$}  {origin}")?;
        if let Some(bnb) = line.also_called {
            write!(out, "  (BitsAndBytesConfig: {bnb})")?;
        }
        if !line.replaced.is_empty() {
            let earlier: Vec<String> = line.replaced.iter().map(|o| o.describe()).collect();
            write!(out, "  (replaces {})", earlier.join(", "))?;
        }
        writeln!(out)?;
    }
    Ok(OK)
}

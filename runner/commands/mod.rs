//! One function per subcommand. Each writes its report to the given writer and returns the
//! process exit code, so tests can run them in-process.

pub mod bench;
pub mod doctor;
pub mod explain;
pub mod generate;
pub mod merge;
pub mod perplexity;
pub mod plan;
pub mod report;
pub mod run;
pub mod schema;
pub mod score;
pub mod stats;
pub mod sweep;
pub mod trained;
pub mod validate;

use std::io::Write;

use crate::config::Diagnostic;

/// Exit codes shared by the subcommands.
pub const OK: i32 = 0;
pub const INVALID: i32 = 1;
pub const USAGE: i32 = 2;

/// Output format of the checking commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Print diagnostics, one block each, and a count.
pub fn report(errors: &[Diagnostic], out: &mut dyn Write) -> std::io::Result<()> {
    for e in errors {
        writeln!(out, "{e}")?;
    }
    writeln!(
        out,
        "{} error{}",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    )
}

/// Prints a command's report, or its error, and gives the exit code.
pub fn finish(result: anyhow::Result<String>, out: &mut dyn Write) -> std::io::Result<i32> {
    match result {
        Ok(report) => {
            writeln!(out, "{report}")?;
            Ok(OK)
        }
        Err(e) => {
            writeln!(out, "error: {e:#}")?;
            Ok(USAGE)
        }
    }
}

/// The plan of `recipe` with `overrides`, or, after reporting why there is none, the exit
/// code: USAGE for a missing file, INVALID for diagnostics.
pub fn resolve_or_report(
    recipe: &std::path::Path,
    overrides: &[String],
    out: &mut dyn Write,
) -> std::io::Result<Result<crate::plan::Plan, i32>> {
    if !recipe.is_file() {
        writeln!(out, "error: recipe {} does not exist", recipe.display())?;
        return Ok(Err(USAGE));
    }
    match crate::plan::resolve(recipe, overrides) {
        Ok(plan) => {
            // On stderr, so that `runner plan --format json` stays one JSON document.
            for w in &plan.warnings {
                eprintln!("{w}");
            }
            Ok(Ok(plan))
        }
        Err(errors) => {
            report(&errors, out)?;
            Ok(Err(INVALID))
        }
    }
}

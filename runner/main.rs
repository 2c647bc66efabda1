//! The `runner` command line: dispatch only. Each subcommand's options are a `clap::Args`
//! struct beside the command in `runner/commands/`.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use runner::commands::{
    bench, doctor, explain, generate, merge, perplexity, plan, report, run, schema, score, stats,
    sweep, validate, USAGE,
};

/// YAML recipes resolved into typed plans that drive libtorch training.
#[derive(Parser)]
#[command(name = "runner", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check recipes, sweeps and config fragments (default: recipes/, configs/, sweeps/).
    Validate(validate::Args),
    /// Print the resolved plan with every default filled, its hash, and its cost.
    Plan(plan::Args),
    /// Print each resolved value and the file position or override that set it.
    Explain(explain::Args),
    /// Train a recipe; an existing run directory of the same plan is resumed.
    Run(run::Args),
    /// Print the JSON Schema of recipes and sweep files.
    Schema,
    /// Token-length distribution of a data file (instruction JSON/JSONL, or texts).
    Stats(stats::Args),
    /// Report libtorch, CUDA, devices, bf16 support and threads.
    Doctor,
    /// Measure what a feature costs or saves (see README, Benchmarks).
    Bench {
        #[command(subcommand)]
        what: bench::Args,
    },
    /// LongLoRA's sliding-window perplexity of a longlora_sft run (or a recipe's starting model).
    Perplexity(perplexity::Args),
    /// Run a sweep's trials (again: only those not yet done) and tabulate and plot them.
    Sweep(sweep::Options),
    /// A run's metrics beside the paper's for the matching setting; a sweep's tables; or a
    /// table comparing several runs.
    Report(report::Args),
    /// A coe_multitask run's generations for items: CoE's chain, or each task (`--gold`).
    Generate(generate::Options),
    /// Score generations against references (BLEU-4, ROUGE-L, METEOR), overall and by subgroup.
    Score(score::Options),
    /// Fold a PEFT LoRA adapter into its base model and save an HF folder.
    Merge(merge::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = &mut std::io::stdout().lock();
    let code = match cli.command {
        Command::Validate(args) => args.run(out),
        Command::Plan(args) => args.run(out),
        Command::Explain(args) => args.run(out),
        Command::Run(args) => args.run(out),
        Command::Schema => schema::run(out),
        Command::Stats(args) => args.run(out),
        Command::Doctor => doctor::run(out),
        Command::Bench { what } => what.run(out),
        Command::Perplexity(args) => args.run(out),
        Command::Sweep(options) => sweep::run(&options, out),
        Command::Report(args) => args.run(out),
        Command::Generate(options) => generate::run(&options, out),
        Command::Score(options) => score::run(&options, out),
        Command::Merge(args) => args.run(out),
    };
    let _ = out.flush();
    match code {
        Ok(code) => ExitCode::from(code as u8),
        // stdout closed (e.g. piped into `head`): nothing more to say.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(USAGE as u8)
        }
    }
}

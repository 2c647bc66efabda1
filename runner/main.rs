//! The `runner` command line: argument parsing only; each subcommand is one library call.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use runner::commands::{self, Format};

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
    Validate {
        paths: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Print the resolved plan with every default filled, its hash, and its cost.
    Plan {
        recipe: PathBuf,
        /// Overrides, KEY.PATH=VALUE.
        overrides: Vec<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Print each resolved value and the file position or override that set it.
    Explain {
        recipe: PathBuf,
        /// Overrides, KEY.PATH=VALUE.
        overrides: Vec<String>,
    },
    /// Train a recipe; an existing run directory of the same plan is resumed.
    Run {
        recipe: PathBuf,
        /// Overrides, KEY.PATH=VALUE.
        overrides: Vec<String>,
        /// The run directory (default: output.dir, name and plan hash).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue a run directory that holds another plan.
        #[arg(long)]
        force: bool,
        #[arg(long, value_enum, default_value = "auto")]
        device: commands::run::Target,
        /// Stop after this many optimizer steps as if interrupted (for resume tests).
        #[arg(long, hide = true)]
        stop_after: Option<u64>,
    },
    /// Print the JSON Schema of recipes and sweep files.
    Schema,
    /// Token-length distribution of a data file (instruction JSON/JSONL, or texts).
    Stats {
        data: PathBuf,
        /// An HF tokenizer.json.
        #[arg(long)]
        tokenizer: PathBuf,
        /// The prompt template instruction data is formatted with.
        #[arg(long, value_enum, default_value = "llama2-chat")]
        template: runner::plan::kinds::longlora::Template,
        /// Also count the examples longer than this.
        #[arg(long)]
        max_length: Option<usize>,
    },
    /// Report libtorch, CUDA, devices, bf16 support and threads.
    Doctor,
    /// Measure what a feature costs or saves (see README, Benchmarks).
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
    /// LongLoRA's sliding-window perplexity of a longlora_sft run (or a recipe's starting model).
    Perplexity {
        /// A run directory (its latest checkpoint) or a recipe.
        model: PathBuf,
        /// Texts: .txt lines, or JSON/JSONL strings or {text} objects.
        #[arg(long)]
        data: PathBuf,
        /// Context lengths, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        lengths: Vec<usize>,
        /// Tokens between window starts (LongLoRA: 256).
        #[arg(long, default_value_t = 256)]
        stride: usize,
        #[arg(long, value_enum, default_value = "auto")]
        device: commands::run::Target,
    },
    /// Run a sweep's trials (again: only those not yet done) and tabulate and plot them.
    Sweep {
        sweep: PathBuf,
        /// Trials at once (default: the sweep's max_parallel).
        #[arg(long)]
        jobs: Option<usize>,
        #[arg(long, value_enum, default_value = "local")]
        launcher: commands::sweep::Launcher,
        /// The results folder (default: results/sweeps/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Show each trial's state (and the Slurm queue), run nothing.
        #[arg(long)]
        status: bool,
        #[arg(long, value_enum, default_value = "auto")]
        device: commands::run::Target,
        /// Slurm partition (over the sweep file's `slurm.partition`).
        #[arg(long)]
        partition: Option<String>,
        /// Slurm time limit per trial, HH:MM:SS.
        #[arg(long)]
        time: Option<String>,
        #[arg(long)]
        cpus_per_task: Option<u32>,
        #[arg(long)]
        gpus_per_task: Option<u32>,
        /// Slurm memory per trial, such as 16G.
        #[arg(long)]
        mem: Option<String>,
    },
    /// A run's metrics beside the paper's for the matching setting; a sweep's tables; or a
    /// table comparing several runs.
    Report {
        /// Run directories, recipes (their default run directory), sweep files or sweep
        /// results folders.
        #[arg(required = true)]
        targets: Vec<PathBuf>,
        /// Show only these evaluation metrics (comma-separated names; `prefix*` for all that
        /// start so).
        #[arg(long, value_delimiter = ',')]
        metrics: Vec<String>,
    },
    /// A coe_multitask run's generations for items: CoE's chain, or each task (`--gold`).
    Generate {
        /// A run directory (its latest checkpoint) or a recipe (untrained).
        model: PathBuf,
        /// ScienceQA-style items (JSON or JSONL).
        #[arg(long)]
        data: PathBuf,
        /// Folder for <task>.jsonl and <task>.references.jsonl.
        #[arg(long)]
        out: PathBuf,
        /// Each task from the item's own question instead of the chain.
        #[arg(long)]
        gold: bool,
        #[arg(long, value_enum, default_value = "auto")]
        device: commands::run::Target,
    },
    /// Score generations against references (BLEU-4, ROUGE-L), overall and by subgroup.
    Score {
        /// Generations: .txt lines, or JSON/JSONL strings or {id?, prediction}.
        #[arg(long)]
        predictions: PathBuf,
        /// References: .txt lines, or JSON/JSONL strings or {id?, reference(s), subgroup fields…}.
        #[arg(long)]
        references: PathBuf,
        /// Metrics, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "bleu4,rouge_l,meteor")]
        metrics: Vec<String>,
        /// Reference fields to break the scores down by (such as subject,grade,context_type).
        #[arg(long, value_delimiter = ',')]
        by: Vec<String>,
    },
    /// Fold a PEFT LoRA adapter into its base model and save an HF folder.
    Merge {
        /// The base model's HF folder (config.json + safetensors).
        base: PathBuf,
        /// The adapter folder (adapter_config.json + adapter_model.safetensors).
        adapter: PathBuf,
        /// Where to write the merged HF folder.
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Step time, tokens/s and peak memory of a recipe's training step, against PyTorch.
    Recipe {
        recipe: PathBuf,
        /// Overrides, KEY.PATH=VALUE.
        overrides: Vec<String>,
        #[arg(long, default_value_t = 10)]
        steps: u64,
        #[arg(long, default_value_t = 3)]
        warmup: u64,
        /// Skip the PyTorch side.
        #[arg(long)]
        no_pytorch: bool,
        #[arg(long, value_enum, default_value = "auto")]
        device: commands::run::Target,
    },
    /// Peak memory of one training step with and without gradient checkpointing.
    Checkpointing {
        #[arg(long, default_value_t = 12)]
        layers: u64,
        #[arg(long, default_value_t = 2048)]
        tokens: i64,
        #[arg(long, default_value_t = 256)]
        hidden: u64,
        /// Internal: measure one mode in this process.
        #[arg(long, hide = true)]
        child: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let code = match cli.command {
        Command::Validate { paths, format } => commands::validate::run(&paths, format, &mut out),
        Command::Plan {
            recipe,
            overrides,
            format,
        } => commands::plan::run(&recipe, &overrides, format, &mut out),
        Command::Explain { recipe, overrides } => {
            commands::explain::run(&recipe, &overrides, &mut out)
        }
        Command::Run {
            recipe,
            overrides,
            out: dir,
            force,
            device,
            stop_after,
        } => {
            let options = runner::train::trainer::RunOptions {
                out: dir,
                force,
                stop_after,
            };
            commands::run::run(&recipe, &overrides, device, &options, &mut out)
        }
        Command::Schema => commands::schema::run(&mut out),
        Command::Stats {
            data,
            tokenizer,
            template,
            max_length,
        } => commands::stats::run(&data, &tokenizer, template, max_length, &mut out),
        Command::Doctor => commands::doctor::run(&mut out),
        Command::Bench {
            what:
                Bench::Recipe {
                    recipe,
                    overrides,
                    steps,
                    warmup,
                    no_pytorch,
                    device,
                },
        } => commands::bench::recipe::run(
            &recipe,
            &overrides,
            commands::bench::recipe::BenchOptions {
                steps,
                warmup,
                pytorch: !no_pytorch,
                target: device,
            },
            &mut out,
        ),
        Command::Bench {
            what:
                Bench::Checkpointing {
                    layers,
                    tokens,
                    hidden,
                    child,
                },
        } => commands::bench::checkpointing::run(
            commands::bench::checkpointing::Shape {
                layers,
                tokens,
                hidden,
            },
            child.as_deref(),
            &mut out,
        ),
        Command::Merge {
            base,
            adapter,
            out: dir,
        } => commands::merge::run(&base, &adapter, &dir, &mut out),
        Command::Perplexity {
            model,
            data,
            lengths,
            stride,
            device,
        } => commands::perplexity::run(&model, &data, &lengths, stride, device, &mut out),
        Command::Report { targets, metrics } => commands::report::run(&targets, &metrics, &mut out),
        Command::Generate {
            model,
            data,
            out: dir,
            gold,
            device,
        } => {
            let options = commands::generate::Options {
                model,
                data,
                out: dir,
                gold,
                device,
            };
            commands::generate::run(&options, &mut out)
        }
        Command::Score {
            predictions,
            references,
            metrics,
            by,
        } => {
            let options = commands::score::Options {
                predictions,
                references,
                metrics,
                by,
            };
            commands::score::run(&options, &mut out)
        }
        Command::Sweep {
            sweep,
            jobs,
            launcher,
            out: dir,
            status,
            device,
            partition,
            time,
            cpus_per_task,
            gpus_per_task,
            mem,
        } => {
            let options = commands::sweep::Options {
                jobs,
                launcher,
                out: dir,
                status,
                device,
                slurm: runner::sweep::slurm::Flags {
                    partition,
                    time,
                    cpus_per_task,
                    gpus_per_task,
                    mem,
                },
            };
            commands::sweep::run(&sweep, &options, &mut out)
        }
    };
    let _ = out.flush();
    match code {
        Ok(code) => ExitCode::from(code as u8),
        // stdout closed (e.g. piped into `head`): nothing more to say.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(commands::USAGE as u8)
        }
    }
}

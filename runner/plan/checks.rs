//! Semantic checks on a typed recipe: the cross-key rules a schema cannot say. Each failure
//! names the keys involved and where each was set (or that it is a default).

use super::arch::{head_problem, ArchProblem, DecoderArch, T5Arch, VisionArch};
use super::estimate::{self, Part};
use super::inventory;
use super::kinds::coe::TextMetric;
use super::recipe::Recipe;
use super::training::{Adapter, ScheduleKind, Training};
use super::Plan;
use crate::config::diagnostic::did_you_mean;
use crate::config::{Diagnostic, Origin};

/// All semantic problems of a plan.
pub fn check(plan: &Plan) -> Vec<Diagnostic> {
    let mut c = Checker {
        plan,
        errors: Vec::new(),
    };
    c.training(plan.recipe.training());
    c.eval_interval();
    c.adapter(plan.recipe.training(), &estimate::parts(&plan.recipe));
    match &plan.recipe {
        Recipe::IagDistill(r) => {
            c.t5("model.student.arch", &r.model.student.arch);
            c.t5("model.teacher.arch", &r.model.teacher.arch);
            let t = &r.model.teacher;
            // A teacher trained here may start from nothing; a frozen one must come from somewhere.
            let given = usize::from(t.path.is_some()) + usize::from(t.recipe.is_some());
            if given > 1 || (given == 0 && !t.train) {
                c.fail(&["model.teacher.path", "model.teacher.recipe"], "the teacher needs exactly one of `model.teacher.path` and `model.teacher.recipe` (or neither, with `model.teacher.train: true`, to train it from scratch)", "give the HF folder of a trained FiD reader, or the recipe that trains it");
            }
            if let Some(teacher) = &t.recipe {
                c.teacher_recipe(teacher);
            }
            let s = &r.model.student;
            if t.arch.vocab_size != s.arch.vocab_size {
                c.fail(&["model.student.arch.vocab_size", "model.teacher.arch.vocab_size"], format!("teacher and student vocabularies differ ({} and {}): distillation compares their logits token by token", t.arch.vocab_size, s.arch.vocab_size), "use one tokenizer for both, as IAG does (T5's)");
            }
            if let (Some(a), Some(b)) = (&t.tokenizer, &s.tokenizer) {
                if a != b {
                    c.fail(
                        &["model.student.tokenizer", "model.teacher.tokenizer"],
                        "teacher and student name different tokenizers: distillation needs one",
                        "point both at the same tokenizer.json",
                    );
                }
            }
            if let Adapter::Hyperlora { whiten_dim, .. } = &r.training.adapter {
                if u64::from(*whiten_dim) > s.arch.d_model {
                    c.fail(&["training.adapter.whiten_dim"], format!("HyperLoRA whitens the student encoder's {}-dimensional features, so it keeps at most {} components, not {whiten_dim}", s.arch.d_model, s.arch.d_model), format!("use `whiten_dim: {}` or less (IAG keeps 255 of T5-base's 768)", s.arch.d_model.saturating_sub(1)));
                }
            }
            if r.method.alignment.is_some() {
                if t.passage_max_length != s.max_length {
                    c.fail(&["method.alignment", "model.student.max_length", "model.teacher.passage_max_length"], format!("alignment compares student and teacher encoder states position by position, but the student reads {} tokens and each passage {}", s.max_length, t.passage_max_length), "give both the same length (IAG: 256)");
                }
                if r.training.gradient_checkpointing {
                    c.fail(&["method.alignment", "training.gradient_checkpointing"], "alignment keeps every layer's states and attention maps, which gradient checkpointing would recompute", "turn one of them off");
                }
            }
            if r.method.alignment.is_some()
                && (t.arch.num_layers != s.arch.num_layers
                    || t.arch.num_heads != s.arch.num_heads
                    || t.arch.d_model != s.arch.d_model)
            {
                c.fail(&["method.alignment", "model.student.arch.num_layers", "model.teacher.arch.num_layers"], "hidden and attention alignment pair teacher and student layers, heads and state widths one to one, but they differ", "use teacher and student of the same size, or drop `method.alignment`");
            }
        }
        Recipe::LongloraSft(r) => {
            let arch = &r.model.arch;
            c.decoder("model.arch", arch);
            if arch.family == crate::plan::arch::Family::Qwen {
                c.fail(&["model.arch.family"], "the `qwen` layout is Qwen-VL's language model, which runner saves and loads only inside a coe_multitask model", "use `family: qwen2` (or llama, mistral) for longlora_sft");
            }
            if matches!(r.training.adapter, Adapter::Hyperlora { .. }) {
                c.fail(
                    &["training.adapter.type"],
                    "hyperlora is IAG's T5 adapter; longlora_sft trains lora or full",
                    "use `type: lora` (LongLoRA: q, k, v, o plus embed and norm) or `type: full`",
                );
            }
            let length = r.data.max_length;
            if r.method.shifted_sparse_attention {
                let group = r.method.group_size(length);
                if group == 0 || length % group != 0 {
                    c.fail(&["data.max_length", "method.group_fraction", "method.sft_group_size"], format!("S²-Attn splits {length} tokens into groups of {group}, which do not divide it evenly"), "choose a max_length that the group size divides (a multiple of 4 with group_fraction 0.25)");
                } else if group % 2 != 0 {
                    c.fail(&["data.max_length", "method.group_fraction"], format!("S²-Attn shifts half the heads by half a group, but the group size {group} is odd"), "choose a max_length whose group size is even");
                }
                if arch.num_attention_heads % 2 != 0 {
                    c.fail(&["model.arch.num_attention_heads", "method.shifted_sparse_attention"], "S²-Attn shifts half of the attention heads, so their number must be even", "use an even number of heads, or set method.shifted_sparse_attention: false");
                }
            }
            let needed = length.div_ceil(arch.max_position_embeddings.max(1)) as f64;
            let factor = r.model.rope_factor(length);
            if factor < needed {
                c.fail(&["model.rope_scaling.factor", "data.max_length", "model.arch.max_position_embeddings"], format!("RoPE factor {factor} covers {} positions, fewer than data.max_length {length}", (factor * arch.max_position_embeddings as f64) as u64), format!("use factor {needed} (ceil(max_length / max_position_embeddings)), or null to derive it"));
            }
            // Early stopping watches the best metric: it must be measured, or it never stops.
            use super::kinds::longlora::Metric;
            let missing = match r.evaluation.best_metric {
                _ if r.training.early_stopping.is_none() => None,
                Metric::Loss | Metric::Perplexity if r.data.validation.is_none() => {
                    Some(("data.validation", "validation data"))
                }
                Metric::PasskeyAccuracy if r.evaluation.passkey.is_none() => {
                    Some(("evaluation.passkey", "a passkey evaluation"))
                }
                _ => None,
            };
            if let Some((key, what)) = missing {
                c.fail(
                    &["evaluation.best_metric", key],
                    format!("the best metric is never measured: it needs {what}"),
                    format!("set {key}, or choose another evaluation.best_metric"),
                );
            }
            if let Some(ppl) = &r.evaluation.perplexity {
                let reach = (factor * arch.max_position_embeddings as f64) as u64;
                if let Some(too_long) = ppl.context_lengths.iter().find(|l| **l > reach) {
                    c.fail(&["evaluation.perplexity.context_lengths", "model.rope_scaling.factor"], format!("perplexity at {too_long} tokens exceeds the {reach} positions the model covers"), "drop that length or raise the RoPE factor");
                }
            }
        }
        Recipe::CoeMultitask(r) => {
            let m = &r.model;
            c.decoder("model.decoder", &m.decoder);
            c.vision("model.vision.arch", &m.vision.arch);
            if let super::arch::Connector::Resampler { num_queries, .. } = &m.connector {
                let side = (*num_queries as f64).sqrt().round() as u64;
                if side * side != *num_queries {
                    c.fail(&["model.connector.num_queries"], format!("the resampler's queries sit on a square grid (their sin-cos positions), so {num_queries} must be a square"), format!("use {} or {}", side * side, (side + 1) * (side + 1)));
                }
            }
            if let super::arch::Connector::Resampler { num_heads, .. } = &m.connector {
                if m.decoder.hidden_size % num_heads != 0 {
                    c.fail(
                        &["model.connector.num_heads", "model.decoder.hidden_size"],
                        format!(
                            "the resampler's {num_heads} heads do not divide the decoder width {}",
                            m.decoder.hidden_size
                        ),
                        "choose a head count that divides model.decoder.hidden_size",
                    );
                }
            }
            let image_tokens = m.connector.tokens_per_image(&m.vision.arch);
            if image_tokens >= r.data.max_length {
                c.fail(&["data.max_length", "model.connector"], format!("one image takes {image_tokens} tokens, leaving no room for text in data.max_length {}", r.data.max_length), "raise data.max_length, or use a resampler with fewer queries");
            }
            let t = &r.method.tasks;
            let weights = [t.question, t.rationale, t.distractor, t.answer];
            if weights.iter().any(|w| *w < 0.0) || weights.iter().sum::<f64>() <= 0.0 {
                c.fail(
                    &[
                        "method.tasks.question",
                        "method.tasks.rationale",
                        "method.tasks.distractor",
                        "method.tasks.answer",
                    ],
                    "task weights must be non-negative and not all zero",
                    "give each task a weight of 0 or more, at least one above 0",
                );
            }
            // The best checkpoint is picked on the question task's text metric.
            let best = r.evaluation.best_metric;
            if best != TextMetric::Loss {
                if t.question <= 0.0 {
                    c.fail(
                        &["evaluation.best_metric", "method.tasks.question"],
                        format!("the best checkpoint is picked on question_{}, but the question task is not trained", best.name()),
                        "set evaluation.best_metric: loss, or train the question task",
                    );
                } else if !r.evaluation.metrics.contains(&best) {
                    c.fail(
                        &["evaluation.best_metric", "evaluation.metrics"],
                        format!("the best checkpoint is picked on {}, which evaluation.metrics does not compute", best.name()),
                        "add it to evaluation.metrics, or pick one of them",
                    );
                }
            }
            let ret = &r.method.retrieval;
            if ret.in_prompt > ret.top_k {
                c.fail(
                    &["method.retrieval.in_prompt", "method.retrieval.top_k"],
                    format!(
                        "{} exemplars in the prompt but only the top {} are kept",
                        ret.in_prompt, ret.top_k
                    ),
                    "keep in_prompt at most top_k",
                );
            }
            if ret.threshold > ret.signals.len() as f64 {
                c.fail(
                    &["method.retrieval.threshold", "method.retrieval.signals"],
                    format!(
                        "the score sums {} cosine similarities, so it never reaches {}",
                        ret.signals.len(),
                        ret.threshold
                    ),
                    "lower the threshold or add signals",
                );
            }
        }
    }
    c.errors
}

struct Checker<'a> {
    plan: &'a Plan,
    errors: Vec<Diagnostic>,
}

impl Checker<'_> {
    /// Where a dotted key was set: its node, or the nearest enclosing key that was (a default).
    fn locate(&self, key: &str) -> (Origin, bool) {
        let segments: Vec<&str> = key.split('.').collect();
        for n in (1..=segments.len()).rev() {
            if let Some(node) = self.plan.tree.at(&segments[..n]) {
                return (node.origin.clone(), n == segments.len());
            }
        }
        (Origin::start_of(&self.plan.source), false)
    }

    /// Report a rule broken by `keys`; the first key is the position, the others are notes.
    fn fail(&mut self, keys: &[&str], message: impl Into<String>, hint: impl Into<String>) {
        let (origin, _) = self.locate(keys[0]);
        let mut d = Diagnostic::error(origin, message).with_hint(hint);
        for key in keys {
            let (origin, set) = self.locate(key);
            d = d.with_note(
                origin,
                if set {
                    format!("`{key}` is set here")
                } else {
                    format!("`{key}` is the default")
                },
            );
        }
        self.errors.push(d);
    }

    fn training(&mut self, t: &Training) {
        if t.max_steps.is_none() && t.epochs.is_none() {
            self.fail(
                &["training.max_steps", "training.epochs"],
                "training has no end: set `training.max_steps` or `training.epochs`",
                "add `max_steps: 1000` or `epochs: 3` under `training`",
            );
        }
        let s = &t.schedule;
        if s.warmup_steps.is_some() && s.warmup_ratio.is_some() {
            self.fail(
                &[
                    "training.schedule.warmup_steps",
                    "training.schedule.warmup_ratio",
                ],
                "set warmup by steps or by ratio, not both",
                "remove one of the two",
            );
        }
        let warms =
            s.warmup_steps.is_some_and(|w| w > 0) || s.warmup_ratio.is_some_and(|w| w > 0.0);
        if s.kind == ScheduleKind::Constant && warms {
            self.fail(
                &["training.schedule.type", "training.schedule.warmup_steps"],
                "the `constant` schedule has no warmup",
                "use `type: constant_with_warmup`, or remove the warmup",
            );
        }
        if let (Some(warmup), Some(steps)) = (s.warmup_steps, t.max_steps) {
            if warmup >= steps {
                self.fail(
                    &["training.schedule.warmup_steps", "training.max_steps"],
                    format!("warmup ({warmup} steps) is not shorter than training ({steps} steps)"),
                    "shorten the warmup or train longer",
                );
            }
        }
        if t.distributed.offload_params && t.distributed.zero_stage < 3 {
            self.fail(
                &[
                    "training.distributed.offload_params",
                    "training.distributed.zero_stage",
                ],
                "offloading weights needs ZeRO stage 3 (weights sharded)",
                "set zero_stage: 3 or offload_params: false",
            );
        }
        let [b1, b2] = t.optimizer.betas;
        if !(0.0..1.0).contains(&b1) || !(0.0..1.0).contains(&b2) {
            self.fail(
                &["training.optimizer.betas"],
                format!("Adam betas must lie in [0, 1), found [{b1}, {b2}]"),
                "the papers use [0.9, 0.999] or [0.9, 0.95]",
            );
        }
        if t.early_stopping.is_some() && !self.evaluates() {
            self.fail(
                &["training.early_stopping", "evaluation.every_steps"],
                "early stopping needs evaluations during training",
                "set evaluation.every_steps (or every_epochs)",
            );
        }
        if let Some(steps) = t.max_steps {
            let global = u64::from(t.micro_batch_size) * u64::from(t.grad_accumulation);
            if u64::from(t.grad_accumulation) > steps * 1000 || global > 1 << 20 {
                self.fail(
                    &["training.micro_batch_size", "training.grad_accumulation"],
                    format!("{global} examples per device per step is implausible"),
                    "check micro_batch_size and grad_accumulation",
                );
            }
            if let Some(every) = self.plan.recipe.output().checkpoint_every_steps {
                if every > steps {
                    self.fail(
                        &["output.checkpoint_every_steps", "training.max_steps"],
                        format!(
                            "checkpoints every {every} steps never happen in a {steps}-step run"
                        ),
                        "lower checkpoint_every_steps (the final checkpoint is always written)",
                    );
                }
            }
        }
    }

    fn evaluates(&self) -> bool {
        let (steps, epochs) = self.plan.recipe.evaluation_interval();
        steps.is_some() || epochs.is_some()
    }

    fn eval_interval(&mut self) {
        let (steps, epochs) = self.plan.recipe.evaluation_interval();
        if steps.is_some() && epochs.is_some() {
            self.fail(
                &["evaluation.every_steps", "evaluation.every_epochs"],
                "evaluate every N steps or every fraction of an epoch, not both",
                "remove one of the two",
            );
        }
        if let (Some(every), Some(max)) = (steps, self.plan.recipe.training().max_steps) {
            if every > max {
                self.fail(
                    &["evaluation.every_steps", "training.max_steps"],
                    format!("evaluation every {every} steps never happens in a {max}-step run"),
                    "lower every_steps (the end of training is always evaluated)",
                );
            }
        }
    }

    /// LoRA targets must name modules of the adapted model; trainable patterns must match something.
    fn adapter(&mut self, t: &Training, parts: &[Part]) {
        let adapted: Vec<&Part> = parts.iter().filter(|p| p.adapted).collect();
        let params: Vec<&inventory::Param> = adapted.iter().flat_map(|p| &p.params).collect();
        let modules: Vec<&str> = params.iter().filter_map(|p| p.linear_module()).collect();
        let names =
            inventory::module_names(&params.iter().map(|p| (*p).clone()).collect::<Vec<_>>());
        for (i, target) in t.adapter.targets().iter().enumerate() {
            if !modules.iter().any(|m| inventory::target_matches(target, m)) {
                let key = format!("training.adapter.targets.{i}");
                let hint = match did_you_mean(target, names.iter().map(String::as_str)) {
                    Some(near) => format!(
                        "did you mean `{near}`? modules of this model: {}",
                        names.join(", ")
                    ),
                    None => format!("modules of this model: {}", names.join(", ")),
                };
                self.fail(
                    &[&key],
                    format!(
                        "LoRA target `{target}` matches no module of the {} model",
                        adapted
                            .iter()
                            .map(|p| p.name)
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                    hint,
                );
            }
        }
        if let Adapter::Lora { rank, .. } | Adapter::Hyperlora { rank, .. } = &t.adapter {
            let smallest = params
                .iter()
                .filter(|p| {
                    p.linear_module().is_some_and(|m| {
                        t.adapter
                            .targets()
                            .iter()
                            .any(|x| inventory::target_matches(x, m))
                    })
                })
                .map(|p| p.shape[0].min(p.shape[1]))
                .min();
            if let Some(smallest) = smallest.filter(|s| u64::from(*rank) > *s) {
                self.fail(
                    &["training.adapter.rank"],
                    format!("rank {rank} exceeds the smallest adapted dimension ({smallest})"),
                    "use a rank below the target modules' widths",
                );
            }
        }
        for (i, pattern) in t.adapter.also_train().iter().enumerate() {
            if !params.iter().any(|p| p.name.contains(pattern.as_str())) {
                let key = format!("training.adapter.also_train.{i}");
                self.fail(&[&key], format!("`{pattern}` matches no parameter name of the trained model, so it trains nothing"), "use a part of a parameter name, such as embed or norm (see `runner plan` for names)");
            }
        }
    }

    /// Reports an architecture's problems at its keys under `prefix`.
    fn arch(&mut self, prefix: &str, problems: Vec<ArchProblem>) {
        for p in problems {
            let keys: Vec<String> = p.keys.iter().map(|k| format!("{prefix}.{k}")).collect();
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            self.fail(&refs, p.message, p.hint);
        }
    }

    fn decoder(&mut self, prefix: &str, arch: &DecoderArch) {
        self.arch(prefix, arch.problems());
    }

    fn t5(&mut self, prefix: &str, arch: &T5Arch) {
        self.arch(prefix, arch.problems());
    }

    fn vision(&mut self, prefix: &str, arch: &VisionArch) {
        let problem = head_problem(arch.hidden_size, arch.num_attention_heads);
        self.arch(prefix, problem.into_iter().collect());
        if arch.patch_size == 0 || arch.image_size % arch.patch_size != 0 {
            let (a, b) = (
                format!("{prefix}.image_size"),
                format!("{prefix}.patch_size"),
            );
            self.fail(
                &[&a, &b],
                format!(
                    "patches of {} pixels do not tile a {}-pixel image",
                    arch.patch_size, arch.image_size
                ),
                "choose an image_size that is a multiple of patch_size",
            );
        }
    }

    /// A teacher given as a recipe must resolve, and be a distillation recipe whose trained
    /// model can serve as teacher.
    fn teacher_recipe(&mut self, path: &str) {
        let (origin, _) = self.locate("model.teacher.recipe");
        // Relative to the working directory, as data and tokenizer paths are, so that a printed
        // plan means the same wherever it is saved.
        let full = std::path::PathBuf::from(path);
        if !full.is_file() {
            self.errors.push(
                Diagnostic::error(
                    origin,
                    format!(
                        "teacher recipe `{path}` does not exist (looked at {})",
                        full.display()
                    ),
                )
                .with_hint("give the path from the project root, as for data paths (recipes/…)"),
            );
            return;
        }
        // A teacher recipe may itself name a teacher recipe; a chain that comes back is a cycle.
        thread_local!(static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });
        if DEPTH.get() >= 8
            || std::fs::canonicalize(&full).ok() == std::fs::canonicalize(&self.plan.source).ok()
        {
            self.errors.push(
                Diagnostic::error(origin, format!("teacher recipe `{path}` leads back to this recipe"))
                    .with_hint("a recipe cannot be its own teacher; point at the recipe that trains the FiD reader"),
            );
            return;
        }
        DEPTH.set(DEPTH.get() + 1);
        let resolved = super::resolve::resolve(&full, &[]);
        DEPTH.set(DEPTH.get() - 1);
        if let Err(errors) = resolved {
            let mut d = Diagnostic::error(
                origin,
                format!(
                    "teacher recipe `{path}` is invalid ({} errors)",
                    errors.len()
                ),
            )
            .with_hint("run `runner validate` on it");
            for e in errors.iter().take(3) {
                if let Some(o) = &e.origin {
                    d = d.with_note(o.clone(), e.message.clone());
                }
            }
            self.errors.push(d);
        }
    }
}

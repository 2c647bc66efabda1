//! Semantic checks on a typed recipe: the cross-key rules a schema cannot say. The checker
//! and the rules every kind shares live here; each kind's own rules are its
//! `RecipeKind::check` in `kinds/`. Each failure names the keys involved and where each was
//! set (or that it is a default).

use std::path::Path;

use super::arch::{head_problem, ArchProblem, DecoderArch, T5Arch, VisionArch};
use super::common::{EvalSchedule, Output};
use super::inventory;
use super::parts::Part;
use super::training::{
    Adapter, ComputeDtype, Precision, Quantize, ScheduleKind, Training, BLOCK_SIZES,
};
use crate::config::diagnostic::did_you_mean;
use crate::config::{Diagnostic, Node, Origin};

/// Collects the problems of one recipe, each located at the keys it names.
pub struct Checker<'a> {
    tree: &'a Node,
    source: &'a Path,
    pub errors: Vec<Diagnostic>,
    /// Settings that cannot make a run wrong but are likely not what was meant.
    pub warnings: Vec<Diagnostic>,
}

impl<'a> Checker<'a> {
    /// A checker for the recipe typed from `tree`, read from `source`.
    pub fn new(tree: &'a Node, source: &'a Path) -> Checker<'a> {
        Checker {
            tree,
            source,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The rules every kind shares: training, the evaluation schedule, the adapter's targets.
    pub fn shared(
        &mut self,
        t: &Training,
        schedule: EvalSchedule,
        output: &Output,
        parts: &[Part],
    ) {
        self.training(t, schedule, output);
        self.eval_interval(schedule, t.max_steps);
        self.adapter(t, parts);
    }

    /// Where a dotted key was set: its node, or the nearest enclosing key that was (a default).
    pub fn locate(&self, key: &str) -> (Origin, bool) {
        let segments: Vec<&str> = key.split('.').collect();
        for n in (1..=segments.len()).rev() {
            if let Some(node) = self.tree.at(&segments[..n]) {
                return (node.origin.clone(), n == segments.len());
            }
        }
        (Origin::start_of(self.source), false)
    }

    /// Report a rule broken by `keys`; the first key is the position, the others are notes.
    pub fn fail(&mut self, keys: &[&str], message: impl Into<String>, hint: impl Into<String>) {
        let d = self.diagnostic(keys, message.into(), hint.into());
        self.errors.push(d);
    }

    /// Report a setting of `keys` that cannot make the run wrong but is likely a slip (a
    /// 5-step smoke run of a recipe with 10 warmup steps).
    pub fn warn(&mut self, keys: &[&str], message: impl Into<String>, hint: impl Into<String>) {
        let d = self.diagnostic(keys, message.into(), hint.into());
        self.warnings.push(d.as_warning());
    }

    fn diagnostic(&self, keys: &[&str], message: String, hint: String) -> Diagnostic {
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
        d
    }

    fn training(&mut self, t: &Training, schedule: EvalSchedule, output: &Output) {
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
                self.warn(
                    &["training.schedule.warmup_steps", "training.max_steps"],
                    format!("warmup ({warmup} steps) is not shorter than training ({steps} steps): the learning rate never reaches its peak"),
                    "fine for a smoke run; otherwise shorten the warmup or train longer",
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
        let d = &t.distributed;
        if d.shards_weights() && t.adapter.quantize().is_some() {
            self.fail(
                &["training.distributed.zero_stage", "training.adapter.quantize"],
                "ZeRO stage 3 shards dense weights; QLoRA's 4-bit weights are not sharded by this runner",
                "use zero_stage: 2 (optimizer state and gradients sharded) with QLoRA",
            );
        }
        if d.offload_optimizer && d.zero_stage == 0 && d.devices > 1 {
            self.fail(
                &[
                    "training.distributed.offload_optimizer",
                    "training.distributed.zero_stage",
                ],
                "offloading the optimizer moves its shard to host memory: it needs ZeRO stage 1, 2 or 3",
                "set zero_stage: 1, 2 or 3, or offload_optimizer: false",
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
        if t.early_stopping.is_some()
            && schedule.every_steps.is_none()
            && schedule.every_epochs.is_none()
        {
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
            if let Some(every) = output.checkpoint_every_steps {
                if every > steps {
                    self.warn(
                        &["output.checkpoint_every_steps", "training.max_steps"],
                        format!(
                            "checkpoints every {every} steps never happen in a {steps}-step run"
                        ),
                        "the final checkpoint is always written; lower checkpoint_every_steps for checkpoints before it",
                    );
                }
            }
        }
    }

    fn eval_interval(&mut self, schedule: EvalSchedule, max_steps: Option<u64>) {
        let (steps, epochs) = (schedule.every_steps, schedule.every_epochs);
        if steps.is_some() && epochs.is_some() {
            self.fail(
                &["evaluation.every_steps", "evaluation.every_epochs"],
                "evaluate every N steps or every fraction of an epoch, not both",
                "remove one of the two",
            );
        }
        if let (Some(every), Some(max)) = (steps, max_steps) {
            if every > max {
                self.warn(
                    &["evaluation.every_steps", "training.max_steps"],
                    format!("evaluation every {every} steps never happens in a {max}-step run"),
                    "the end of training is always evaluated; lower every_steps for evaluations before it",
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
        if let Adapter::Lora { alpha, rank, .. } = &t.adapter {
            if !(alpha.is_finite() && *alpha > 0.0) {
                self.fail(
                    &["training.adapter.alpha"],
                    format!("alpha {alpha} is not positive: the adapters' scale alpha / rank would be {}", alpha / f64::from(*rank)),
                    "use a positive alpha (LongLoRA and QLoRA use 16 to 64; alpha = rank scales by 1)",
                );
            }
        }
        if let Some(q) = t.adapter.quantize() {
            self.quantize(q, t.precision);
        }
        for (i, pattern) in t.adapter.also_train().iter().enumerate() {
            if !params.iter().any(|p| p.name.contains(pattern.as_str())) {
                let key = format!("training.adapter.also_train.{i}");
                self.fail(&[&key], format!("`{pattern}` matches no parameter name of the trained model, so it trains nothing"), "use a part of a parameter name, such as embed or norm (see `runner plan` for names)");
            }
        }
    }

    /// QLoRA's settings: one spelling per key, a block size bitsandbytes has, and a compute
    /// dtype that is the precision's compute kind.
    fn quantize(&mut self, q: &Quantize, precision: Precision) {
        const AT: &str = "training.adapter.quantize";
        for (ours, bnb) in q.set_twice() {
            self.fail(
                &[&format!("{AT}.{ours}"), &format!("{AT}.{bnb}")],
                format!("`{ours}` is set twice: also as `{bnb}`, BitsAndBytesConfig's name for it"),
                "keep one of the two spellings",
            );
        }
        if !BLOCK_SIZES.contains(&q.block_size()) {
            self.fail(
                &[&format!("{AT}.block_size")],
                format!(
                    "block size {} is not one bitsandbytes' 4-bit kernels have",
                    q.block_size()
                ),
                format!("use one of {BLOCK_SIZES:?} (64 is QLoRA's)"),
            );
        }
        let (dtype, compute) = if q.compute_dtype() == ComputeDtype::Bf16 {
            (
                "bf16",
                [Precision::Bf16, Precision::Bf16Mixed].contains(&precision),
            )
        } else {
            ("fp32", precision == Precision::Fp32)
        };
        if !compute {
            let key = if q.bnb_4bit_compute_dtype.is_some() {
                "bnb_4bit_compute_dtype"
            } else {
                "compute_dtype"
            };
            self.fail(
                &[&format!("{AT}.{key}"), "training.precision"],
                format!("4-bit weights are dequantised into {dtype}, but training.precision computes in another kind"),
                "use compute_dtype bf16 with precision bf16 or bf16_mixed, fp32 with fp32",
            );
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

    pub fn decoder(&mut self, prefix: &str, arch: &DecoderArch) {
        self.arch(prefix, arch.problems());
    }

    pub fn t5(&mut self, prefix: &str, arch: &T5Arch) {
        self.arch(prefix, arch.problems());
    }

    pub fn vision(&mut self, prefix: &str, arch: &VisionArch) {
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

    /// A model needs a tokenizer: `model.tokenizer`, or the one in its folder.
    pub fn tokenizer(&mut self, key: &str, file: Option<std::path::PathBuf>, what: &str) {
        if file.is_none() {
            self.fail(
                &[key],
                format!("{what} needs a tokenizer.json, and there is no folder to take it from"),
                format!("set `{key}` to a tokenizer.json (data/tiny/ has tokenizers for the tiny models)"),
            );
        }
    }
}

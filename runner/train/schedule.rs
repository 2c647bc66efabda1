//! Learning-rate schedules, written as transcriptions of the libraries the papers trained with so
//! that a run here sees the same rate at every step as the original run (HF parity).
//!
//! Step numbering follows torch's `LambdaLR`, which HF's `Trainer` uses: optimizer step `s`
//! (0-based) runs with `peak_lr * lr_lambda(s)`, and `scheduler.step()` comes after each
//! optimizer step. The transformers 5.23 formulas (`transformers/optimization.py`, mirrored below
//! operation by operation, including Python's int/float handling at the boundaries):
//!
//! - `get_constant_schedule`: `1`
//! - `get_constant_schedule_with_warmup`: `s < w ? float(s) / float(max(1.0, w)) : 1.0`
//! - `get_linear_schedule_with_warmup`: `s < w ? float(s) / float(max(1, w))
//!   : max(0.0, float(T - s) / float(max(1, T - w)))`
//! - `get_cosine_schedule_with_warmup` (num_cycles 0.5): `s < w ? float(s) / float(max(1, w))`,
//!   else `progress = float(s - w) / float(max(1, T - w))` and
//!   `max(0, 0.5 * (1.0 + cos(pi * 0.5 * 2.0 * progress)))`; beyond `T` it rises again, as in HF.

use crate::plan::training::{Schedule, ScheduleKind, WarmupType};

/// The learning rate of every optimizer step of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct LrSchedule {
    kind: ScheduleKind,
    peak_lr: f64,
    total_steps: u64,
    warmup_steps: u64,
    warmup_type: WarmupType,
}

impl LrSchedule {
    /// Resolves the warmup length the way HF's `TrainingArguments.get_warmup_steps` does:
    /// `warmup_steps` when it is set and above 0, otherwise `ceil(total_steps × warmup_ratio)`
    /// (transformers 4.x: `warmup_steps if warmup_steps > 0 else math.ceil(num_training_steps *
    /// warmup_ratio)`; 5.x folds the ratio into a float `warmup_steps < 1` with the same `ceil`).
    ///
    /// `Constant` ignores warmup (`get_constant_schedule` takes none). `WarmupDecay` applies
    /// `max(2, max(1, w))`: HF's DeepSpeed integration fills `warmup_num_steps` with
    /// `max(1, get_warmup_steps(T))` and DeepSpeed's `WarmupLR` clamps it to at least 2.
    pub fn new(schedule: &Schedule, peak_lr: f64, total_steps: u64) -> LrSchedule {
        let hf_warmup = match (schedule.warmup_steps, schedule.warmup_ratio) {
            (Some(n), _) if n > 0 => n,
            (_, Some(ratio)) => (total_steps as f64 * ratio).ceil() as u64,
            (Some(n), None) => n,
            (None, None) => 0,
        };
        let warmup_steps = match schedule.kind {
            ScheduleKind::Constant => 0,
            ScheduleKind::WarmupDecay => hf_warmup.max(1).max(2),
            ScheduleKind::ConstantWithWarmup | ScheduleKind::Linear | ScheduleKind::Cosine => {
                hf_warmup
            }
        };
        LrSchedule {
            kind: schedule.kind,
            peak_lr,
            total_steps,
            warmup_steps,
            warmup_type: schedule.warmup_type.unwrap_or(WarmupType::Log),
        }
    }

    /// The warmup length this schedule applies (after HF's resolution of a ratio, and DeepSpeed's
    /// clamp for `WarmupDecay`); 0 for `Constant`.
    pub fn warmup_steps(&self) -> u64 {
        self.warmup_steps
    }

    /// The learning rate for optimizer step `step` (0-based): `peak_lr * lr_lambda(step)`, the
    /// product torch's `LambdaLR.get_lr` forms (`base_lr * lmbda(last_epoch)`).
    pub fn lr(&self, step: u64) -> f64 {
        self.peak_lr * self.factor(step)
    }

    /// The multiplier of the peak rate at `step`. Python's unbounded signed integers become
    /// i64 here so that `T - s` and `T - w` can go negative exactly as they do there.
    fn factor(&self, step: u64) -> f64 {
        let s = step as i64;
        let w = self.warmup_steps as i64;
        let t = self.total_steps as i64;
        match self.kind {
            // _get_constant_lambda: return 1
            ScheduleKind::Constant => 1.0,
            // _get_constant_schedule_with_warmup_lr_lambda
            ScheduleKind::ConstantWithWarmup => {
                if s < w {
                    s as f64 / (w as f64).max(1.0)
                } else {
                    1.0
                }
            }
            // _get_linear_schedule_with_warmup_lr_lambda
            ScheduleKind::Linear => {
                if s < w {
                    s as f64 / w.max(1) as f64
                } else {
                    f64::max(0.0, (t - s) as f64 / (t - w).max(1) as f64)
                }
            }
            // _get_cosine_schedule_with_warmup_lr_lambda, num_cycles = 0.5 (and, as transformers
            // 5.23 resolves the name, min_lr_rate = 0: `factor * (1 - 0) + 0` leaves it unchanged)
            ScheduleKind::Cosine => {
                if s < w {
                    s as f64 / w.max(1) as f64
                } else {
                    let progress = (s - w) as f64 / (t - w).max(1) as f64;
                    let num_cycles = 0.5;
                    let factor =
                        0.5 * (1.0 + (std::f64::consts::PI * num_cycles * 2.0 * progress).cos());
                    f64::max(0.0, factor)
                }
            }
            // DeepSpeed WarmupDecayLR (deepspeed/runtime/lr_schedules.py, read at deepspeedai/
            // DeepSpeed edaa722, same formula since 2021), warmup_min_lr 0, warmup_max_lr = peak,
            // warmup_num_steps W = max(2, ...) (see new):
            //   lr = min_lr + (max_lr - min_lr) * gamma, with gamma =
            //     log(it + 1) / log(W)  (warmup_type "log", the default)            if it < W
            //     it / W                (warmup_type "linear")                      if it < W
            //     max(0.0, float(total_num_steps - it) / float(max(1.0, total_num_steps - W)))
            // With min_lr 0 that is exactly peak * gamma. Indexing: evaluated at
            // last_batch_iteration = step, like the HF kinds. (DeepSpeed's engine steps its
            // scheduler after each optimizer step and never before the first, so in a real
            // DeepSpeed run optimizer step s >= 1 uses gamma(s - 1), and step 0 uses the
            // optimizer's initial lr: the peak before DeepSpeed 0.15.3, min_lr 0 since.)
            ScheduleKind::WarmupDecay => {
                if s < w {
                    match self.warmup_type {
                        WarmupType::Log => ((s + 1) as f64).ln() / (w as f64).ln(),
                        WarmupType::Linear => s as f64 / w as f64,
                    }
                } else {
                    f64::max(0.0, (t - s) as f64 / f64::max(1.0, (t - w) as f64))
                }
            }
        }
    }
}

//! Learning-rate schedules against HF transformers' own schedulers (and a transcription of
//! DeepSpeed's WarmupDecayLR), from tests/fixtures/schedules.json (scripts/make_fixtures.py,
//! make_schedules), plus a few values derived by hand.

use runner::plan::training::{Schedule, ScheduleKind, WarmupType};
use runner::train::schedule::LrSchedule;
use serde_json::Value;

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-15 || (got - want).abs() <= 1e-12 * want.abs()
}

fn schedule(kind: ScheduleKind, warmup_steps: Option<u64>, warmup_ratio: Option<f64>) -> Schedule {
    Schedule {
        kind,
        warmup_steps,
        warmup_ratio,
        warmup_type: None,
    }
}

#[test]
fn every_step_matches_the_reference_schedulers() {
    let text = std::fs::read_to_string("tests/fixtures/schedules.json").unwrap();
    let entries: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(entries.len() >= 15, "{} fixture entries", entries.len());
    let mut checked = 0;
    for entry in &entries {
        let kind: ScheduleKind = serde_json::from_value(entry["type"].clone()).unwrap();
        let peak_lr = entry["peak_lr"].as_f64().unwrap();
        let total_steps = entry["total_steps"].as_u64().unwrap();
        let plan = Schedule {
            warmup_type: entry
                .get("warmup_type")
                .map(|v| serde_json::from_value::<WarmupType>(v.clone()).unwrap()),
            ..schedule(
                kind,
                entry.get("warmup_steps").map(|v| v.as_u64().unwrap()),
                entry.get("warmup_ratio").map(|v| v.as_f64().unwrap()),
            )
        };
        let lrs = LrSchedule::new(&plan, peak_lr, total_steps);
        let reference = entry["reference"].as_str().unwrap();
        assert_eq!(
            lrs.warmup_steps(),
            entry["resolved_warmup_steps"].as_u64().unwrap(),
            "{reference} {entry}"
        );
        let expected = entry["lrs"].as_array().unwrap();
        assert_eq!(expected.len() as u64, total_steps + 1);
        for (step, want) in expected.iter().enumerate() {
            let want = want.as_f64().unwrap();
            let got = lrs.lr(step as u64);
            assert!(
                close(got, want),
                "{reference} {kind:?} {plan:?} peak {peak_lr} total {total_steps}: \
                 step {step}: {got:e} vs {want:e}"
            );
            checked += 1;
        }
    }
    assert!(checked > 300, "{checked} steps checked");
}

#[test]
fn hand_derived_values() {
    // Linear, warmup 4 of 20, peak 3e-4:
    //   step 2 is in warmup:  3e-4 × 2/4 = 1.5e-4
    //   step 12 decays:       3e-4 × (20 − 12)/(20 − 4) = 3e-4 × 8/16 = 1.5e-4
    //   step 20 (= total):    3e-4 × 0/16 = 0
    let linear = LrSchedule::new(&schedule(ScheduleKind::Linear, Some(4), None), 3e-4, 20);
    assert!(close(linear.lr(2), 1.5e-4));
    assert!(close(linear.lr(12), 1.5e-4));
    assert_eq!(linear.lr(20), 0.0);

    // Cosine, warmup 5 of 37, peak 3e-4: decay runs over 37 − 5 = 32 steps, so its midpoint is
    // step 5 + 16 = 21, progress 0.5: 3e-4 × 0.5 × (1 + cos(π × 0.5)) = 3e-4 × 0.5 = 1.5e-4.
    let cosine = LrSchedule::new(&schedule(ScheduleKind::Cosine, Some(5), None), 3e-4, 37);
    assert!(close(cosine.lr(21), 1.5e-4));

    // Constant with warmup 3, peak 2e-5: step 1 = 2e-5 × 1/3; from step 3 on, the peak.
    let cww = LrSchedule::new(
        &schedule(ScheduleKind::ConstantWithWarmup, Some(3), None),
        2e-5,
        10,
    );
    assert!(close(cww.lr(1), 2e-5 / 3.0));
    assert_eq!(cww.lr(3), 2e-5);

    // DeepSpeed WarmupDecayLR with linear warmup 1 of 10, peak 1e-3: WarmupLR clamps warmup
    // to max(2, 1) = 2, so step 1 = 1e-3 × 1/2, and step 3 = 1e-3 × (10 − 3)/(10 − 2) = 8.75e-4.
    let linear = Schedule {
        warmup_type: Some(WarmupType::Linear),
        ..schedule(ScheduleKind::WarmupDecay, Some(1), None)
    };
    let decay = LrSchedule::new(&linear, 1e-3, 10);
    assert_eq!(decay.warmup_steps(), 2);
    assert!(close(decay.lr(1), 5e-4));
    assert!(close(decay.lr(3), 8.75e-4));
    // Its default, log warmup (LongLoRA's DeepSpeed configs: 20 steps): step s < 20 gets
    // ln(s + 1) / ln(20) of the peak, so step 0 gets 0, step 4 ln 5 / ln 20 = 0.537244…, and
    // step 19 the whole peak.
    let log = LrSchedule::new(
        &schedule(ScheduleKind::WarmupDecay, Some(20), None),
        2e-5,
        1000,
    );
    assert_eq!(log.lr(0), 0.0);
    assert!(close(log.lr(4), 2e-5 * 0.537_243_573_680_481_7));
    assert!(close(log.lr(19), 2e-5));
    assert!(close(log.lr(20), 2e-5));
}

#[test]
fn warmup_resolution_follows_hf() {
    // ceil(37 × 0.1) = ceil(3.7) = 4; ceil(37 × 0.03) = ceil(1.11) = 2; ceil(20 × 0.1) = 2.
    let ratio = |r, total| {
        LrSchedule::new(&schedule(ScheduleKind::Linear, None, Some(r)), 1.0, total).warmup_steps()
    };
    assert_eq!(ratio(0.1, 37), 4);
    assert_eq!(ratio(0.03, 37), 2);
    assert_eq!(ratio(0.1, 20), 2);
    // Both set: warmup_steps wins when above 0, as in HF (`warmup_steps if warmup_steps > 0
    // else ceil(total × warmup_ratio)`).
    let both = |steps, r| {
        LrSchedule::new(
            &schedule(ScheduleKind::Cosine, Some(steps), Some(r)),
            1.0,
            20,
        )
        .warmup_steps()
    };
    assert_eq!(both(4, 0.5), 4);
    assert_eq!(both(0, 0.1), 2);
    // Constant takes no warmup (get_constant_schedule has none): the peak from step 0.
    let constant = LrSchedule::new(&schedule(ScheduleKind::Constant, None, None), 1e-3, 10);
    assert_eq!(constant.warmup_steps(), 0);
    assert_eq!(constant.lr(0), 1e-3);
}

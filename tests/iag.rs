//! IAG distillation: the FiD/DPR data layout, the distillation loss against hand-computed
//! values, and a teacher recipe's trained teacher feeding a distilled student.

use std::process::Command;

use runner::data::qa;
use runner::methods::alignment::{attention_ce, attention_mse, hidden_cosine};
use runner::methods::iag::{annealed_temperature, distillation_kl, extra_kl};
use tch::Tensor;

fn item() -> qa::QaItem {
    serde_json::from_value(serde_json::json!({
        "question": "When was Zorblat founded?",
        "answers": ["1734", "in 1734"],
        "ctxs": [
            {"title": "Mira Keln", "text": "Mira Keln was a founder.", "score": 70.5},
            {"title": "Zorblat", "text": "Zorblat was founded in 1734.", "score": "81.0"},
            {"title": "Quill", "text": "Quill is a town.", "score": 75}
        ],
        "pred": "Zorblat, founded in 1734, is known for glass."
    }))
    .unwrap()
}

#[test]
fn fid_passages_student_input_and_target_follow_iags_format() {
    let it = item();
    // Highest score first (scores may be strings in DPR files), `question: … title: … context: …`.
    assert_eq!(
        it.passages(2, true),
        [
            "question: When was Zorblat founded? title: Zorblat context: Zorblat was founded in 1734.",
            "question: When was Zorblat founded? title: Quill context: Quill is a town.",
        ]
    );
    assert_eq!(
        it.passages(1, false)[0],
        "question: When was Zorblat founded? title: Mira Keln context: Mira Keln was a founder."
    );
    assert_eq!(
        it.student_input(Some("pred"), 0).unwrap(),
        "When was Zorblat founded?\nZorblat, founded in 1734, is known for glass."
    );
    assert_eq!(
        it.student_input(Some("pred"), 9).unwrap(),
        "When was Zorblat founded?\nfounded in 1734, is known for glass."
    );
    assert_eq!(
        it.student_input(None, 0).unwrap(),
        "When was Zorblat founded?"
    );
    let missing = format!(
        "{:#}",
        it.student_input(Some("compressed_ctxs_5"), 0).unwrap_err()
    );
    assert!(
        missing.contains("compressed_ctxs_5") && missing.contains("hint:"),
        "{missing}"
    );
    assert_eq!(it.target(), "1734");
    assert_eq!(it.golds(), ["1734", "in 1734"]);
}

#[test]
fn the_distillation_loss_is_iags_kl_without_a_temperature_factor() {
    // Position 1: student [0, 0] (p = ½, ½), teacher [0, ln 3] (p = ¼, ¾):
    //   KL = ¼·ln(¼/½) + ¾·ln(¾/½) = 0.1308120…
    // Position 2: student = teacher: KL = 0. The mean over positions is 0.0654060…
    let student = Tensor::from_slice(&[0.0f32, 0.0, 1.0, 2.0]).view([1, 2, 2]);
    let teacher = Tensor::from_slice(&[0.0f32, 3f32.ln(), 1.0, 2.0]).view([1, 2, 2]);
    let kl = distillation_kl(&student, &teacher, 1.0).double_value(&[]);
    let by_hand = (0.25 * (0.5f64).ln() + 0.75 * (1.5f64).ln()) / 2.0;
    assert!((kl - by_hand).abs() < 1e-6, "{kl} vs {by_hand}");
    // T = 2 halves the logits: p_t = (1, √3)/(1 + √3); no T² factor.
    let pt = [1.0 / (1.0 + 3f64.sqrt()), 3f64.sqrt() / (1.0 + 3f64.sqrt())];
    let by_hand = (pt[0] * (pt[0] / 0.5).ln() + pt[1] * (pt[1] / 0.5).ln()) / 2.0;
    assert!((distillation_kl(&student, &teacher, 2.0).double_value(&[]) - by_hand).abs() < 1e-6);
    // The code's extra term: KLDiv batchmean sums over positions and divides by the batch (1),
    // then ÷ scale, then sigmoid(kl)·kl.
    let extra = extra_kl(&student, &teacher, 1.0, 100.0).double_value(&[]);
    let kl = (0.25 * (0.5f64).ln() + 0.75 * (1.5f64).ln()) / 100.0;
    assert!((extra - kl / (1.0 + (-kl).exp())).abs() < 1e-7, "{extra}");
}

#[test]
fn the_temperature_anneals_every_n_steps() {
    // T / (1 + ln(step // every + 1)).
    assert_eq!(annealed_temperature(3.0, 0, 500), 3.0);
    assert_eq!(annealed_temperature(3.0, 499, 500), 3.0);
    assert!((annealed_temperature(3.0, 500, 500) - 3.0 / (1.0 + 2f64.ln())).abs() < 1e-12);
    assert!((annealed_temperature(3.0, 1700, 500) - 3.0 / (1.0 + 4f64.ln())).abs() < 1e-12);
}

#[test]
fn a_teacher_recipes_trained_teacher_feeds_a_distilled_student() {
    let tmp = tempfile::tempdir().unwrap();
    let (teacher, student) = (tmp.path().join("teacher"), tmp.path().join("student"));
    let runner = |recipe: &str, out: &std::path::Path, extra: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_runner"))
            .args([
                "run",
                recipe,
                "training.max_steps=3",
                "training.schedule.warmup_steps=1",
                "evaluation.every_steps=3",
                "evaluation.max_new_tokens=4",
            ])
            .args(extra)
            .arg("--out")
            .arg(out)
            .args(["--device", "cpu"])
            .output()
            .unwrap();
        crate::assert_success(&o);
    };
    runner("recipes/tiny/iag_teacher.yaml", &teacher, &[]);
    assert!(
        teacher.join("teacher/config.json").is_file(),
        "the teacher recipe saves its FiD reader"
    );
    assert!(
        teacher.join("model/config.json").is_file(),
        "and its undistilled student"
    );
    let path = format!("model.teacher.path={}", teacher.join("teacher").display());
    runner(
        "recipes/tiny/iag_distill.yaml",
        &student,
        &["model.teacher.recipe=null", &path],
    );
    let metrics = std::fs::read_to_string(student.join("metrics.csv")).unwrap();
    for name in ["exact_match", "f1", "teacher_exact_match", "teacher_f1"] {
        assert!(metrics.contains(&format!("3,eval,{name},")), "{name}");
    }
    assert!(
        !student.join("teacher").exists(),
        "a frozen teacher is not saved again"
    );
}

#[test]
fn a_hyperlora_student_trains_its_hypernetworks_and_saves_them_with_the_whitening() {
    let tmp = tempfile::tempdir().unwrap();
    // Success means the step-0 check passed: every hypernetwork weight got a finite, non-zero
    // gradient.
    crate::run_briefly(
        "recipes/tiny/iag_teacher.yaml",
        2,
        &[
            "training.adapter.type=hyperlora",
            "training.adapter.rank=4",
            "training.adapter.targets=[q,v]",
            "training.adapter.whiten_dim=32",
            "training.adapter.stacks=[encoder,decoder]",
            "training.adapter.also_train=[norm,wi,wo]",
        ],
        tmp.path(),
    );
    let saved: Vec<String> =
        Tensor::read_safetensors(tmp.path().join("hyperlora/hypernet.safetensors"))
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
    for name in [
        "hypernet.encoder.selfattention.down.0.weight",
        "hypernet.decoder.encdecattention.up.2.bias",
        "whitening.kernel",
        "whitening.bias",
    ] {
        assert!(saved.iter().any(|n| n == name), "{name} in {saved:?}");
    }
    let base = std::fs::read_to_string(tmp.path().join("model/config.json")).unwrap();
    assert!(base.contains("T5ForConditionalGeneration"));
}

fn close(t: Tensor, expected: f64) {
    let got = t.double_value(&[]);
    assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
}

#[test]
fn alignment_terms_match_hand_computed_values() {
    // One example, one head, two positions: attention maps [1, 1, 2, 2].
    let map = |rows: [f32; 4]| Tensor::from_slice(&rows).view([1, 1, 2, 2]);
    let (s, t) = (map([0.7, 0.3, 0.5, 0.5]), map([0.4, 0.6, 0.1, 0.9]));
    let both = Tensor::from_slice(&[1i64, 1]).view([1, 2]);
    let first = Tensor::from_slice(&[1i64, 0]).view([1, 2]);
    // MSE over real (query, key) pairs: (0.09 + 0.09 + 0.16 + 0.16) / 4; only (0, 0): 0.09.
    close(attention_mse(&s, &t, &both), 0.125);
    close(attention_mse(&s, &t, &first), 0.09);
    // CE of softmax(T) against log_softmax(S), per query row, over H·n real queries.
    // Row 0: p = (1/(1+e^0.2), ·) = (0.450166, 0.549834); log q = (−0.513015, −0.913015).
    // Row 1: p = (0.310026, 0.689974); log q = (ln ½, ln ½).
    let row0 = 0.450166 * 0.513015 + 0.549834 * 0.913015;
    let row1 = std::f64::consts::LN_2;
    close(attention_ce(&s, &t, &both), (row0 + row1) / 2.0);
    // Masked keys drop out of the sum (not of the softmax), masked queries entirely.
    close(attention_ce(&s, &t, &first), 0.450166 * 0.513015);
    // 1 − cos per real token: orthogonal (1) and parallel (0).
    let states = |v: [f32; 4]| Tensor::from_slice(&v).view([1, 2, 2]);
    let (a, b) = (states([1.0, 0.0, 1.0, 1.0]), states([0.0, 1.0, 2.0, 2.0]));
    close(hidden_cosine(&a, &b, &both), 0.5);
    close(
        hidden_cosine(&a, &b, &Tensor::from_slice(&[0i64, 1]).view([1, 2])),
        0.0,
    );
}

#[test]
fn alignment_and_hyperlora_settings_are_checked_before_training() {
    let validate = |extra: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_runner"))
            .args(["plan", "recipes/tiny/iag_teacher.yaml"])
            .args(extra)
            .output()
            .unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout)
    };
    let lengths = validate(&["method.alignment={}"]);
    assert!(
        lengths.contains("model.student.max_length")
            && lengths.contains("hint: give both the same length"),
        "{lengths}"
    );
    let whiten = validate(&[
        "training.adapter.type=hyperlora",
        "training.adapter.rank=4",
        "training.adapter.targets=[q,v]",
    ]);
    assert!(
        whiten.contains("training.adapter.whiten_dim") && whiten.contains("at most 64"),
        "{whiten}"
    );
}

#[test]
fn a_run_with_alignment_adds_the_terms_to_the_loss() {
    let tmp = tempfile::tempdir().unwrap();
    crate::run_briefly(
        "recipes/tiny/iag_teacher.yaml",
        2,
        &[
            "model.student.max_length=48",
            "method.alpha_kd=0.4",
            "method.alignment={encoder_attention: 10.0}",
        ],
        tmp.path(),
    );
    let plan = std::fs::read_to_string(tmp.path().join("plan.yaml")).unwrap();
    assert!(
        plan.contains("decoder_attention: 0.02"),
        "the code's weights are the defaults"
    );
}

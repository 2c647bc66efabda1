//! TensorBoard event files: what `EventWriter` writes, TensorBoard's own reader reads back.

use std::path::Path;
use std::process::Command;

use runner::artifacts::tensorboard::{crc32c, masked_crc32c, EventWriter, HParamValue};
use serde_json::Value;

#[test]
fn crc32c_matches_known_vectors() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA); // RFC 3720, B.4
    assert_eq!(crc32c(b""), 0);
    // TensorBoard's own masked_crc32c(b"123456789").
    assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
}

/// `scripts/read_tensorboard.py DIR` as JSON.
fn read_back(dir: &Path) -> Value {
    let out = Command::new(".venv/bin/python")
        .arg("scripts/read_tensorboard.py")
        .arg(dir)
        .output()
        .expect(".venv/bin/python runs (./dev sets up .venv with tensorboard)");
    assert!(
        out.status.success(),
        "read_tensorboard.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("read_tensorboard.py prints JSON")
}

fn assert_series(got: &Value, want: &[(i64, f64)]) {
    let got = got.as_array().expect("a series");
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (point, (step, value)) in got.iter().zip(want) {
        assert_eq!(point[0].as_i64(), Some(*step), "{got:?}");
        let read = point[1].as_f64().unwrap();
        assert!(
            (read - value).abs() < 1e-6,
            "step {step}: {read} != {value}"
        );
    }
}

#[test]
fn tensorboard_reads_back_scalars_text_and_hparams_from_two_writers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");

    // Two writers in one folder within the same second: each keeps its own file.
    let mut train = EventWriter::create(&dir).unwrap();
    let mut eval = EventWriter::create(&dir).unwrap();
    assert_ne!(train.path(), eval.path());

    let loss = [(0, 2.5), (1, 1.75), (2, 0.123_456_7), (1_000_000, -3.0e-3)];
    for (step, value) in loss {
        train.scalar("train/loss", value, step).unwrap();
    }
    let text = "**hello** — ünïcode\nsecond line";
    train.text("samples", text, 7).unwrap();
    let params = [
        ("lr".to_string(), HParamValue::Number(3e-4)),
        (
            "optimizer".to_string(),
            HParamValue::Text("adamw".to_string()),
        ),
        ("lora".to_string(), HParamValue::Bool(true)),
    ];
    train
        .hparams(&params, &["train/loss", "eval/accuracy"])
        .unwrap();
    let accuracy = [(5, 0.5), (10, 0.875)];
    for (step, value) in accuracy {
        eval.scalar("eval/accuracy", value, step).unwrap();
    }
    train.flush().unwrap();
    eval.flush().unwrap();

    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, 2, "one event file per writer");

    let got = read_back(&dir);
    assert_series(&got["scalars"]["train/loss"], &loss);
    assert_series(&got["scalars"]["eval/accuracy"], &accuracy);
    assert_eq!(got["scalars"].as_object().unwrap().len(), 2, "{got}");

    assert_eq!(
        got["text"]["samples/text_summary"],
        serde_json::json!([[7, text]]),
        "{got}"
    );

    let hparams = &got["hparams"];
    assert!(
        (hparams["lr"].as_f64().unwrap() - 3e-4).abs() < 1e-12,
        "{got}"
    );
    assert_eq!(hparams["optimizer"], "adamw", "{got}");
    assert_eq!(hparams["lora"], true, "{got}");
    assert_eq!(hparams.as_object().unwrap().len(), 3, "{got}");
    assert_eq!(
        got["metrics"],
        serde_json::json!(["train/loss", "eval/accuracy"]),
        "{got}"
    );
}

//! A run's identity covers its data: the files a plan reads are digested (and the digests
//! cached, so unchanged files are not read again); a finished run or sweep trial whose files
//! changed is refused or trained anew, naming the file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use runner::digest;
use runner::methods::inputs::file_digests;
use runner::plan::resolve;

#[test]
fn a_cached_digest_is_reused_while_size_and_mtime_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = Some(tmp.path().join("cache"));
    let file = tmp.path().join("data.json");
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let write = |text: &str, at: SystemTime| {
        fs::write(&file, text).unwrap();
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(at)
            .unwrap();
    };
    write("[1, 2, 3]", an_hour_ago);
    let files = [file.clone(), tmp.path().join("absent.json")];
    let first = digest::digests_cached_in(&files, cache.clone()).unwrap();
    assert_eq!(
        first[0].1,
        blake3::hash(b"[1, 2, 3]").to_hex().to_string(),
        "blake3 of the bytes"
    );
    assert_eq!(first[1].1, digest::MISSING);
    // Same size and time: the cache answers, so the file is not read (its new bytes unseen).
    write("[1, 2, 4]", an_hour_ago);
    let cached = digest::digests_cached_in(&files, cache.clone()).unwrap();
    assert_eq!(cached[0].1, first[0].1);
    // Another time: read again.
    write("[1, 2, 4]", an_hour_ago + Duration::from_secs(1));
    let again = digest::digests_cached_in(&files, cache.clone()).unwrap();
    assert_eq!(again[0].1, blake3::hash(b"[1, 2, 4]").to_hex().to_string());
    // Without a cache every file is read.
    let uncached = digest::digests_cached_in(&files, None).unwrap();
    assert_eq!(uncached[0].1, again[0].1);

    // A cache mostly of superseded lines (a file whose time kept changing) is rewritten with
    // one line per path, and still answers.
    let tsv = tmp.path().join("cache/digests.tsv");
    let mut text = fs::read_to_string(&tsv).unwrap();
    for time in 0..3000 {
        text += &format!("/elsewhere/log.txt\t10\t{time}\tdeadbeef\n");
    }
    fs::write(&tsv, text).unwrap();
    let compacted = digest::digests_cached_in(&files, cache.clone()).unwrap();
    assert_eq!(compacted[0].1, again[0].1);
    let lines: Vec<String> = fs::read_to_string(&tsv)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 2, "one line per path: {lines:?}");
    assert!(lines
        .iter()
        .any(|l| l.starts_with("/elsewhere/log.txt\t10\t2999\t")));
    write("[1, 2, 5]", an_hour_ago + Duration::from_secs(2));
    let after = digest::digests_cached_in(&files, cache.clone()).unwrap();
    assert_eq!(after[0].1, blake3::hash(b"[1, 2, 5]").to_hex().to_string());
}

#[test]
fn each_kind_digests_the_files_its_runs_read() {
    let listed = |recipe: &str| -> Vec<String> {
        let plan = resolve(Path::new(recipe), &[]).unwrap();
        file_digests(&plan)
            .unwrap()
            .into_iter()
            .map(|(name, digest)| {
                assert_ne!(digest, digest::MISSING, "{recipe}: {name}");
                name
            })
            .collect()
    };
    let longlora = listed("recipes/tiny/longlora_sft.yaml");
    for file in [
        "file:data/tiny/longlora/train.json",
        "file:data/tiny/longlora/dev.json",
        "file:data/tiny/longlora/tokenizer.json",
        "file:data/tiny/longlora/texts.txt",
    ] {
        assert!(longlora.contains(&file.to_string()), "{file}: {longlora:?}");
    }
    let iag = listed("recipes/tiny/iag_distill.yaml");
    assert!(iag.iter().any(|f| f.ends_with("train.json")), "{iag:?}");
    // CoE reads a whole Qwen-VL folder and the images its data lists.
    let coe = listed("recipes/tiny/coe_qwen_vl.yaml");
    assert!(coe.iter().any(|f| f.ends_with(".safetensors")), "{coe:?}");
    assert!(coe.iter().any(|f| f.ends_with(".png")), "{coe:?}");
}

/// The tiny LongLoRA recipe, 3 steps, reading its training data from `data`.
fn run(data: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runner"))
        .args([
            "run",
            "recipes/tiny/longlora_sft.yaml",
            "training.max_steps=3",
        ])
        .arg(format!("data.train={}", data.display()))
        .args(extra)
        .arg("--out")
        .arg(out)
        .args(["--device", "cpu"])
        .env("RUNNER_CACHE_DIR", out.parent().unwrap().join("cache"))
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn copy_of_the_training_data(dir: &Path) -> PathBuf {
    let data = dir.join("train.json");
    fs::copy("data/tiny/longlora/train.json", &data).unwrap();
    data
}

#[test]
fn a_finished_run_whose_data_changed_is_refused_naming_the_file_then_trained_anew() {
    let tmp = tempfile::tempdir().unwrap();
    let data = copy_of_the_training_data(tmp.path());
    let out = tmp.path().join("run");
    let first = run(&data, &out, &[]);
    assert!(first.status.success(), "{}", text(&first));
    let summary = fs::read_to_string(out.join("summary.json")).unwrap();
    assert!(
        summary.contains(&format!("\"{}\"", data.display())),
        "{summary}"
    );

    // Unchanged: reported, not trained.
    let again = run(&data, &out, &[]);
    assert!(
        text(&again).contains("trained 3 steps (resumed from step 3)"),
        "{}",
        text(&again)
    );

    // One more example: refused, the file named.
    let mut examples: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&data).unwrap()).unwrap();
    let extra = examples[0].clone();
    examples.as_array_mut().unwrap().push(extra);
    fs::write(&data, examples.to_string()).unwrap();
    let refused = run(&data, &out, &[]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains(&format!("{} changed", data.display()))
            && text(&refused).contains("--force"),
        "{}",
        text(&refused)
    );

    // --force: the old run is kept beside, the new one trained from step 0 on the new data.
    let anew = run(&data, &out, &["--force"]);
    assert!(anew.status.success(), "{}", text(&anew));
    assert!(text(&anew).contains("training anew"), "{}", text(&anew));
    assert!(tmp.path().join("run.superseded-1/summary.json").is_file());
    assert!(
        text(&anew).contains("trained 3 steps in"),
        "not resumed: {}",
        text(&anew)
    );
    let table = fs::read_to_string(tmp.path().join("runs.csv")).unwrap();
    assert_eq!(table.lines().count(), 3, "a row for each run:\n{table}");

    // Gone: refused, the file named.
    fs::remove_file(&data).unwrap();
    let gone = run(&data, &out, &[]);
    assert_eq!(gone.status.code(), Some(2), "{}", text(&gone));
    assert!(
        text(&gone).contains(&data.display().to_string()),
        "{}",
        text(&gone)
    );
}

#[test]
fn a_sweep_trains_anew_the_trials_whose_data_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = copy_of_the_training_data(tmp.path());
    let recipe = fs::canonicalize("recipes/tiny/longlora_sft.yaml").unwrap();
    let file = tmp.path().join("sweep.yaml");
    let spec = format!(
        "kind: sweep\nname: t\nrecipe: {}\nfixed:\n  training.max_steps: 3\n  data.train: {}\nparameters:\n  training.optimizer.lr:\n    values: [1.0e-3, 3.0e-3]\nmetric:\n  name: eval/loss\n  goal: minimize\n",
        recipe.display(),
        data.display()
    );
    fs::write(&file, spec).unwrap();
    let out = tmp.path().join("sweep");
    let sweep = || {
        let o = Command::new(env!("CARGO_BIN_EXE_runner"))
            .arg("sweep")
            .arg(&file)
            .arg("--out")
            .arg(&out)
            .args(["--device", "cpu", "--jobs", "1"])
            .env("RUNNER_CACHE_DIR", tmp.path().join("cache"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        text(&o)
    };
    assert!(sweep().contains("2 trials, 0 done earlier, 2 to run"));
    assert!(sweep().contains("2 done earlier, 0 to run"));
    fs::write(&data, fs::read_to_string(&data).unwrap() + "\n").unwrap();
    let third = sweep();
    assert!(
        third.contains(&format!(
            "trial 0: {} changed; training it anew",
            data.display()
        )) && third.contains("0 done earlier, 2 to run"),
        "{third}"
    );
    assert!(third.contains("trial 1 finished"), "{third}");
}

/// `runner report RECIPE` says when the recipe's files changed since its run was trained.
#[test]
fn a_report_of_a_recipe_says_its_run_was_trained_from_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = copy_of_the_training_data(tmp.path());
    let recipe = tmp.path().join("recipe.yaml");
    let base = fs::canonicalize("recipes/tiny/longlora_sft.yaml").unwrap();
    let yaml = format!(
        "extends: {}\noutput:\n  dir: {}/runs/{{name}}\ndata:\n  train: {}\ntraining:\n  max_steps: 2\n",
        base.display(),
        tmp.path().display(),
        data.display()
    );
    fs::write(&recipe, yaml).unwrap();
    let runner = |command: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_runner"))
            .arg(command)
            .arg(&recipe)
            .env("RUNNER_CACHE_DIR", tmp.path().join("cache"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        text(&o)
    };
    runner("run");
    assert!(!runner("report").contains("trained from other files"));
    fs::write(&data, fs::read_to_string(&data).unwrap() + "\n").unwrap();
    let report = runner("report");
    assert!(
        report.contains(&format!(
            "was trained from other files: {} changed",
            data.display()
        )),
        "{report}"
    );
}

//! Hostile values that reach a folder name or a generated shell script: each is refused where it
//! is written, and the one quoting function passes any text through a shell unexpanded.

use std::path::Path;
use std::process::Command;

use runner::config::safe::shell_quote;

/// Texts that would run something, or leave a folder, if they reached a script or path raw.
const HOSTILE: [&str; 7] = [
    "a\nb",
    "x'; touch PWNED; '",
    "$(touch PWNED)",
    "`touch PWNED`",
    "a;touch PWNED",
    "\"quoted\" name",
    "../../outside",
];

fn validate(file: &Path) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("validate")
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    (o.status.code().unwrap_or(-1), text)
}

fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

#[test]
fn hostile_names_and_slurm_values_are_refused_at_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = std::fs::canonicalize("recipes/tiny/longlora_sft.yaml").unwrap();
    for value in HOSTILE {
        // A recipe's name names its run folder.
        let file = dir.path().join("recipe.yaml");
        std::fs::write(
            &file,
            format!(
                "extends: {}\nname: {}\n",
                recipe.display(),
                yaml_string(value)
            ),
        )
        .unwrap();
        let (code, text) = validate(&file);
        assert_eq!(code, 1, "{value:?}: {text}");
        assert!(
            text.contains("recipe.yaml:2:7: error: the name names the run's folder"),
            "{value:?}: {text}"
        );

        // A sweep's name, and each Slurm value the job script holds.
        for (line, key) in [(2, "name"), (8, "partition"), (9, "time"), (10, "mem")] {
            let mut fields = [
                ("name", "s".to_string()),
                ("partition", "debug".to_string()),
                ("time", "00:10:00".to_string()),
                ("mem", "1G".to_string()),
            ];
            fields.iter_mut().find(|(k, _)| *k == key).unwrap().1 = yaml_string(value);
            let [name, partition, time, mem] = fields.map(|(_, v)| v);
            let sweep = dir.path().join("sweep.yaml");
            std::fs::write(
                &sweep,
                format!(
                    "kind: sweep\nname: {name}\nrecipe: {}\nparameters:\n  training.optimizer.lr:\n    values: [1.0e-3]\nslurm:\n  partition: {partition}\n  time: {time}\n  mem: {mem}\nmetric:\n  name: eval/loss\n  goal: minimize\n",
                    recipe.display()
                ),
            )
            .unwrap();
            let (code, text) = validate(&sweep);
            assert_eq!(code, 1, "{key} = {value:?}: {text}");
            let column = if key == "name" { 7 } else { key.len() + 5 };
            assert!(
                text.contains(&format!("sweep.yaml:{line}:{column}: error:")),
                "{key} = {value:?}: {text}"
            );
        }
    }
    assert!(!Path::new("PWNED").exists());
}

#[test]
fn quoted_words_reach_a_shell_unexpanded() {
    let dir = tempfile::tempdir().unwrap();
    for value in HOSTILE
        .iter()
        .chain(&["", "'", "''\\'", "a b\tc", "$HOME", "~"])
    {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote(value)))
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{value:?}");
        assert_eq!(String::from_utf8_lossy(&o.stdout), *value);
    }
    assert!(!dir.path().join("PWNED").exists(), "nothing ran");
}

/// 100,000 unknown keys: the first 100 are reported with their hints, the rest counted, and
/// the check stays linear (0.5 s with the release binary; debug builds are slower). Without
/// `kind` the file is a fragment, and parts that cannot fit better are not checked at all
/// (0.7 s; 3.9 s when every part was checked).
#[test]
fn a_file_of_a_hundred_thousand_unknown_keys_is_checked_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let keys: String = (0..100_000).map(|i| format!("k{i}: {i}\n")).collect();
    for (name, kind, first) in [
        ("recipe.yaml", "kind: longlora_sft\n", 2),
        ("fragment.yaml", "", 1),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, format!("{kind}{keys}")).unwrap();
        let started = std::time::Instant::now();
        let (code, text) = validate(&file);
        assert!(
            started.elapsed().as_secs_f64() < 15.0,
            "{name}: {:?}",
            started.elapsed()
        );
        assert_eq!(code, 1);
        assert!(
            text.contains(&format!(
                "{name}:{first}:1: error: unknown key `k0` at the top level"
            )),
            "{text}"
        );
        assert!(text.contains("more problems like those above"), "{text}");
    }
}

/// A sweep file with `body` after its kind, name and recipe: the exit code and output of
/// `runner validate`.
fn validate_sweep(body: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let recipe = std::fs::canonicalize("recipes/tiny/longlora_sft.yaml").unwrap();
    let file = dir.path().join("sweep.yaml");
    std::fs::write(
        &file,
        format!(
            "kind: sweep\nname: s\nrecipe: {}\nmetric:\n  name: eval/loss\n  goal: minimize\n{body}",
            recipe.display()
        ),
    )
    .unwrap();
    validate(&file)
}

#[test]
fn sweeps_without_bounds_or_with_repeated_axes_are_refused_at_their_line() {
    let grid = |n: usize| {
        let values: Vec<String> = (0..n).map(|i| format!("{}.0e-4", i + 1)).collect();
        format!(
            "parameters:\n  training.optimizer.lr:\n    values: [{}]\n",
            values.join(", ")
        )
    };
    let cases: [(String, &str); 7] = [
        (
            "method: random\ncount: 0\nparameters:\n  training.optimizer.lr:\n    values: [1.0e-3]\n".into(),
            "sweep.yaml:8:8: error:",
        ),
        (grid(2) + "seeds: []\n", "sweep.yaml:10:8: error:"),
        (
            "parameters:\n  training.optimizer.lr:\n    values: [1.0e-3, 2.0e-3, 1.0e-3]\n".into(),
            "lists 0.001 twice",
        ),
        (
            grid(2) + "paired:\n  - training.optimizer.lr: [1.0e-3]\n    training.seed: [1]\n",
            "`training.optimizer.lr` is both a paired key and a parameter",
        ),
        (
            grid(100) + "seeds: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]\n",
            "the sweep has 1100 trials, more than 1000",
        ),
        (
            "method: random\ncount: 10000000\nparameters:\n  training.optimizer.lr:\n    values: [1.0e-3]\n".into(),
            "sweep.yaml:8:8: error: the sweep has 10000000 trials",
        ),
        (
            grid(100) + "seeds: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]\nmax_trials: 1000\n",
            "more than its max_trials 1000",
        ),
    ];
    for (body, expected) in &cases {
        let started = std::time::Instant::now();
        let (code, text) = validate_sweep(body);
        assert_eq!(code, 1, "{body}: {text}");
        assert!(
            text.contains(expected),
            "{body}\nexpected {expected:?} in:\n{text}"
        );
        assert!(
            started.elapsed().as_secs() < 10,
            "{body}: {:?}",
            started.elapsed()
        );
    }
    let (code, text) = validate_sweep(
        &(grid(100) + "seeds: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]\nmax_trials: 1100\n"),
    );
    assert_eq!(code, 0, "{text}");
}

#[test]
fn an_empty_or_comment_only_file_is_not_a_valid_fragment() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("empty.yaml", ""), ("comments.yaml", "# nothing here\n")] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let (code, out) = validate(&file);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains(&format!("{name}:1:1: error: the file holds no settings")),
            "{out}"
        );
    }
}

#[test]
fn invalid_utf8_and_out_of_range_lengths_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("latin1.yaml");
    std::fs::write(&file, b"kind: longlora_sft\nname: caf\xe9\n").unwrap();
    let (code, text) = validate(&file);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("latin1.yaml:2:10: error: byte 0xe9 (offset 28) is not UTF-8"),
        "{text}"
    );

    let o = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args([
            "plan",
            "recipes/tiny/iag_distill.yaml",
            "evaluation.max_new_tokens=4294967296",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("`evaluation.max_new_tokens` must be at most 65536"),
        "{text}"
    );
}

#[test]
fn a_syntax_error_is_the_only_error_of_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tab.yaml");
    std::fs::write(
        &file,
        "kind: longlora_sft\nname: t\ntraining:\n\tmax_steps: 3\n",
    )
    .unwrap();
    let (code, text) = validate(&file);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("tab.yaml:4:"), "{text}");
    assert!(text.contains("(1 errors,"), "{text}");
}

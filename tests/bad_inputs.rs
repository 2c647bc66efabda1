//! A table of bad inputs: each asserts the exit code, the message, and the exact line and
//! column of the diagnostic.

use std::fs;
use std::path::{Path, PathBuf};

use runner::commands::{self, Format};

/// A valid recipe; cases edit its lines (1-based) to break it.
const BASE: &str = "\
kind: longlora_sft
name: t
model:
  arch:
    family: llama
    vocab_size: 512
    hidden_size: 64
    intermediate_size: 128
    num_hidden_layers: 2
    num_attention_heads: 4
    num_key_value_heads: 2
    max_position_embeddings: 128
  tokenizer: tokenizer.json
data:
  format: instruction
  train: train.json
  max_length: 256
training:
  max_steps: 100
  micro_batch_size: 2
  optimizer:
    lr: 1.0e-3
  schedule:
    type: linear
    warmup_steps: 10
  adapter:
    type: lora
    rank: 8
    alpha: 16
    targets: [q_proj, v_proj]
    also_train: [norm]
method:
  shifted_sparse_attention: true
";

/// Where the diagnostic must point: a line and column of the recipe, of another file of the
/// case, or a column of an override.
enum At {
    Recipe(usize, usize),
    File(&'static str, usize, usize),
    Override(usize, usize),
}

struct Case {
    name: &'static str,
    /// (line, replacement); a replacement may hold several lines, or none (deletes the line).
    edits: &'static [(usize, &'static str)],
    /// Other files beside the recipe: (name, content).
    files: &'static [(&'static str, &'static str)],
    overrides: &'static [&'static str],
    at: At,
    message: &'static str,
    hint: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case { name: "negative LoRA alpha", edits: &[(29, "    alpha: -16")], files: &[], overrides: &[], at: At::Recipe(29, 12), message: "alpha -16 is not positive", hint: Some("use a positive alpha") },
    Case { name: "zero steps", edits: &[(19, "  max_steps: 0")], files: &[], overrides: &[], at: At::Recipe(19, 14), message: "`training.max_steps` must be at least 1, found 0", hint: None },
    Case { name: "typo at the top level", edits: &[(2, "nmae: t")], files: &[], overrides: &[], at: At::Recipe(2, 1), message: "unknown key `nmae` at the top level", hint: Some("did you mean `name`?") },
    Case { name: "typo at depth 2", edits: &[(17, "  max_lenght: 256")], files: &[], overrides: &[], at: At::Recipe(17, 3), message: "unknown key `max_lenght` in `data`", hint: Some("did you mean `max_length`?") },
    Case { name: "typo at depth 3", edits: &[(22, "    lrr: 1.0e-3")], files: &[], overrides: &[], at: At::Recipe(22, 5), message: "unknown key `lrr` in `training.optimizer`", hint: Some("did you mean `lr`?") },
    Case { name: "typo at depth 3 in a model", edits: &[(7, "    hiden_size: 64")], files: &[], overrides: &[], at: At::Recipe(7, 5), message: "unknown key `hiden_size` in `model.arch`", hint: Some("did you mean `hidden_size`?") },
    Case { name: "typo inside a tagged adapter", edits: &[(28, "    rnak: 8")], files: &[], overrides: &[], at: At::Recipe(28, 5), message: "unknown key `rnak` in `training.adapter`", hint: Some("did you mean `rank`?") },
    Case { name: "key at the wrong depth", edits: &[(19, "  max_steps: 100\n  lr: 0.1")], files: &[], overrides: &[], at: At::Recipe(20, 3), message: "unknown key `lr` in `training`", hint: Some("`lr` belongs under `training.optimizer`") },
    Case { name: "text for a number", edits: &[(22, "    lr: fast")], files: &[], overrides: &[], at: At::Recipe(22, 9), message: "`training.optimizer.lr` expects a number, found string \"fast\"", hint: None },
    Case { name: "fraction for an integer", edits: &[(20, "  micro_batch_size: 2.5")], files: &[], overrides: &[], at: At::Recipe(20, 21), message: "`training.micro_batch_size` expects an integer, found number 2.5", hint: None },
    Case { name: "yes for a boolean", edits: &[(33, "  shifted_sparse_attention: yes")], files: &[], overrides: &[], at: At::Recipe(33, 29), message: "expects a boolean, found string \"yes\"", hint: Some("YAML 1.2 reads `yes` as a string") },
    Case { name: "number for a path", edits: &[(16, "  train: -3")], files: &[], overrides: &[], at: At::Recipe(16, 10), message: "`data.train` expects a file path, found integer -3", hint: Some("quote it ('-3') if a file has that name") },
    Case { name: "boolean for a path", edits: &[(16, "  train: train.json\n  validation: true")], files: &[], overrides: &[], at: At::Recipe(17, 15), message: "`data.validation` expects a file path, found boolean true", hint: Some("quote it ('true')") },
    Case { name: "mapping for a scalar", edits: &[(16, "  train: {path: a.json}")], files: &[], overrides: &[], at: At::Recipe(16, 10), message: "`data.train` expects a string, found a mapping", hint: None },
    Case { name: "misspelt enum value", edits: &[(15, "  format: instrution")], files: &[], overrides: &[], at: At::Recipe(15, 11), message: "`data.format` must be one of instruction, pretrain_text", hint: Some("did you mean `instruction`?") },
    Case { name: "misspelt adapter type", edits: &[(27, "    type: lroa")], files: &[], overrides: &[], at: At::Recipe(27, 11), message: "`training.adapter.type` must be one of full, lora, hyperlora", hint: Some("did you mean `lora`?") },
    Case { name: "misspelt kind", edits: &[(1, "kind: longlora_stf")], files: &[], overrides: &[], at: At::Recipe(1, 7), message: "`kind` must be one of", hint: Some("did you mean `longlora_sft`?") },
    Case { name: "missing required key", edits: &[(20, "")], files: &[], overrides: &[], at: At::Recipe(18, 1), message: "missing required key `training.micro_batch_size`", hint: Some("add `micro_batch_size:` under `training`") },
    Case { name: "negative count", edits: &[(19, "  max_steps: -5")], files: &[], overrides: &[], at: At::Recipe(19, 14), message: "`training.max_steps` must be at least 1, found -5", hint: None },
    Case { name: "three betas", edits: &[(22, "    lr: 1.0e-3\n    betas: [0.9, 0.95, 0.99]")], files: &[], overrides: &[], at: At::Recipe(23, 12), message: "`training.optimizer.betas` takes exactly 2 items, found 3", hint: None },
    Case { name: "unclosed list", edits: &[(30, "    targets: [q_proj, v_proj")], files: &[], overrides: &[], at: At::Recipe(31, 15), message: "YAML syntax error: illegal placement of ':' indicator", hint: None },
    Case { name: "tab indenting the line below a value", edits: &[(20, "\tmicro_batch_size: 2")], files: &[], overrides: &[], at: At::Recipe(20, 1), message: "YAML syntax error: while scanning a plain scalar, found a tab", hint: Some("YAML indents with spaces only") },
    Case { name: "tab indenting a section's first key", edits: &[(19, "\tmax_steps: 100")], files: &[], overrides: &[], at: At::Recipe(19, 1), message: "YAML syntax error: tabs disallowed", hint: Some("replace this tab with spaces") },
    Case { name: "bad indentation", edits: &[(7, "     hidden_size: 64")], files: &[], overrides: &[], at: At::Recipe(7, 17), message: "YAML syntax error: mapping values are not allowed", hint: None },
    Case { name: "duplicate key", edits: &[(8, "    hidden_size: 32")], files: &[], overrides: &[], at: At::Recipe(8, 5), message: "duplicate key `hidden_size`", hint: None },
    Case { name: "override of an unknown key", edits: &[], files: &[], overrides: &["training.optimizer.lrr=3e-4"], at: At::Override(1, 20), message: "unknown key `lrr` in `training.optimizer`", hint: Some("did you mean `lr`?") },
    Case { name: "override with a misspelt section", edits: &[], files: &[], overrides: &["max_steps=5", "trainig.max_steps=5"], at: At::Override(2, 1), message: "unknown key `trainig` at the top level", hint: Some("did you mean `training`?") },
    Case { name: "override index past a list's end", edits: &[], files: &[], overrides: &["training.adapter.targets.9=o_proj"], at: At::Override(1, 26), message: "`training.adapter.targets` has 2 item(s); index 9 is past its end", hint: Some("its indices run 0 to 1; to set the whole list write training.adapter.targets=[a, b]") },
    Case { name: "override index in range", edits: &[], files: &[], overrides: &["training.adapter.targets.1=k_proj", "training.adapter.targets.x=o_proj"], at: At::Override(2, 26), message: "`training.adapter.targets` is a list; `x` is not an index of it", hint: None },
    Case { name: "override of the wrong type", edits: &[], files: &[], overrides: &["training.max_steps=many"], at: At::Override(1, 20), message: "`training.max_steps` expects an integer, found string \"many\"", hint: None },
    Case { name: "override without =", edits: &[], files: &[], overrides: &["training.max_steps"], at: At::Override(1, 1), message: "has no `=`", hint: Some("KEY.PATH=VALUE") },
    Case { name: "include cycle", edits: &[(2, "name: t\nextends: a.yaml")], files: &[("a.yaml", "extends: b.yaml\n"), ("b.yaml", "extends: a.yaml\n")], overrides: &[], at: At::File("b.yaml", 1, 10), message: "include cycle", hint: None },
    Case { name: "extends a missing file", edits: &[(4, "  arch:\n    extends: models/nope.yaml")], files: &[], overrides: &[], at: At::Recipe(5, 14), message: "cannot find `models/nope.yaml` to extend", hint: Some("looked for") },
    Case { name: "typo inside an extended file", edits: &[(4, "  arch:\n    extends: tiny.yaml"), (5, ""), (6, ""), (7, ""), (8, ""), (9, ""), (10, ""), (11, ""), (12, "")], files: &[("tiny.yaml", "family: llama\nvocab_size: 512\nhidden_size: 64\nintermediate_size: 128\nnum_hidden_layers: 2\nnum_attention_heads: 4\nmax_position_embedings: 128\n")], overrides: &[], at: At::File("tiny.yaml", 7, 1), message: "unknown key `max_position_embedings` in `model.arch`", hint: Some("did you mean `max_position_embeddings`?") },
    Case { name: "heads do not divide the width", edits: &[(10, "    num_attention_heads: 6")], files: &[], overrides: &[], at: At::Recipe(10, 26), message: "6 attention heads do not divide the width 64", hint: None },
    Case { name: "S2 groups do not divide the length", edits: &[(17, "  max_length: 250")], files: &[], overrides: &[], at: At::Recipe(17, 15), message: "S²-Attn splits 250 tokens into groups of 62", hint: None },
    Case { name: "LoRA target not in the model", edits: &[(30, "    targets: [q_proj, vproj]")], files: &[], overrides: &[], at: At::Recipe(30, 23), message: "LoRA target `vproj` matches no module", hint: Some("did you mean `v_proj`?") },
    Case { name: "warmup by steps and ratio", edits: &[(25, "    warmup_steps: 10\n    warmup_ratio: 0.1")], files: &[], overrides: &[], at: At::Recipe(25, 19), message: "set warmup by steps or by ratio, not both", hint: None },
    Case { name: "RoPE factor too small", edits: &[(12, "    max_position_embeddings: 128\n  rope_scaling: {type: linear, factor: 1.0}")], files: &[], overrides: &[], at: At::Recipe(13, 40), message: "RoPE factor 1 covers 128 positions, fewer than data.max_length 256", hint: Some("use factor 2") },
    Case { name: "kv heads do not divide heads", edits: &[(11, "    num_key_value_heads: 3")], files: &[], overrides: &[], at: At::Recipe(11, 26), message: "3 key/value heads do not divide 4 attention heads", hint: None },
    Case { name: "trainable pattern matching nothing", edits: &[(31, "    also_train: [embedding]")], files: &[], overrides: &[], at: At::Recipe(31, 18), message: "`embedding` matches no parameter name", hint: None },
    Case { name: "YAML merge key", edits: &[(14, "data:\n  <<: {format: instruction}")], files: &[], overrides: &[], at: At::Recipe(15, 3), message: "merge keys (`<<`) are not supported", hint: Some("use `extends:`") },
];

/// Settings that cannot make a run wrong: a warning at their place, exit 0, and a failure
/// under `validate --strict`.
const WARNINGS: &[Case] = &[
    Case {
        name: "warmup as long as training",
        edits: &[(25, "    warmup_steps: 100")],
        files: &[],
        overrides: &[],
        at: At::Recipe(25, 19),
        message: "warmup (100 steps) is not shorter than training (100 steps)",
        hint: Some("fine for a smoke run"),
    },
    Case {
        name: "evaluation after the last step",
        edits: &[(
            33,
            "  shifted_sparse_attention: true\nevaluation:\n  every_steps: 500",
        )],
        files: &[],
        overrides: &[],
        at: At::Recipe(35, 16),
        message: "evaluation every 500 steps never happens in a 100-step run",
        hint: Some("the end of training is always evaluated"),
    },
    Case {
        name: "checkpoints after the last step",
        edits: &[(
            33,
            "  shifted_sparse_attention: true\noutput:\n  checkpoint_every_steps: 500",
        )],
        files: &[],
        overrides: &[],
        at: At::Recipe(35, 27),
        message: "checkpoints every 500 steps never happen in a 100-step run",
        hint: Some("the final checkpoint is always written"),
    },
    Case {
        name: "a smoke run's short training",
        edits: &[],
        files: &[],
        overrides: &["training.max_steps=5"],
        at: At::Recipe(25, 19),
        message: "warmup (10 steps) is not shorter than training (5 steps)",
        hint: None,
    },
];

/// Where `case` wanted its diagnostic of `severity` in `out`: None when it is there (with its
/// hint), else what went wrong.
fn missing(dir: &Path, recipe: &Path, case: &Case, severity: &str, out: &str) -> Option<String> {
    let prefix = match case.at {
        At::Recipe(line, col) => format!("{}:{line}:{col}: {severity}: ", recipe.display()),
        At::File(name, line, col) => {
            format!("{}:{line}:{col}: {severity}: ", dir.join(name).display())
        }
        At::Override(index, col) => format!("<override {index}>:1:{col}: {severity}: "),
    };
    let found = out
        .split('\n')
        .position(|l| l.starts_with(&prefix) && l.contains(case.message));
    let hint_ok = match (found, case.hint) {
        (Some(i), Some(hint)) => out
            .split('\n')
            .skip(i + 1)
            .take_while(|l| l.starts_with("  "))
            .any(|l| l.starts_with("  hint: ") && l.contains(hint)),
        (found, None) => found.is_some(),
        (None, _) => false,
    };
    (found.is_none() || !hint_ok).then(|| {
        format!(
            "case `{}`: wanted `{prefix}…{}` (hint {:?}), got:\n{out}",
            case.name, case.message, case.hint
        )
    })
}

fn write_case(dir: &Path, case: &Case) -> PathBuf {
    let mut lines: Vec<String> = BASE.lines().map(String::from).collect();
    for (line, text) in case.edits {
        lines[line - 1] = text.to_string();
    }
    let text: Vec<&str> = lines
        .iter()
        .filter(|l| !l.is_empty())
        .map(String::as_str)
        .collect();
    let recipe = dir.join("recipe.yaml");
    fs::write(&recipe, text.join("\n") + "\n").unwrap();
    for (name, content) in case.files {
        fs::write(dir.join(name), content).unwrap();
    }
    recipe
}

#[test]
fn the_base_recipe_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("recipe.yaml");
    fs::write(&recipe, BASE).unwrap();
    let mut out = Vec::new();
    let code = commands::plan::run(&recipe, &[], Format::Text, &mut out).unwrap();
    assert_eq!(code, commands::OK, "{}", String::from_utf8_lossy(&out));
}

#[test]
fn each_bad_input_is_reported_at_its_line_and_column() {
    assert!(CASES.len() >= 25);
    let mut failures = Vec::new();
    for case in CASES {
        let dir = tempfile::tempdir().unwrap();
        let recipe = write_case(dir.path(), case);
        let overrides: Vec<String> = case.overrides.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        let code = commands::plan::run(&recipe, &overrides, Format::Text, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        if code != commands::INVALID {
            failures.push(format!("case `{}`: exit {code}:\n{out}", case.name));
        }
        failures.extend(missing(dir.path(), &recipe, case, "error", &out));
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn each_warning_is_reported_at_its_line_and_column_and_fails_only_under_strict() {
    let mut failures = Vec::new();
    for case in WARNINGS {
        let dir = tempfile::tempdir().unwrap();
        let recipe = write_case(dir.path(), case);
        let overrides: Vec<String> = case.overrides.iter().map(|s| s.to_string()).collect();
        // Overrides reach the checks through `plan`; a file alone through `validate`.
        for strict in [false, true] {
            let (code, out) = match overrides.is_empty() {
                true => {
                    let mut out = Vec::new();
                    let paths = [recipe.clone()];
                    let code = commands::validate::run(&paths, Format::Text, strict, &mut out);
                    (code.unwrap(), String::from_utf8(out).unwrap())
                }
                false if strict => continue,
                false => {
                    let plan = runner::plan::resolve(&recipe, &overrides).unwrap();
                    let out: Vec<String> = plan.warnings.iter().map(|w| w.to_string()).collect();
                    (commands::OK, out.join("\n"))
                }
            };
            let wanted = if strict {
                commands::INVALID
            } else {
                commands::OK
            };
            if code != wanted {
                failures.push(format!(
                    "case `{}` (strict {strict}): exit {code}:\n{out}",
                    case.name
                ));
            }
            failures.extend(missing(dir.path(), &recipe, case, "warning", &out));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `runner plan` of the base recipe with `edits` and `overrides`: its exit code and output.
fn plan_of_edits(edits: &'static [(usize, &'static str)], overrides: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let case = Case {
        name: "edits",
        edits,
        files: &[],
        overrides: &[],
        at: At::Recipe(0, 0),
        message: "",
        hint: None,
    };
    let recipe = write_case(dir.path(), &case);
    plan_with(recipe.to_str().unwrap(), overrides)
}

/// `tpye:` for `type:` in each section that has a `type` (the tagged ones, adapter and
/// connector, pick their branch by it): the did-you-mean at the typo's own line and column, and
/// the section still checked as the branch the value names, so a second typo comes out too.
#[test]
fn a_misspelt_tag_key_is_reported_at_its_line_in_every_tagged_section() {
    let cases = [
        ("recipes/tiny/longlora_sft.yaml", 28, "training.adapter"),
        ("recipes/tiny/longlora_sft.yaml", 25, "training.schedule"),
        (
            "recipes/tiny/qa_expert_qlora.yaml",
            14,
            "model.rope_scaling",
        ),
        (
            "recipes/tiny/qa_expert_qlora.yaml",
            44,
            "training.adapter.quantize",
        ),
        ("recipes/tiny/coe_multitask.yaml", 17, "model.connector"),
        ("recipes/tiny/coe_qwen_vl.yaml", 25, "model.connector"),
        ("recipes/tiny/coe_qwen_vl.yaml", 52, "training.adapter"),
    ];
    // Under target/ (relative, so `extends:` finds configs/ as from the recipe's folder), where
    // no test that validates recipes/ sees it.
    let dir = Path::new("target/tag-typo-tests");
    fs::create_dir_all(dir).unwrap();
    for (i, (recipe, line, section)) in cases.into_iter().enumerate() {
        let text = fs::read_to_string(recipe).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        assert!(
            lines[line - 1].trim_start().starts_with("type:"),
            "{recipe}:{line}"
        );
        let col = lines[line - 1].find("type").unwrap() + 1;
        lines[line - 1] = lines[line - 1].replacen("type:", "tpye:", 1);
        // Beside the tag, a second typo in the same section.
        let indent = " ".repeat(col - 1);
        lines.insert(line, format!("{indent}bogus_key: 1"));
        let file = dir.join(format!("case{i}.yaml"));
        fs::write(&file, lines.join("\n") + "\n").unwrap();
        let mut out = Vec::new();
        let code =
            commands::validate::run(std::slice::from_ref(&file), Format::Text, false, &mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(code.unwrap(), commands::INVALID, "{out}");
        let f = file.display();
        let wanted = format!("{f}:{line}:{col}: error: unknown key `tpye` in `{section}`\n  hint: did you mean `type`?");
        assert!(
            out.contains(&wanted),
            "{recipe}:{line}: wanted\n{wanted}\ngot\n{out}"
        );
        let second = format!(
            "{f}:{}:{col}: error: unknown key `bogus_key` in `{section}`",
            line + 1
        );
        assert!(
            out.contains(&second),
            "{recipe}:{line}: wanted\n{second}\ngot\n{out}"
        );
        assert!(!out.contains("missing required key"), "{out}");
    }
}

/// A misspelt tag value (`type: lroa`) is reported with its did-you-mean, and the section is
/// still checked as the branch it likely meant, so a typo beside it comes out in the same pass.
#[test]
fn a_misspelt_tag_value_still_checks_the_branch_it_meant() {
    let (code, out) = plan_of_edits(&[(27, "    type: lroa"), (28, "    rnak: 8")], &[]);
    assert_eq!(code, commands::INVALID);
    for place in [
        ":27:11: error: `training.adapter.type` must be one of full, lora, hyperlora",
        ":28:5: error: unknown key `rnak` in `training.adapter`",
    ] {
        assert!(out.contains(place), "missing `{place}` in:\n{out}");
    }
}

#[test]
fn all_errors_come_out_in_one_pass() {
    let (code, out) = plan_of_edits(
        &[
            (2, "nmae: t"),
            (15, "  format: instrution"),
            (22, "    lr: fast"),
        ],
        &["training.max_steps=x"],
    );
    assert_eq!(code, commands::INVALID);
    for place in [
        ":2:1: error: unknown key `nmae`",
        ":1:1: error: missing required key `name`",
        ":15:11: error: `data.format`",
        ":22:9: error: `training.optimizer.lr`",
        "<override 1>:1:20: error:",
    ] {
        assert!(out.contains(place), "missing `{place}` in:\n{out}");
    }
    assert!(out.contains("5 errors"), "{out}");
}

#[test]
fn semantic_errors_point_into_extended_files() {
    // The student's vocabulary is set in configs/models/t5-tiny-iag.yaml, line 5.
    let mut out = Vec::new();
    let code = commands::plan::run(
        Path::new("recipes/tiny/iag_distill.yaml"),
        &["model.teacher.arch.vocab_size=1000".into()],
        Format::Text,
        &mut out,
    )
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(code, commands::INVALID);
    assert!(out.starts_with("configs/models/t5-tiny-iag.yaml:5:13: error: teacher and student vocabularies differ (1000 and 1024)"), "{out}");
    assert!(
        out.contains("note: <override 1>:1:31: `model.teacher.arch.vocab_size` is set here"),
        "{out}"
    );
}

#[test]
fn sweep_keys_and_values_are_checked_against_the_recipe() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("recipe.yaml"), BASE).unwrap();
    let sweep = dir.path().join("sweep.yaml");
    let text = "kind: sweep\nname: s\nrecipe: recipe.yaml\nparameters:\n  training.optimizer.lrr:\n    values: [1, 2]\n  training.max_steps:\n    values: [10, many]\nmetric:\n  name: eval/los\n  goal: minimize\n";
    fs::write(&sweep, text).unwrap();
    let mut out = Vec::new();
    let code = commands::validate::run(std::slice::from_ref(&sweep), Format::Text, false, &mut out)
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(code, commands::INVALID, "{out}");
    let s = sweep.display();
    assert!(
        out.contains(&format!(
            "{s}:5:3: error: `training.optimizer.lrr` is not a key of the recipe"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{s}:8:18: error: training.max_steps = \"many\" makes an invalid trial"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{s}:10:9: error: a longlora_sft run logs no metric `eval/los`"
        )),
        "{out}"
    );
    assert!(out.contains("did you mean `eval/loss`?"), "{out}");
}

/// `runner plan RECIPE OVERRIDES…`: exit code and output.
fn plan_with(recipe: &str, overrides: &[&str]) -> (i32, String) {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let mut out = Vec::new();
    let code = commands::plan::run(Path::new(recipe), &overrides, Format::Text, &mut out).unwrap();
    (code, String::from_utf8(out).unwrap())
}

#[test]
fn a_recipe_cannot_be_its_own_teacher() {
    let (code, out) = plan_with(
        "recipes/tiny/iag_distill.yaml",
        &[
            "model.teacher.path=null",
            "model.teacher.recipe=recipes/tiny/iag_distill.yaml",
        ],
    );
    assert_eq!(code, commands::INVALID);
    assert!(
        out.starts_with(
            "<override 2>:1:22: error: model.teacher.recipe: recipe `recipes/tiny/iag_distill.yaml` leads back to this recipe"
        ),
        "{out}"
    );
}

#[test]
fn early_stopping_on_a_metric_never_measured_is_refused() {
    let (code, out) = plan_with(
        "recipes/tiny/longlora_sft.yaml",
        &[
            "evaluation.best_metric=passkey_accuracy",
            "evaluation.passkey=null",
            "training.early_stopping={patience: 2}",
        ],
    );
    assert_eq!(code, commands::INVALID);
    assert!(
        out.starts_with("<override 1>:1:24: error: the best metric is never measured: it needs a passkey evaluation"),
        "{out}"
    );
    assert!(out.contains("hint: set evaluation.passkey"), "{out}");
}

/// Rules a run used to find only when it started (in `methods/`) are the plan's now: each
/// fails `runner plan` (and so `runner validate`) at the key it names.
#[test]
fn rules_once_found_only_at_run_time_are_reported_by_the_plan() {
    let cases: [(&str, &[&str], &str); 7] = [
        (
            "recipes/tiny/longlora_sft.yaml",
            &["model.path=null", "model.tokenizer=null"],
            "a randomly initialised model needs a tokenizer.json",
        ),
        (
            "recipes/tiny/iag_distill.yaml",
            &[
                "model.teacher.tokenizer=null",
                "model.student.tokenizer=null",
            ],
            "a randomly initialised student needs a tokenizer.json",
        ),
        (
            "recipes/tiny/coe_multitask.yaml",
            &["model.path=null", "model.tokenizer=null"],
            "a model built from parts needs a tokenizer.json",
        ),
        (
            "recipes/tiny/coe_multitask.yaml",
            &[
                "model.path=tests/fixtures/models/qwen-vl",
                "model.vision.path=elsewhere",
            ],
            "model.path is a whole Qwen-VL folder, which already holds the vision tower",
        ),
        (
            "recipes/tiny/coe_multitask.yaml",
            &[
                "training.adapter.rank=4",
                "training.adapter.targets=[q_proj]",
                "training.adapter.type=hyperlora",
            ],
            "hyperlora is IAG's T5 adapter; coe_multitask trains lora or full",
        ),
        (
            "recipes/tiny/coe_dataengine.yaml",
            &[
                "model.path=null",
                "data.category_weights=recipes/tiny/longlora_sft.yaml",
            ],
            "cannot serve: its run leaves no error rates (error_rates.json)",
        ),
        (
            "recipes/tiny/iag_distill.yaml",
            &[
                "model.teacher.path=null",
                "model.teacher.recipe=recipes/tiny/longlora_sft.yaml",
            ],
            "cannot serve: its run leaves no trained teacher (teacher/)",
        ),
    ];
    for (recipe, overrides, message) in cases {
        let (code, out) = plan_with(recipe, overrides);
        assert_eq!(code, commands::INVALID, "{recipe} {overrides:?}: {out}");
        // Located at the value of the override that broke the rule (the last).
        let (key, _) = overrides.last().unwrap().split_once('=').unwrap();
        let at = format!(
            "<override {}>:1:{}: error: ",
            overrides.len(),
            key.len() + 2
        );
        let line = out
            .lines()
            .find(|l| l.contains(message))
            .unwrap_or_else(|| panic!("{recipe} {overrides:?}: no `{message}` in\n{out}"));
        assert!(
            line.starts_with(&at),
            "{recipe} {overrides:?}: wanted {at}…, got {line}"
        );
    }
}

//! `runner report`: the paper tables (`results/papers/*.csv`) hold the reference's numbers,
//! runs are matched to their rows, and the command works on a real run directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use runner::commands::report::papers::{self, Comparison, IagRow, LongLoraRow, Match, Papers};
use serde_json::{json, Value};

fn runner(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(args)
        .output()
        .expect("the runner binary runs")
}

fn stdout(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ppl(rows: &[LongLoraRow], size: &str, train: u64, config: &str, eval: u64) -> Option<f64> {
    let matching: Vec<&LongLoraRow> = rows
        .iter()
        .filter(|r| {
            r.model_size == size
                && r.train_context == train
                && r.config == config
                && r.eval_context == eval
        })
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "{size} {train} {config} {eval}: one row expected"
    );
    matching[0].perplexity.as_ref().map(|p| p.value)
}

fn em<'a>(
    rows: &'a [IagRow],
    model: &str,
    method: &str,
    setting: &str,
    dataset: &str,
) -> &'a IagRow {
    let matching: Vec<&IagRow> = rows
        .iter()
        .filter(|r| {
            r.model == model && r.method == method && r.setting == setting && r.dataset == dataset
        })
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "{model} {method} {setting} {dataset}: one row expected"
    );
    matching[0]
}

#[test]
#[allow(clippy::approx_constant)] // 3.14 is a perplexity, not π
fn paper_tables_hold_the_reference_numbers() {
    let p = Papers::load(Path::new("results/papers")).unwrap();
    assert_eq!(p, Papers::builtin().unwrap(), "the binary embeds the files");
    assert_eq!(p.iag_table1.len(), 81); // 9 settings × 3 models × 3 datasets
    assert_eq!(p.longlora_table3.len(), 55); // (7 + 4 rows) × 5 eval contexts
    assert_eq!(p.longlora_table14.len(), 15);

    let t3 = &p.longlora_table3;
    for (eval, want) in [(2048, 3.15), (4096, 2.86), (8192, 2.68)] {
        assert_eq!(ppl(t3, "7B", 8192, "S²-Attn", eval), Some(want));
    }
    assert_eq!(ppl(t3, "7B", 8192, "S²-Attn", 16384), None);
    assert_eq!(ppl(t3, "7B", 8192, "full-FT, full attn", 2048), Some(3.14));
    assert_eq!(ppl(t3, "7B", 8192, "S²-Attn + LoRA+", 8192), Some(2.72));
    assert_eq!(ppl(t3, "7B", 32768, "S² + LoRA+", 32768), Some(2.50));
    assert_eq!(ppl(t3, "7B", 16384, "S²", 16384), Some(2.55));
    assert_eq!(ppl(t3, "13B", 32768, "S² + LoRA+", 32768), Some(2.32));
    assert_eq!(ppl(t3, "13B", 8192, "full-FT", 8192), Some(2.53));
    let t14 = &p.longlora_table14;
    assert_eq!(ppl(t14, "7B", 8192, "S² + LoRA+", 2048), Some(7.70));
    assert_eq!(ppl(t14, "7B", 32768, "S² + LoRA+", 32768), Some(7.22));

    let iag = &p.iag_table1;
    let r = em(iag, "Base", "IMcQA", "0 docs", "NQ");
    assert_eq!(
        (r.em.as_ref().unwrap().text.as_str(), r.params.as_str()),
        ("23.89", "220M")
    );
    assert_eq!(
        em(iag, "XL", "T5", "closed-book", "NQ")
            .em
            .as_ref()
            .unwrap()
            .text,
        "28.30"
    );
    let fid = em(iag, "Large", "FiD", "10 docs", "WebQ");
    assert_eq!(
        (fid.em.as_ref().unwrap().value, fid.note.as_str()),
        (48.1, "from earlier papers")
    );
    assert_eq!(em(iag, "Base", "FiD", "10 docs", "NQ").em, None);
    assert_eq!(em(iag, "XL", "IMcQA-l", "30 retrieved", "TQA").em, None);
    let xl = em(iag, "XL", "IMcQA", "10 generated", "WebQ");
    assert_eq!(
        (xl.em.as_ref().unwrap().value, xl.note.as_str()),
        (55.39, "5 docs")
    );
    assert_eq!(
        em(iag, "Large", "LoRA", "1 imagined", "TQA")
            .em
            .as_ref()
            .unwrap()
            .value,
        62.81
    );
}

#[test]
fn report_csv_quotes() {
    let records = papers::parse_csv("a,b,c\n\"x, y\",\"say \"\"hi\"\"\",\r\n\n1,,\"\"\n").unwrap();
    assert_eq!(
        records,
        vec![
            vec!["a", "b", "c"],
            vec!["x, y", "say \"hi\"", ""],
            vec!["1", "", ""],
        ]
    );
    assert!(papers::parse_csv("\"open,1\n").is_err());
}

/// A 7B-like Llama at 8k with S²-Attn and LoRA+, holding just the fields the matcher reads.
fn longlora_plan() -> Value {
    json!({
        "kind": "longlora_sft",
        "name": "fake-7b-8k",
        "model": {"arch": {"family": "llama", "hidden_size": 4096}},
        "data": {"max_length": 8192},
        "training": {"adapter": {"type": "lora", "also_train": ["embed", "norm"]}},
        "evaluation": {"perplexity": {"data": "data/proof_pile_test.bin"}},
        "method": {"shifted_sparse_attention": true}
    })
}

fn rows(m: Match) -> Vec<Comparison> {
    match m {
        Match::Rows { rows, .. } => rows,
        Match::None(why) => panic!("expected rows, got none: {why}"),
    }
}

fn none(m: Match) -> String {
    match m {
        Match::None(why) => why,
        Match::Rows { rows, .. } => panic!("expected no match, got {rows:?}"),
    }
}

#[test]
#[allow(clippy::approx_constant)] // 3.14 is a perplexity, not π
fn report_matches_longlora_settings() {
    let p = Papers::builtin().unwrap();
    let metrics = BTreeMap::from([("perplexity_4096".to_string(), 2.95)]);
    let r = rows(papers::match_run(&p, &longlora_plan(), &metrics));
    let got: Vec<(&str, f64, Option<f64>)> = r
        .iter()
        .map(|c| (c.metric.as_str(), c.paper.value, c.run))
        .collect();
    assert_eq!(
        got,
        [
            ("perplexity_2048", 3.20, None),
            ("perplexity_4096", 2.91, Some(2.95)),
            ("perplexity_8192", 2.72, None),
        ]
    );
    assert!(r.iter().all(|c| c.table.contains("Table 3")));

    // PG19 evaluation → Table 14; 13B at 16k; no perplexity data → both tables.
    let mut plan = longlora_plan();
    plan["evaluation"]["perplexity"]["data"] = json!("data/PG19/test.bin");
    let r = rows(papers::match_run(&p, &plan, &BTreeMap::new()));
    assert_eq!(r[0].paper.value, 7.70);
    assert!(r.iter().all(|c| c.table.contains("Table 14")));
    plan["model"]["arch"]["hidden_size"] = json!(5120);
    plan["data"]["max_length"] = json!(16384);
    plan["evaluation"] = json!({});
    let r = rows(papers::match_run(&p, &plan, &BTreeMap::new()));
    assert_eq!(r.len(), 4, "Table 3's 13B 16k row; Table 14 has no 13B");
    assert_eq!(r[3].paper.value, 2.41);

    // Full fine-tuning: with S²-Attn → "S²-Attn"; without → "full-FT, full attn".
    let mut plan = longlora_plan();
    plan["training"]["adapter"] = json!({"type": "full"});
    assert_eq!(
        rows(papers::match_run(&p, &plan, &metrics))[0].paper.value,
        3.15
    );
    plan["method"]["shifted_sparse_attention"] = json!(false);
    assert_eq!(
        rows(papers::match_run(&p, &plan, &metrics))[0].paper.value,
        3.14
    );

    // Plain LoRA, a tiny model, an unknown context: no row, and why.
    let mut plan = longlora_plan();
    plan["training"]["adapter"]["also_train"] = json!([]);
    assert!(none(papers::match_run(&p, &plan, &metrics)).contains("embed and norm"));
    let mut plan = longlora_plan();
    plan["model"]["arch"]["hidden_size"] = json!(64);
    plan["data"]["max_length"] = json!(256);
    let why = none(papers::match_run(&p, &plan, &metrics));
    assert!(
        why.contains("64-wide") && why.contains("256 tokens"),
        "{why}"
    );
    let coe = json!({"kind": "coe_multitask"});
    assert!(none(papers::match_run(&p, &coe, &metrics)).contains("no paper table"));
}

#[test]
fn report_matches_iag_settings() {
    let p = Papers::builtin().unwrap();
    let plan = json!({
        "kind": "iag_distill",
        "model": {"student": {"arch": {"d_model": 768, "d_ff": 3072}, "context_field": null}},
        "data": {"train": "data/NQ/train.json", "validation": "data/NQ/dev.json"},
        "training": {"adapter": {"type": "hyperlora"}}
    });
    let metrics = BTreeMap::from([("exact_match".to_string(), 20.0)]);
    let r = rows(papers::match_run(&p, &plan, &metrics));
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].paper.value, r[0].run), (23.89, Some(20.0)));

    let mut imagined = plan.clone();
    imagined["model"]["student"]["context_field"] = json!("pred");
    imagined["data"] = json!({"train": "x/triviaqa_train.json", "validation": "x/tqa_dev.json"});
    assert_eq!(
        rows(papers::match_run(&p, &imagined, &metrics))[0]
            .paper
            .value,
        60.75
    );
    let mut large = plan.clone();
    large["model"]["student"]["arch"] = json!({"d_model": 1024, "d_ff": 4096});
    large["training"]["adapter"]["type"] = json!("lora");
    large["data"] = json!({"train": "data/webq/train.json", "validation": "data/webq/dev.json"});
    assert_eq!(
        rows(papers::match_run(&p, &large, &metrics))[0].paper.value,
        29.13
    );
    large["model"]["student"]["arch"]["d_ff"] = json!(16384);
    assert_eq!(
        rows(papers::match_run(&p, &large, &metrics))[0].paper.value,
        35.24
    );

    assert_eq!(papers::iag_dataset("data/inquiry/train.json"), None);
    let mut tiny = plan.clone();
    tiny["model"]["student"]["arch"]["d_model"] = json!(64);
    tiny["data"] =
        json!({"train": "data/tiny/iag/train.json", "validation": "data/tiny/iag/dev.json"});
    let why = none(papers::match_run(&p, &tiny, &metrics));
    assert!(why.contains("64-wide") && why.contains("NQ"), "{why}");
}

#[test]
fn report_prints_paper_beside_a_fake_7b_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let plan = json!({"hash": "abc123", "plan": longlora_plan()});
    std::fs::write(run.join("plan.json"), plan.to_string()).unwrap();
    let summary = json!({
        "name": "fake-7b-8k", "kind": "longlora_sft", "plan_hash": "abc123", "steps": 10,
        "final_train_loss": 1.5, "best": {"metric": "perplexity", "step": 10, "value": 3.1}
    });
    std::fs::write(run.join("summary.json"), summary.to_string()).unwrap();
    std::fs::write(
        run.join("metrics.csv"),
        "step,split,metric,value\n5,eval,perplexity_2048,9.0\n10,train,loss,1.5\n\
         10,eval,loss,1.1\n10,eval,perplexity_2048,3.25\n10,eval,perplexity_8192,2.70\n",
    )
    .unwrap();
    let o = runner(&["report", run.to_str().unwrap()]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    for want in [
        "fake-7b-8k",
        "abc123",
        "final train loss  1.5000",
        "last eval         step 10",
        "best              perplexity 3.1000 at step 10",
        "paper vs this run",
        "LongLoRA Table 3 (proof-pile test): Llama-2 7B, trained at 8192, S²-Attn + LoRA+",
    ] {
        assert!(text.contains(want), "`{want}` missing:\n{text}");
    }
    let line = |metric: &str| -> Vec<String> {
        let l = text
            .lines()
            .find(|l| l.trim_start().starts_with(metric))
            .unwrap_or_else(|| panic!("no {metric} line:\n{text}"));
        l.split_whitespace().map(str::to_string).collect()
    };
    assert_eq!(line("perplexity_2048"), ["perplexity_2048", "3.2500"]);
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("paper vs this run"))
        .collect();
    let row = |metric: &str| -> Vec<&str> {
        table
            .iter()
            .find(|l| l.trim_start().starts_with(metric))
            .unwrap()
            .split_whitespace()
            .collect()
    };
    assert_eq!(
        row("perplexity_2048"),
        ["perplexity_2048", "3.20", "3.25", "+0.05"]
    );
    assert_eq!(
        row("perplexity_4096"),
        ["perplexity_4096", "2.91", "-", "-"]
    );
    assert_eq!(
        row("perplexity_8192"),
        ["perplexity_8192", "2.72", "2.70", "-0.02"]
    );
    assert!(!text.contains("Table 14"), "{text}");
}

#[test]
fn report_on_a_real_tiny_run_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = runner(&[
        "run",
        "recipes/tiny/longlora_sft.yaml",
        "training.max_steps=2",
        "evaluation.every_steps=1",
        "training.schedule.warmup_steps=1",
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = runner(&["report", out.to_str().unwrap()]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    for want in [
        "tiny-longlora-sft",
        "longlora_sft",
        "steps             2",
        "last eval         step 2",
        "no paper row matches",
        "64-wide",
    ] {
        assert!(text.contains(want), "`{want}` missing:\n{text}");
    }

    let missing = dir.path().join("nowhere");
    let o = runner(&["report", missing.to_str().unwrap()]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(2), "{text}");
    assert!(text.contains("nowhere") && text.contains("hint:"), "{text}");
    std::fs::remove_file(out.join("summary.json")).unwrap();
    let o = runner(&["report", out.to_str().unwrap()]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(2), "{text}");
    assert!(
        text.contains("summary.json") && text.contains("hint:"),
        "{text}"
    );
}

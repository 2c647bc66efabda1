//! YAML reading by the 1.2 core schema, and writing plans back out.

use std::path::PathBuf;
use std::sync::Arc;

use runner::config::{emit, yaml, Value};

fn scalar(text: &str) -> Value {
    let node =
        yaml::parse_file(&format!("k: {text}\n"), &Arc::new(PathBuf::from("t.yaml"))).unwrap();
    node.get("k").unwrap().value.clone()
}

#[test]
fn scalars_resolve_by_the_core_schema() {
    assert!(matches!(scalar("1e-4"), Value::Float(x) if x == 1e-4));
    assert!(matches!(scalar("3.0e-4"), Value::Float(x) if x == 3e-4));
    assert!(matches!(scalar(".5"), Value::Float(x) if x == 0.5));
    assert!(matches!(scalar("-12"), Value::Int(-12)));
    assert!(matches!(scalar("true"), Value::Bool(true)));
    assert!(matches!(scalar("~"), Value::Null));
    assert!(matches!(scalar("yes"), Value::Str(s) if s == "yes"));
    assert!(matches!(scalar("'12'"), Value::Str(s) if s == "12"));
    assert!(matches!(scalar("1e"), Value::Str(_)));
    assert!(matches!(scalar("inf"), Value::Str(_)));
    assert!(matches!(scalar(".inf"), Value::Float(x) if x.is_infinite()));
}

#[test]
fn emitted_yaml_reads_back_to_the_same_value() {
    let value = serde_json::json!({
        "a": {"b": [1, 2.5, "x y"], "c": null, "d": "true", "e": "", "f": 1e-5, "big": 1e300},
        "list": [{"k": 1, "l": {"m": "n"}}, {"k": 2}],
        "empty": {}, "none": [], "colon": "a: b", "hash": "a #b", "num": "12", "dir": "results/runs/{name}",
    });
    let text = emit::to_yaml(&value);
    assert!(text.contains("big: 1.0e+300"), "{text}");
    let node = yaml::parse_file(&text, &Arc::new(PathBuf::from("t.yaml"))).unwrap();
    assert_eq!(node.to_json(), value, "{text}");
}

#[test]
fn anchors_and_aliases_are_copied_with_positions() {
    let text = "a: &x {lr: 1}\nb: *x\n";
    let node = yaml::parse_file(text, &Arc::new(PathBuf::from("t.yaml"))).unwrap();
    assert_eq!(
        node.at(&["b", "lr"]).unwrap().to_json(),
        serde_json::json!(1)
    );
    assert_eq!(
        node.at(&["b", "lr"]).unwrap().origin.to_string(),
        "t.yaml:1:12"
    );
}

/// A "billion laughs" file: 7 levels of 9 aliases each would be 4.8 million values.
#[test]
fn nested_aliases_stop_at_a_bound_with_a_located_error() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for level in 1..8 {
        let refs = vec![format!("*a{}", level - 1); 9].join(", ");
        text += &format!("a{level}: &a{level} [{refs}]\n");
    }
    let started = std::time::Instant::now();
    let err = runner::config::yaml::parse_with(&text, &|line, col| {
        runner::config::Origin::file(&std::sync::Arc::new("bomb.yaml".into()), line, col)
    })
    .unwrap_err();
    assert!(
        started.elapsed().as_secs_f64() < 1.0,
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.message
            .contains("aliases copy more than 100000 values into this document"),
        "{}",
        err.message
    );
    assert_eq!(
        err.origin.as_ref().map(|o| o.describe()).as_deref(),
        Some("bomb.yaml:6:10")
    );
}

/// Duplicate keys are found in linear time: 100,000 keys parse quickly, and a duplicate among
/// them is still named with both places.
#[test]
fn a_hundred_thousand_keys_parse_in_linear_time() {
    let mut text: String = (0..100_000).map(|i| format!("k{i}: {i}\n")).collect();
    let parse = |t: &str| {
        runner::config::yaml::parse_with(t, &|line, col| {
            runner::config::Origin::file(&std::sync::Arc::new("many.yaml".into()), line, col)
        })
    };
    let started = std::time::Instant::now();
    assert!(parse(&text).is_ok());
    // Debug builds are several times slower than the release binary (0.1 s there).
    assert!(
        started.elapsed().as_secs_f64() < 5.0,
        "{:?}",
        started.elapsed()
    );
    text += "k5: again\n";
    let err = parse(&text).unwrap_err();
    assert!(
        err.message.contains("duplicate key `k5`"),
        "{}",
        err.message
    );
}

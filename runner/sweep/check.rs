//! Checking a sweep file: its own schema, its base recipe, and every swept key and value
//! against the recipe (a value that would make an invalid trial is reported where it is written).

use std::path::Path;
use std::sync::OnceLock;

use super::spec::{Distribution, Method, Parameter, SweepSpec};
use super::trials;
use crate::config::diagnostic::did_you_mean;
use crate::config::safe::{name_problem, slurm_value_problem};
use crate::config::{Diagnostic, Mode, Node, Origin, Override, Schema};
use crate::plan::resolve::{load_tree, plan_from_tree};
use crate::plan::schema::{def_for_kind, schema};

/// Trials a sweep may have without saying `max_trials`.
pub const MAX_TRIALS_UNASKED: u64 = 1_000;

pub fn check(path: &Path, tree: &mut Node) -> Result<SweepSpec, Vec<Diagnostic>> {
    let sweeps = sweep_schema();
    let def = sweeps.def("SweepSpec").expect("defined");
    let errors = sweeps.check(tree, def, Mode::Complete, &Origin::start_of(path));
    if !errors.is_empty() {
        return Err(errors);
    }
    let spec: SweepSpec = serde_json::from_value(tree.to_json()).map_err(|e| {
        vec![Diagnostic::error(
            Origin::start_of(path),
            format!("cannot type the sweep: {e}"),
        )]
    })?;
    let mut errors = Vec::new();
    let at = |keys: &[&str]| {
        tree.at(keys)
            .map_or_else(|| Origin::start_of(path), |n| n.origin.clone())
    };

    // Values that reach a folder name or the Slurm job script.
    if let Some(problem) = name_problem(&spec.name) {
        errors.push(
            Diagnostic::error(
                at(&["name"]),
                format!("the name names the sweep's folder, and {problem}"),
            )
            .with_hint("use letters, digits, _ - and . (one folder name)"),
        );
    }
    if let Some(slurm) = &spec.slurm {
        for (key, value) in slurm.text_values() {
            if let Some(problem) = value.and_then(slurm_value_problem) {
                errors.push(
                    Diagnostic::error(at(&["slurm", key]), problem)
                        .with_hint("write the value as sbatch takes it on its command line"),
                );
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    // The base recipe, with the fixed overrides.
    let recipe_path = path.parent().unwrap_or(Path::new("")).join(&spec.recipe);
    let (base, load_errors) = load_tree(&recipe_path, &[]);
    if !load_errors.is_empty() {
        let mut d = Diagnostic::error(
            at(&["recipe"]),
            format!("the base recipe `{}` does not load", spec.recipe),
        )
        .with_hint("give the recipe's path relative to this sweep file");
        for e in load_errors.iter().take(3) {
            d = d.with_note(
                e.origin
                    .clone()
                    .unwrap_or_else(|| Origin::start_of(&recipe_path)),
                e.message.clone(),
            );
        }
        return Err(vec![d]);
    }
    let Some(mut base) = base else {
        return Err(errors);
    };
    let kind = base
        .get("kind")
        .and_then(Node::as_str)
        .unwrap_or_default()
        .to_string();
    if def_for_kind(&kind).is_none() {
        return Err(vec![Diagnostic::error(
            at(&["recipe"]),
            format!("`{}` is not a recipe (its kind is `{kind}`)", spec.recipe),
        )]);
    }
    if let Some(fixed) = tree.get("fixed").and_then(Node::entries) {
        for entry in fixed {
            if let Err(e) = apply(
                &mut base,
                entry.key.as_str(),
                &entry.key_origin,
                &entry.value,
            ) {
                errors.push(e);
            }
        }
    }
    if let Err(e) = plan_from_tree(&recipe_path, &kind, base.clone()) {
        errors.extend(e);
        return Err(errors);
    }

    // Every swept key must exist in the recipe, and every value must make a valid trial.
    let recipe_schema = schema()
        .def(def_for_kind(&kind).expect("checked above"))
        .expect("defined");
    let mut axes: Vec<(&str, &Origin, Vec<&Node>)> = Vec::new();
    if let Some(parameters) = tree.get("parameters").and_then(Node::entries) {
        for entry in parameters {
            let values = entry.value.get("values").and_then(|v| match &v.value {
                crate::config::Value::Seq(items) => Some(items.iter().collect()),
                _ => None,
            });
            axes.push((&entry.key, &entry.key_origin, values.unwrap_or_default()));
        }
    }
    for group in tree.get("paired").into_iter().flat_map(|p| match &p.value {
        crate::config::Value::Seq(items) => items.iter().collect::<Vec<_>>(),
        _ => Vec::new(),
    }) {
        for entry in group.entries().unwrap_or_default() {
            let values = match &entry.value.value {
                crate::config::Value::Seq(items) => items.iter().collect(),
                _ => Vec::new(),
            };
            axes.push((&entry.key, &entry.key_origin, values));
        }
    }
    for (key, origin, values) in &axes {
        if let Some(problem) = unknown_key(recipe_schema, key) {
            errors.push(Diagnostic::error((*origin).clone(), problem.0).with_hint(problem.1));
            continue;
        }
        for value in values {
            let mut trial = base.clone();
            if let Err(e) = apply(&mut trial, key, origin, value) {
                errors.push(e);
                break;
            }
            if let Err(e) = plan_from_tree(&recipe_path, &kind, trial) {
                let mut d = Diagnostic::error(
                    value.origin.clone(),
                    format!(
                        "{key} = {} makes an invalid trial: {}",
                        value.preview(),
                        e[0].message
                    ),
                );
                if let Some(hint) = &e[0].hint {
                    d = d.with_hint(hint.clone());
                }
                errors.push(d);
            }
        }
    }

    // The shape of the search itself.
    for (name, parameter) in &spec.parameters {
        if let Some(message) = parameter_problem(parameter, spec.method) {
            errors.push(
                Diagnostic::error(
                    at(&["parameters", name]),
                    format!("parameter `{name}`: {}", message.0),
                )
                .with_hint(message.1),
            );
        }
    }
    for (i, group) in spec.paired.iter().enumerate() {
        let lengths: Vec<usize> = group.values().map(Vec::len).collect();
        if lengths.windows(2).any(|w| w[0] != w[1]) || lengths.contains(&0) {
            errors.push(Diagnostic::error(at(&["paired", &i.to_string()]), format!("paired keys vary together, so their lists need the same non-zero length; found {lengths:?}")).with_hint("give each key of the group one value per setting"));
        }
    }
    if spec.method == Method::Random && spec.count.is_none() {
        errors.push(
            Diagnostic::error(
                at(&["method"]),
                "a random search needs `count`, the number of trials to draw",
            )
            .with_hint("add `count: 8`"),
        );
    }
    if spec.parameters.is_empty() && spec.paired.is_empty() && spec.seeds.len() < 2 {
        errors.push(
            Diagnostic::error(Origin::start_of(path), "the sweep varies nothing")
                .with_hint("add `parameters`, `paired` groups or several `seeds`"),
        );
    }
    // Each value once, each key on one axis.
    for (name, parameter) in &spec.parameters {
        let values = parameter.values.as_deref().unwrap_or_default();
        if let Some(i) = (1..values.len()).find(|&i| values[..i].contains(&values[i])) {
            errors.push(
                Diagnostic::error(
                    at(&["parameters", name, "values", &i.to_string()]),
                    format!(
                        "parameter `{name}` lists {} twice, which would run the same trials twice",
                        values[i]
                    ),
                )
                .with_hint("list each value once"),
            );
        }
    }
    for (i, group) in spec.paired.iter().enumerate() {
        for key in group.keys().filter(|k| spec.parameters.contains_key(*k)) {
            errors.push(
                Diagnostic::error(
                    at(&["paired", &i.to_string(), key]),
                    format!("`{key}` is both a paired key and a parameter"),
                )
                .with_hint("vary a key on one axis: in `parameters` or in one `paired` group"),
            );
        }
    }
    let trials = trials::count(&spec);
    match spec.max_trials {
        Some(max) if trials > max => errors.push(
            Diagnostic::error(
                at(&["max_trials"]),
                format!("the sweep has {trials} trials, more than its max_trials {max}"),
            )
            .with_hint("narrow the search, or raise max_trials"),
        ),
        None if trials > MAX_TRIALS_UNASKED => errors.push(
            Diagnostic::error(
                at(&[match spec.method {
                    Method::Random => "count",
                    Method::Grid => "parameters",
                }]),
                format!("the sweep has {trials} trials, more than {MAX_TRIALS_UNASKED}"),
            )
            .with_hint(format!(
                "set `max_trials: {trials}` if that many are meant, or narrow the search"
            )),
        ),
        _ => {}
    }
    let mut seeds = spec.seeds.clone();
    seeds.sort();
    if seeds.windows(2).any(|w| w[0] == w[1]) {
        errors.push(
            Diagnostic::error(
                at(&["seeds"]),
                "a seed is listed twice, which would run the same trial twice",
            )
            .with_hint("list each seed once"),
        );
    }
    let metrics = metric_names(&kind);
    if !metrics.contains(&spec.metric.name.as_str()) {
        let hint = match did_you_mean(&spec.metric.name, metrics.iter().copied()) {
            Some(near) => format!("did you mean `{near}`?"),
            None => format!("metrics of a {kind} run: {}", metrics.join(", ")),
        };
        errors.push(
            Diagnostic::error(
                at(&["metric", "name"]),
                format!("a {kind} run logs no metric `{}`", spec.metric.name),
            )
            .with_hint(hint),
        );
    }
    if errors.is_empty() {
        Ok(spec)
    } else {
        Err(errors)
    }
}

/// Set `key` (dotted) to a copy of `value` in `tree`, keeping the value's position.
fn apply(tree: &mut Node, key: &str, origin: &Origin, value: &Node) -> Result<(), Diagnostic> {
    let path = key
        .split('.')
        .map(|s| (s.to_string(), origin.clone()))
        .collect();
    Override {
        path,
        value: value.clone(),
    }
    .apply(tree)
}

/// The message and hint when a dotted key is not in the recipe schema.
fn unknown_key(recipe: &serde_json::Value, key: &str) -> Option<(String, String)> {
    let schema = schema();
    let mut at = recipe;
    for (i, segment) in key.split('.').enumerate() {
        let resolved = schema.resolve(at);
        let is_list = resolved.get("type").and_then(|t| t.as_str()) == Some("array");
        match (is_list, segment.parse::<usize>()) {
            (true, Ok(_)) => at = resolved.get("items")?,
            _ => match schema.property(at, segment) {
                Some(next) => at = next,
                None => {
                    let keys: Vec<String> = resolved
                        .get("properties")
                        .and_then(|p| p.as_object())
                        .map(|p| p.keys().cloned().collect())
                        .unwrap_or_default();
                    let prefix = key.split('.').take(i).collect::<Vec<_>>().join(".");
                    let hint = match did_you_mean(segment, keys.iter().map(String::as_str)) {
                        Some(near) => format!(
                            "did you mean `{}`?",
                            if prefix.is_empty() {
                                near.to_string()
                            } else {
                                format!("{prefix}.{near}")
                            }
                        ),
                        None => format!("keys here: {}", keys.join(", ")),
                    };
                    return Some((
                        format!(
                            "`{key}` is not a key of the recipe: no `{segment}` {}",
                            if prefix.is_empty() {
                                "at the top level".into()
                            } else {
                                format!("in `{prefix}`")
                            }
                        ),
                        hint,
                    ));
                }
            },
        }
    }
    None
}

fn parameter_problem(p: &Parameter, method: Method) -> Option<(String, String)> {
    match (&p.values, p.distribution) {
        (Some(_), Some(_)) => Some((
            "give `values` or a `distribution`, not both".into(),
            "remove one".into(),
        )),
        (None, None) => Some((
            "needs `values` or a `distribution`".into(),
            "add `values: [...]`".into(),
        )),
        (Some(values), None) if values.is_empty() => {
            Some(("`values` is empty".into(), "list at least one value".into()))
        }
        (None, Some(_)) if method == Method::Grid => Some((
            "a grid search needs `values`; distributions are for `method: random`".into(),
            "list the values, or set method: random".into(),
        )),
        (None, Some(d)) => match (p.min, p.max) {
            (Some(lo), Some(hi)) if lo >= hi => Some((
                format!("min {lo} is not below max {hi}"),
                "swap or fix the bounds".into(),
            )),
            (Some(lo), Some(_)) if d == Distribution::LogUniform && lo <= 0.0 => Some((
                "a log-uniform range must be positive".into(),
                "use min > 0".into(),
            )),
            (Some(_), Some(_)) => None,
            _ => Some((
                "a distribution needs `min` and `max`".into(),
                "add both bounds".into(),
            )),
        },
        _ => None,
    }
}

/// Metrics a run of `kind` logs, as sweeps and reports name them.
pub fn metric_names(kind: &str) -> Vec<&'static str> {
    let mut names = vec!["train/loss", "eval/loss"];
    names.extend(match kind {
        "iag_distill" => vec!["eval/exact_match", "eval/f1"],
        "longlora_sft" => vec!["eval/perplexity", "eval/passkey_accuracy"],
        _ => vec!["eval/bleu4", "eval/rouge_l", "eval/meteor"],
    });
    names
}

/// The sweep file's schema, generated from [`SweepSpec`].
fn sweep_schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        Schema::of_documents("runner sweep", "A sweep file.", |g| {
            vec![g.subschema_for::<SweepSpec>()]
        })
    })
}

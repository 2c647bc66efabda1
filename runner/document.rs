//! What a YAML file of the project is, decided by its `kind`: a recipe (resolved into a plan),
//! a sweep (checked with its base recipe), or, without `kind`, a fragment that recipes extend.
//! It sits above `plan` and `sweep`, which each know only their own files; `runner validate`,
//! `runner report` and `runner schema` see the whole.

use std::path::Path;
use std::sync::OnceLock;

use crate::config::{Diagnostic, Mode, Node, Schema, Value};
use crate::plan::recipe::KINDS;
use crate::plan::resolve::{kind_of, load_tree, plan_from_tree, SWEEP};
use crate::plan::Plan;
use crate::sweep::spec::SweepSpec;

pub enum Document {
    Recipe(Box<Plan>),
    Sweep(Box<SweepSpec>),
    /// No `kind`: a building block that recipes extend; the definition it was checked against.
    Fragment(String),
}

/// The one schema of the project's files: `oneOf` the three recipe kinds and the sweep file.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        Schema::of_documents(
            "runner recipe or sweep",
            "A recipe (kind: iag_distill, longlora_sft or coe_multitask) or a sweep file (kind: sweep).",
            |g| {
                let mut documents = crate::plan::schema::documents(g);
                documents.push(g.subschema_for::<SweepSpec>());
                documents
            },
        )
    })
}

/// Check any YAML file of the project: a recipe, a sweep or a fragment.
pub fn document(path: &Path, overrides: &[String]) -> Result<Document, Vec<Diagnostic>> {
    let (tree, mut errors) = load_tree(path, overrides);
    let Some(mut tree) = tree else {
        return Err(errors);
    };
    let allowed: Vec<&str> = KINDS.iter().copied().chain([SWEEP]).collect();
    let kind = match kind_of(&tree, &allowed) {
        Ok(kind) => kind,
        Err(e) => {
            errors.push(e);
            return Err(errors);
        }
    };
    let document = match kind.as_deref() {
        // A file that did not load (a syntax error) is not also checked as a fragment.
        None if !errors.is_empty() => Err(Vec::new()),
        None => fragment(&mut tree).map(Document::Fragment),
        Some(SWEEP) => {
            crate::sweep::check::check(path, &mut tree).map(|s| Document::Sweep(Box::new(s)))
        }
        Some(kind) => plan_from_tree(path, kind, tree).map(|plan| Document::Recipe(Box::new(plan))),
    };
    match document {
        Ok(document) if errors.is_empty() => Ok(document),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// Check a file without `kind` as a fragment: it must fit some part of the schema (no
/// required keys). Returns the name of the part it fits best.
fn fragment(tree: &mut Node) -> Result<String, Vec<Diagnostic>> {
    let schema = schema();
    let at = tree.origin.clone();
    let what = match &tree.value {
        Value::Map(entries) if !entries.is_empty() => None,
        Value::Map(_) | Value::Null => Some("no settings (it is empty, or only comments)"),
        _ => Some("a single value, not a mapping of keys"),
    };
    if let Some(what) = what {
        return Err(vec![Diagnostic::error(at, format!("the file holds {what}"))
            .with_hint("a recipe starts with `kind:`; a file other recipes extend holds keys such as `hidden_size: 64`")]);
    }
    let mut best: Option<(String, Vec<Diagnostic>)> = None;
    // Whole recipes first, so a partial recipe is reported as one rather than as a part.
    let mut names: Vec<&str> = schema.def_names();
    names.sort_by_key(|n| !n.ends_with("Recipe"));
    let Value::Map(entries) = &tree.value else {
        unreachable!("checked above")
    };
    let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    for name in names {
        let def = schema.def(name).expect("listed definitions exist");
        let Some(known) = top_level_keys(schema, def) else {
            continue;
        };
        // Each key the part lacks is one error, so a part with more unknown keys than the best
        // part has errors cannot fit better; skipping it keeps a file of 100,000 keys fast.
        let unknown = keys.iter().filter(|k| !known.contains(*k)).count();
        if best.as_ref().is_some_and(|(_, e)| unknown >= e.len()) {
            continue;
        }
        let mut trial = tree.clone();
        let errors = schema.check(&mut trial, def, Mode::Fragment, &at);
        if errors.is_empty() {
            *tree = trial;
            return Ok(name.to_string());
        }
        if best.as_ref().is_none_or(|(_, e)| errors.len() < e.len()) {
            best = Some((name.to_string(), errors));
        }
    }
    let (name, errors) = best.unwrap_or_default();
    Err(errors
        .into_iter()
        .map(|e| {
            let hint = format!(
                "{} (this file has no `kind`, so it was checked as a fragment of `{name}`)",
                e.hint.clone().unwrap_or_default()
            );
            e.with_hint(hint.trim_start().to_string())
        })
        .collect())
}

/// The keys a mapping of this definition may hold (any alternative's, for a tagged one); None
/// for a definition that is not a mapping.
fn top_level_keys<'a>(schema: &'a Schema, def: &'a serde_json::Value) -> Option<Vec<&'a str>> {
    let def = schema.resolve(def);
    let alternatives: Vec<&serde_json::Value> = match def.get("oneOf").and_then(|o| o.as_array()) {
        Some(alts) => alts.iter().map(|a| schema.resolve(a)).collect(),
        None => vec![def],
    };
    let mut keys = Vec::new();
    for alt in alternatives {
        keys.extend(
            alt.get("properties")?
                .as_object()?
                .keys()
                .map(String::as_str),
        );
    }
    Some(keys)
}

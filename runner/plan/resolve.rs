//! From a recipe file and `KEY.PATH=VALUE` overrides to a checked, hashed [`Plan`]:
//! load (with `extends`) → override → check against the schema → type → semantic checks → hash.

use std::path::{Path, PathBuf};

use super::checks;
use super::recipe::{Recipe, KINDS};
use super::schema::{def_for_kind, schema};
use crate::config::diagnostic::did_you_mean;
use crate::config::{load, Diagnostic, Mode, Node, Origin, Override};

/// The contract between configuration and execution: every value typed and filled in.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The recipe file it came from.
    pub source: PathBuf,
    pub recipe: Recipe,
    /// The located tree it was typed from, for `explain` and for locating check failures.
    pub tree: Node,
    /// blake3 of the canonical JSON of `recipe`: independent of key order, comments and
    /// formatting, changed by any value.
    pub hash: String,
}

/// What a YAML file of the project is, decided by its `kind`.
pub enum Document {
    Recipe(Box<Plan>),
    Sweep(Box<crate::sweep::spec::SweepSpec>),
    /// No `kind`: a building block that recipes extend; the definition it was checked against.
    Fragment(String),
}

/// Load a file with its `extends` and apply overrides. Errors are collected, not fatal.
pub fn load_tree(path: &Path, overrides: &[String]) -> (Option<Node>, Vec<Diagnostic>) {
    let (tree, mut errors) = load::load(path);
    let mut tree = tree.unwrap_or_else(|| {
        Node::new(
            crate::config::Value::Map(Vec::new()),
            Origin::start_of(path),
        )
    });
    if matches!(tree.value, crate::config::Value::Null) {
        tree.value = crate::config::Value::Map(Vec::new());
    }
    for (i, text) in overrides.iter().enumerate() {
        match Override::parse(i + 1, text) {
            Ok(o) => o.apply(&mut tree),
            Err(e) => errors.push(e),
        }
    }
    let readable = errors.iter().all(|e| e.origin.is_some());
    (readable.then_some(tree), errors)
}

/// Resolve a recipe file into a plan.
pub fn resolve(path: &Path, overrides: &[String]) -> Result<Plan, Vec<Diagnostic>> {
    match document(path, overrides)? {
        Document::Recipe(plan) => Ok(*plan),
        Document::Sweep(_) => Err(vec![Diagnostic::error(
            Origin::start_of(path),
            "this is a sweep file, not a recipe",
        )
        .with_hint("run it with `runner sweep`, or check it with `runner validate`")]),
        Document::Fragment(_) => Err(vec![Diagnostic::error(
            Origin::start_of(path),
            "missing required key `kind`",
        )
        .with_hint(format!(
            "add `kind:` with one of {}; files without a kind are fragments for `extends`",
            KINDS.join(", ")
        ))]),
    }
}

/// Check any YAML file of the project: a recipe, a sweep or a fragment.
pub fn document(path: &Path, overrides: &[String]) -> Result<Document, Vec<Diagnostic>> {
    let (tree, mut errors) = load_tree(path, overrides);
    let Some(mut tree) = tree else {
        return Err(errors);
    };
    let kind = match kind_of(&tree) {
        Ok(kind) => kind,
        Err(e) => {
            errors.push(e);
            return Err(errors);
        }
    };
    let document = match kind.as_deref() {
        None => fragment(&mut tree).map(Document::Fragment),
        Some("sweep") => {
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

/// Type a loaded tree as the recipe of `kind`, run the semantic checks and hash it.
pub fn plan_from_tree(source: &Path, kind: &str, mut tree: Node) -> Result<Plan, Vec<Diagnostic>> {
    let schema = schema();
    let def = def_for_kind(kind)
        .and_then(|d| schema.def(d))
        .expect("every recipe kind has a schema");
    let errors = schema.check(&mut tree, def, Mode::Complete, &Origin::start_of(source));
    if !errors.is_empty() {
        return Err(errors);
    }
    let recipe = Recipe::from_json(kind, tree.to_json()).map_err(|e| {
        vec![Diagnostic::error(
            Origin::start_of(source),
            format!("cannot type the recipe: {e}"),
        )
        .with_hint("this is a bug in runner's schema: please report it with the recipe")]
    })?;
    let plan = Plan {
        source: source.to_path_buf(),
        hash: hash(&recipe),
        recipe,
        tree,
    };
    let errors = checks::check(&plan);
    if errors.is_empty() {
        Ok(plan)
    } else {
        Err(errors)
    }
}

/// The content hash of a recipe: blake3 over its canonical JSON (keys sorted, defaults filled).
pub fn hash(recipe: &Recipe) -> String {
    let canonical = serde_json::to_vec(&recipe.to_json()).expect("JSON values serialize");
    blake3::hash(&canonical).to_hex().to_string()
}

/// The `kind` of a document, `None` for a fragment.
fn kind_of(tree: &Node) -> Result<Option<String>, Diagnostic> {
    let Some(node) = tree.get("kind") else {
        return Ok(None);
    };
    let allowed: Vec<&str> = KINDS.iter().copied().chain(["sweep"]).collect();
    match node.as_str() {
        Some(kind) if allowed.contains(&kind) => Ok(Some(kind.to_string())),
        found => {
            let hint = match found.and_then(|k| did_you_mean(k, allowed.iter().copied())) {
                Some(near) => format!("did you mean `{near}`?"),
                None => format!("choose one of {}", allowed.join(", ")),
            };
            Err(Diagnostic::error(
                node.origin.clone(),
                format!(
                    "`kind` must be one of {}; found {}",
                    allowed.join(", "),
                    node.preview()
                ),
            )
            .with_hint(hint))
        }
    }
}

/// Check a file without `kind` as a fragment: it must fit some part of the schema (no
/// required keys). Returns the name of the part it fits best.
fn fragment(tree: &mut Node) -> Result<String, Vec<Diagnostic>> {
    let schema = schema();
    let at = tree.origin.clone();
    let mut best: Option<(String, Vec<Diagnostic>)> = None;
    // Whole recipes first, so a partial recipe is reported as one rather than as a part.
    let mut names: Vec<&str> = schema.def_names();
    names.sort_by_key(|n| !n.ends_with("Recipe"));
    for name in names {
        let def = schema.def(name).expect("listed definitions exist");
        if schema.resolve(def).get("properties").is_none()
            && schema.resolve(def).get("oneOf").is_none()
        {
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

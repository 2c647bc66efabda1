//! From a recipe file and `KEY.PATH=VALUE` overrides to a checked, hashed [`Plan`]:
//! load (with `extends`) → override → check against the schema → type → semantic checks → hash.

use std::path::{Path, PathBuf};

use super::checks::Checker;
use super::layout::InputRecipe;
use super::recipe::{Recipe, KINDS};
use super::schema::{def_for_kind, schema};
use super::Plan;
use crate::config::diagnostic::did_you_mean;
use crate::config::safe::name_problem;
use crate::config::{load, Diagnostic, Mode, Node, Origin, Override};

/// The `kind` of sweep files, which `runner sweep` runs (a recipe file is run by `runner run`).
pub const SWEEP: &str = "sweep";

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
        if let Err(e) = Override::parse(i + 1, text).and_then(|o| o.apply(&mut tree)) {
            errors.push(e);
        }
    }
    let readable = errors.iter().all(|e| e.origin.is_some());
    (readable.then_some(tree), errors)
}

/// Resolve a recipe file into a plan.
pub fn resolve(path: &Path, overrides: &[String]) -> Result<Plan, Vec<Diagnostic>> {
    let (tree, mut errors) = load_tree(path, overrides);
    let Some(tree) = tree else {
        return Err(errors);
    };
    let allowed: Vec<&str> = KINDS.iter().copied().chain([SWEEP]).collect();
    let kind = match kind_of(&tree, &allowed) {
        // A file that did not load says why first: its kind may be what failed to load.
        _ if !errors.is_empty() && tree.get("kind").is_none() => return Err(errors),
        Ok(Some(kind)) if kind == SWEEP => {
            return Err(vec![Diagnostic::error(
                Origin::start_of(path),
                "this is a sweep file, not a recipe",
            )
            .with_hint(
                "run it with `runner sweep`, or check it with `runner validate`",
            )])
        }
        Ok(Some(kind)) => kind,
        Ok(None) => {
            return Err(vec![Diagnostic::error(
                Origin::start_of(path),
                "missing required key `kind`",
            )
            .with_hint(format!(
                "add `kind:` with one of {}; files without a kind are fragments for `extends`",
                KINDS.join(", ")
            ))])
        }
        Err(e) => {
            errors.push(e);
            return Err(errors);
        }
    };
    match plan_from_tree(path, &kind, tree) {
        Ok(plan) if errors.is_empty() => Ok(plan),
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
    let mut plan = Plan {
        source: source.to_path_buf(),
        hash: hash(&recipe),
        recipe,
        tree,
        warnings: Vec::new(),
    };
    let (errors, warnings) = check(&plan);
    plan.warnings = warnings;
    if errors.is_empty() {
        Ok(plan)
    } else {
        Err(errors)
    }
}

/// All semantic problems of a plan, errors and warnings: the rules every kind shares, the
/// kind's own, and those of the recipes it names as inputs.
fn check(plan: &Plan) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
    let recipe = plan.recipe.as_kind();
    let mut c = Checker::new(&plan.tree, &plan.source);
    let parts = recipe.parts();
    c.shared(
        recipe.training(),
        recipe.evaluation(),
        recipe.output(),
        &parts,
    );
    recipe.check(&mut c);
    if let Some(problem) = name_problem(plan.recipe.name()) {
        c.fail(
            &["name"],
            format!("the name names the run's folder, and {problem}"),
            "use letters, digits, _ - and . (one folder name, such as tiny-qlora_2)",
        );
    }
    for input in recipe.input_recipes() {
        input_recipe(&mut c, plan, &input);
    }
    (c.errors, c.warnings)
}

/// A recipe named as an input must resolve and be one whose run serves; a chain of input
/// recipes that comes back is a cycle.
fn input_recipe(c: &mut Checker, plan: &Plan, input: &InputRecipe) {
    let (origin, _) = c.locate(input.key);
    let path = &input.path;
    let key = input.key;
    // Relative to the working directory, as data and tokenizer paths are, so that a printed
    // plan means the same wherever it is saved.
    let full = Path::new(path);
    if !full.is_file() {
        c.errors.push(
            Diagnostic::error(
                origin,
                format!(
                    "{key}: recipe `{path}` does not exist (looked at {})",
                    full.display()
                ),
            )
            .with_hint("give the path from the project root, as for data paths (recipes/…)"),
        );
        return;
    }
    // The recipes being checked for one another, outermost first: an input recipe found among
    // them closes a cycle, which is refused rather than recursed into.
    thread_local!(static CHECKING: std::cell::RefCell<Vec<(PathBuf, String)>> = const { std::cell::RefCell::new(Vec::new()) });
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (target, this) = (canonical(full), canonical(&plan.source));
    if target == this {
        c.errors.push(
            Diagnostic::error(
                origin,
                format!("{key}: recipe `{path}` leads back to this recipe"),
            )
            .with_hint("a recipe cannot be its own input; name the recipe whose run it needs"),
        );
        return;
    }
    let chain = CHECKING.with_borrow(|checking| {
        let names: Vec<&str> = checking.iter().map(|(_, n)| n.as_str()).collect();
        checking
            .iter()
            .find(|(p, _)| *p == target)
            .map(|(_, name)| format!("{} -> {} -> {name}", names.join(" -> "), plan.recipe.name()))
    });
    if let Some(chain) = chain {
        c.errors.push(
            Diagnostic::error(origin, format!("{key}: recipe `{path}` is needed by the run it needs: {chain}"))
                .with_hint("break the cycle; an input recipe must not name, directly or through others, the recipe it serves"),
        );
        return;
    }
    CHECKING.with_borrow_mut(|checking| checking.push((this, plan.recipe.name().to_string())));
    let resolved = resolve(full, &[]);
    CHECKING.with_borrow_mut(|checking| checking.pop());
    match resolved {
        Err(errors) => {
            let mut d = Diagnostic::error(
                origin,
                format!(
                    "{key}: recipe `{path}` is invalid ({} errors)",
                    errors.len()
                ),
            )
            .with_hint("run `runner validate` on it");
            for e in errors.iter().take(3) {
                if let Some(o) = &e.origin {
                    d = d.with_note(o.clone(), e.message.clone());
                }
            }
            c.errors.push(d);
        }
        Ok(input_plan) => {
            if !input_plan.recipe.as_kind().leaves().contains(&input.needs) {
                c.errors.push(
                    Diagnostic::error(
                        origin.clone(),
                        format!(
                            "{key}: recipe `{path}` cannot serve: its run leaves no {}",
                            input.needs
                        ),
                    )
                    .with_hint(format!("name {} under `{key}`", input.from)),
                );
            } else if input_plan.recipe.name() == plan.recipe.name() {
                c.errors.push(
                    Diagnostic::error(origin, format!("{key}: recipe `{path}` has this recipe's name `{}`, so its run would be this run", plan.recipe.name()))
                        .with_hint("give the two recipes different names"),
                );
            }
        }
    }
}

/// The content hash of a recipe: blake3 over its canonical JSON (keys sorted, defaults filled).
pub fn hash(recipe: &Recipe) -> String {
    let canonical = serde_json::to_vec(&recipe.to_json()).expect("JSON values serialize");
    blake3::hash(&canonical).to_hex().to_string()
}

/// The `kind` of a document, one of `allowed`; `None` for a fragment.
pub fn kind_of(tree: &Node, allowed: &[&str]) -> Result<Option<String>, Diagnostic> {
    let Some(node) = tree.get("kind") else {
        return Ok(None);
    };
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

//! The house rules of the source tree, read from the source itself: no module imports a module
//! on a higher floor, and no two files import each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The floors, bottom first (see ARCHITECTURE.md); `""` is the crate root (lib.rs, main.rs).
const FLOORS: [(&str, u32); 16] = [
    ("config", 0),
    ("artifacts", 0),
    ("files", 0),
    ("digest", 0),
    ("shim", 0),
    ("distributed", 0),
    ("plan", 1),
    ("models", 2),
    ("data", 3),
    ("train", 4),
    ("eval", 4),
    ("sweep", 4),
    ("methods", 5),
    ("document", 5),
    ("commands", 6),
    ("", 7),
];

fn floor(module: &str) -> u32 {
    let top = module.split("::").next().unwrap_or("");
    FLOORS
        .iter()
        .find(|(name, _)| *name == top)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| {
            panic!("module `{module}` has no floor: add it to FLOORS and ARCHITECTURE.md")
        })
}

/// Every module of `runner/` by path (`plan::kinds::iag`), with its source less comments.
fn modules() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("runner");
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(&root) {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(&root).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if parts
            .last()
            .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
        {
            parts.pop();
        }
        let text = std::fs::read_to_string(path).unwrap();
        let code: Vec<&str> = text
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect();
        let name = parts.join("::");
        let previous = out.insert(name.clone(), code.join("\n"));
        if let Some(previous) = previous {
            // lib.rs and main.rs are both the root.
            out.insert(name, previous + "\n" + &code.join("\n"));
        }
    }
    out
}

/// The longest known module that `segments` starts with.
fn known(modules: &BTreeMap<String, String>, segments: &[&str]) -> Option<String> {
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|m| modules.contains_key(m))
}

/// The modules each module names through `crate::`, `super::` or a child's path.
fn imports(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let path = fancy_regex::Regex::new(r"\b(crate|super|self)((?:::\w+)+)(::\{[^;]*?\})?").unwrap();
    let child = fancy_regex::Regex::new(r"(?m)^use (\w+)::").unwrap();
    let word = fancy_regex::Regex::new(r"\w+").unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in modules {
        let me: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
        let mut found = BTreeSet::new();
        for c in path.captures_iter(code) {
            let c = c.unwrap();
            let mut segments: Vec<&str> = c[2].split("::").filter(|s| !s.is_empty()).collect();
            let mut base: Vec<&str> = match &c[1] {
                "crate" => Vec::new(),
                "super" => me[..me.len().saturating_sub(1)].to_vec(),
                _ => me.clone(),
            };
            while segments.first() == Some(&"super") {
                base.pop();
                segments.remove(0);
            }
            let full: Vec<&str> = base.iter().chain(&segments).copied().collect();
            found.extend(known(modules, &full));
            if let Some(group) = c.get(3) {
                for item in word.find_iter(group.as_str()) {
                    let with: Vec<&str> = full
                        .iter()
                        .copied()
                        .chain([item.unwrap().as_str()])
                        .collect();
                    found.extend(
                        known(modules, &with).filter(|m| m.split("::").count() == with.len()),
                    );
                }
            }
        }
        for c in child.captures_iter(code) {
            let c = c.unwrap();
            let with: Vec<&str> = me.iter().copied().chain([&c[1]]).collect();
            found.extend(known(modules, &with).filter(|m| m.split("::").count() == with.len()));
        }
        found.remove(module);
        out.insert(module.clone(), found);
    }
    out
}

#[test]
fn no_module_imports_a_higher_floor_and_no_two_import_each_other() {
    let modules = modules();
    let imports = imports(&modules);
    let mut problems = Vec::new();
    for (module, named) in &imports {
        for other in named {
            if floor(other) > floor(module) {
                problems.push(format!(
                    "{module} (floor {}) imports {other} (floor {})",
                    floor(module),
                    floor(other)
                ));
            }
            if module < other && imports.get(other).is_some_and(|n| n.contains(module)) {
                problems.push(format!("{module} and {other} import each other"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The check sees imports at all: the trainer reads the plan, the CLI the commands.
    assert!(imports["train::trainer"].contains("plan"));
    assert!(imports["methods"].contains("methods::inputs"));
}

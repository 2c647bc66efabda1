//! Reading a recipe file: parse it, resolve `extends:` at any depth, and deep-merge the layers.
//!
//! `extends:` takes a path or a list of paths, relative to the file that names it or to a
//! `configs/` folder of the project. The bases merge in order, then the mapping that holds
//! `extends:` goes on top: later wins. Errors are collected, not returned at the first one.

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::diagnostic::Diagnostic;
use super::merge::merge;
use super::node::{Entry, Node, Origin, Value};
use super::yaml;

/// The key that pulls other files into a mapping.
pub const EXTENDS: &str = "extends";

/// Load `path` with everything it extends. The tree is returned even when some layer failed,
/// so later checks can still report their own errors; `errors` says what went wrong.
pub fn load(path: &Path) -> (Option<Node>, Vec<Diagnostic>) {
    let mut loader = Loader::default();
    let node = loader.file(path, None);
    (node, loader.errors)
}

#[derive(Default)]
struct Loader {
    /// Canonical paths of the files being loaded, outermost first, to detect cycles.
    stack: Vec<(PathBuf, PathBuf)>,
    errors: Vec<Diagnostic>,
}

impl Loader {
    /// Read, parse and expand one file. `from` is the `extends` entry that named it.
    fn file(&mut self, path: &Path, from: Option<&Origin>) -> Option<Node> {
        let place = |message: String| match from {
            Some(origin) => Diagnostic::error(origin.clone(), message),
            None => Diagnostic::unplaced(message),
        };
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.errors.push(
                    place(format!("cannot read {}: {e}", path.display()))
                        .with_hint("check the path"),
                );
                return None;
            }
        };
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                // The first byte that is not UTF-8, by line and column (in characters).
                let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let before = std::str::from_utf8(valid).unwrap_or_default();
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
                let byte = e.as_bytes()[valid.len()];
                self.errors.push(
                    Diagnostic::error(
                        Origin::file(&Arc::new(path.to_path_buf()), line, column),
                        format!("byte 0x{byte:02x} (offset {}) is not UTF-8", valid.len()),
                    )
                    .with_hint("save the file as UTF-8 (it may be Latin-1 or UTF-16)"),
                );
                return None;
            }
        };
        let canonical = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if let Some(start) = self.stack.iter().position(|(c, _)| *c == canonical) {
            let chain: Vec<String> = self.stack[start..]
                .iter()
                .map(|(_, shown)| shown.display().to_string())
                .chain([path.display().to_string()])
                .collect();
            self.errors.push(
                place(format!("include cycle: {}", chain.join(" -> ")))
                    .with_hint("remove one of these `extends` entries so the files no longer include each other"),
            );
            return None;
        }
        let node = match yaml::parse_file(&text, &Arc::new(path.to_path_buf())) {
            Ok(node) => node,
            Err(e) => {
                self.errors.push(e);
                return None;
            }
        };
        self.stack.push((canonical, path.to_path_buf()));
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let node = self.expand(node, &dir);
        self.stack.pop();
        Some(node)
    }

    /// Replace every `extends:` in the tree by the merged contents of the files it names.
    fn expand(&mut self, node: Node, dir: &Path) -> Node {
        match node.value {
            Value::Map(entries) => {
                let mut bases = Vec::new();
                let mut own = Vec::new();
                for entry in entries {
                    if entry.key == EXTENDS {
                        bases.extend(self.bases(&entry.value, dir));
                    } else {
                        let value = self.expand(entry.value, dir);
                        own.push(Entry { value, ..entry });
                    }
                }
                let own = Node {
                    value: Value::Map(own),
                    ..node
                };
                let base = bases.into_iter().reduce(merge);
                match base {
                    Some(base) => merge(base, own),
                    None => own,
                }
            }
            Value::Seq(items) => Node {
                value: Value::Seq(
                    items
                        .into_iter()
                        .map(|item| self.expand(item, dir))
                        .collect(),
                ),
                ..node
            },
            value => Node { value, ..node },
        }
    }

    /// The loaded files an `extends:` value names, in order.
    fn bases(&mut self, value: &Node, dir: &Path) -> Vec<Node> {
        let names: Vec<&Node> = match &value.value {
            Value::Str(_) => vec![value],
            Value::Seq(items) => items.iter().collect(),
            _ => {
                self.errors.push(
                    Diagnostic::error(value.origin.clone(), format!("`extends` takes a path or a list of paths, found {}", value.kind_name()))
                        .with_hint("write `extends: base.yaml` or `extends: [models/t5-base.yaml, optim/adamw.yaml]`"),
                );
                return Vec::new();
            }
        };
        let mut bases = Vec::new();
        for name in names {
            let Some(rel) = name.as_str() else {
                self.errors.push(
                    Diagnostic::error(
                        name.origin.clone(),
                        format!("`extends` entries are paths, found {}", name.kind_name()),
                    )
                    .with_hint("quote the path if it looks like a number"),
                );
                continue;
            };
            let candidates = candidates(rel, dir);
            let Some(found) = candidates.iter().find(|c| c.is_file()) else {
                let tried: Vec<String> =
                    candidates.iter().map(|c| c.display().to_string()).collect();
                self.errors.push(
                    Diagnostic::error(
                        name.origin.clone(),
                        format!("cannot find `{rel}` to extend"),
                    )
                    .with_hint(format!("looked for {}", tried.join(", "))),
                );
                continue;
            };
            let Some(base) = self.file(found, Some(&name.origin)) else {
                continue;
            };
            match base.value {
                Value::Map(_) => bases.push(base),
                Value::Null => {}
                _ => self.errors.push(
                    Diagnostic::error(
                        base.origin.clone(),
                        format!(
                            "a file used with `extends` must hold a mapping, found {}",
                            base.kind_name()
                        ),
                    )
                    .with_note(name.origin.clone(), "extended here"),
                ),
            }
        }
        bases
    }
}

/// Where `extends: rel` may point: beside the file, then in `configs/` of each enclosing folder;
/// each with and without a `.yaml` suffix.
fn candidates(rel: &str, dir: &Path) -> Vec<PathBuf> {
    let mut roots = vec![dir.to_path_buf()];
    roots.extend(dir.ancestors().map(|a| a.join("configs")));
    if dir.as_os_str().is_empty() || dir.is_relative() {
        roots.push(PathBuf::from("configs"));
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for root in roots {
        for name in [rel.to_string(), format!("{rel}.yaml")] {
            let path = clean(&root.join(&name));
            if !out.contains(&path) {
                out.push(path);
            }
            if rel.ends_with(".yaml") || rel.ends_with(".yml") {
                break;
            }
        }
    }
    out
}

/// Resolve `.` and `..` lexically, so shown paths stay short and relative.
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

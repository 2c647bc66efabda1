//! Command-line overrides: `KEY.PATH=VALUE` after the recipe, as in Hydra and torchtune.
//!
//! The value is read as YAML (`3e-4`, `true`, `[0.9, 0.95]`, `{rank: 8}`), then typed by the
//! schema like any file value; an unknown key path is reported at its column in the override.
//! An override replaces the value at its path whole; `extends` layers merge.

use std::sync::Arc;

use super::diagnostic::Diagnostic;
use super::node::{Entry, Node, Origin, Value};
use super::yaml;

/// One parsed override.
#[derive(Clone, Debug)]
pub struct Override {
    /// The key path, each segment with its position in the override text.
    pub path: Vec<(String, Origin)>,
    pub value: Node,
}

impl Override {
    /// Parse the `index`-th override (1-based) `text`.
    pub fn parse(index: usize, text: &str) -> Result<Override, Diagnostic> {
        let shared: Arc<str> = Arc::from(text);
        let at = |col: usize| Origin::Override {
            index,
            text: shared.clone(),
            col,
        };
        let Some((key, value)) = text.split_once('=') else {
            return Err(
                Diagnostic::error(at(1), format!("override `{text}` has no `=`")).with_hint(
                    "write overrides as KEY.PATH=VALUE, such as training.optimizer.lr=3e-4",
                ),
            );
        };
        let mut path = Vec::new();
        let mut col = 1;
        for segment in key.split('.') {
            let name = segment.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(Diagnostic::error(
                    at(col),
                    format!("override key `{key}` has an empty or spaced segment"),
                )
                .with_hint("write the key as dotted names, such as training.optimizer.lr"));
            }
            path.push((name.to_string(), at(col)));
            col += segment.chars().count() + 1;
        }
        let value_col = key.chars().count() + 1;
        let value = yaml::parse_with(value, &|_line, c| at(value_col + c)).map_err(|e| {
            let hint = "quote the value if it should be text, such as name='a: b'";
            e.with_hint(hint)
        })?;
        Ok(Override { path, value })
    }

    /// Set the value in `root`, creating the mappings on the way. An index past the end of a
    /// list is refused at its own column: the list cannot grow a hole.
    pub fn apply(self, root: &mut Node) -> Result<(), Diagnostic> {
        let mut node = root;
        for (i, (name, origin)) in self.path.iter().enumerate() {
            if !matches!(node.value, Value::Map(_) | Value::Seq(_)) {
                *node = Node::new(Value::Map(Vec::new()), origin.clone());
            }
            let index = match &node.value {
                Value::Seq(items) => match name.parse::<usize>() {
                    Ok(k) if k < items.len() => Some(k),
                    _ => return Err(past_the_end(&self.path[..i], name, origin, items.len())),
                },
                _ => None,
            };
            let slot = match index {
                Some(k) => match &mut node.value {
                    Value::Seq(items) => &mut items[k],
                    _ => unreachable!("an index is only found in a list"),
                },
                None => insert(node, name, origin),
            };
            if i + 1 == self.path.len() {
                // An override replaces the value at its path (layers of files merge instead).
                let old = std::mem::replace(slot, Node::new(Value::Null, origin.clone()));
                let mut new = self.value;
                new.replaced = old.replaced;
                if !(matches!(old.value, Value::Null) && old.origin == *origin) {
                    new.replaced.push(old.origin);
                }
                *slot = new;
                return Ok(());
            }
            node = slot;
        }
        Ok(())
    }
}

/// The error for `name` used on a list of `len` items at `list`.
fn past_the_end(list: &[(String, Origin)], name: &str, origin: &Origin, len: usize) -> Diagnostic {
    let list: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
    let list = list.join(".");
    let message = match name.parse::<usize>() {
        Ok(k) => format!("`{list}` has {len} item(s); index {k} is past its end"),
        Err(_) => format!("`{list}` is a list; `{name}` is not an index of it"),
    };
    let indices = match len {
        0 => "it is empty".to_string(),
        _ => format!("its indices run 0 to {}", len - 1),
    };
    Diagnostic::error(origin.clone(), message).with_hint(format!(
        "{indices}; to set the whole list write {list}=[a, b]"
    ))
}

/// The value node for `name` in a mapping node, created empty if absent.
fn insert<'a>(node: &'a mut Node, name: &str, origin: &Origin) -> &'a mut Node {
    let Value::Map(entries) = &mut node.value else {
        unreachable!("insert is called on mappings only")
    };
    let index = match entries.iter().position(|e| e.key == name) {
        Some(index) => index,
        None => {
            entries.push(Entry {
                key: name.to_string(),
                key_origin: origin.clone(),
                value: Node::new(Value::Null, origin.clone()),
            });
            entries.len() - 1
        }
    };
    &mut entries[index].value
}

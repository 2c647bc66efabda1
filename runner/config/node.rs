//! The layered configuration tree: YAML values that remember where they were set.
//!
//! Every scalar, sequence, mapping and key carries an [`Origin`]: the file position or the
//! command-line override that set it. Merging keeps the origins of the layers a value
//! replaced, so `runner explain` can show the whole story of a key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a value (or a key) came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    /// A position in a YAML file; line and column are 1-based.
    File {
        path: Arc<PathBuf>,
        line: usize,
        col: usize,
    },
    /// The `index`-th command-line override (1-based) and the 1-based column in its text.
    Override {
        index: usize,
        text: Arc<str>,
        col: usize,
    },
}

impl Origin {
    pub fn file(path: &Arc<PathBuf>, line: usize, col: usize) -> Origin {
        Origin::File {
            path: path.clone(),
            line,
            col,
        }
    }

    /// The start of a file: where file-level problems are reported.
    pub fn start_of(path: &Path) -> Origin {
        Origin::File {
            path: Arc::new(path.to_path_buf()),
            line: 1,
            col: 1,
        }
    }

    /// The file this origin points into, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Origin::File { path, .. } => Some(path),
            Origin::Override { .. } => None,
        }
    }

    /// The same place shifted `by` columns to the right (used inside override texts).
    pub fn shifted(&self, by: usize) -> Origin {
        let mut o = self.clone();
        match &mut o {
            Origin::File { col, .. } | Origin::Override { col, .. } => *col += by,
        }
        o
    }

    /// A short human description for `runner explain`.
    pub fn describe(&self) -> String {
        match self {
            Origin::File { .. } => self.to_string(),
            Origin::Override { index, text, .. } => format!("override {index} `{text}`"),
        }
    }
}

/// `file:line:col`, or `<override N>:1:col`: the compiler-style prefix of a diagnostic.
impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line, col } => write!(f, "{}:{line}:{col}", path.display()),
            Origin::Override { index, col, .. } => write!(f, "<override {index}>:1:{col}"),
        }
    }
}

/// A YAML value with its origin.
#[derive(Clone, Debug)]
pub struct Node {
    pub value: Value,
    pub origin: Origin,
    /// The source text of a plain (unquoted) scalar, so a string-typed key may take `2024`.
    pub raw: Option<String>,
    /// Origins of earlier layers whose value this one replaced, oldest first.
    pub replaced: Vec<Origin>,
}

#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// One `key: value` pair of a mapping; the key keeps its own origin for error positions.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub key_origin: Origin,
    pub value: Node,
}

impl Node {
    pub fn new(value: Value, origin: Origin) -> Node {
        Node {
            value,
            origin,
            raw: None,
            replaced: Vec::new(),
        }
    }

    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The entry for `key` when this node is a mapping.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries()?.iter().find(|e| e.key == key)
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match &mut self.value {
            Value::Map(entries) => entries
                .iter_mut()
                .find(|e| e.key == key)
                .map(|e| &mut e.value),
            _ => None,
        }
    }

    /// The node at a dotted path of keys (sequence items by index).
    pub fn at(&self, path: &[&str]) -> Option<&Node> {
        let mut node = self;
        for segment in path {
            node = match &node.value {
                Value::Map(_) => node.get(segment)?,
                Value::Seq(items) => items.get(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// What kind of YAML value this is, as error messages name it.
    pub fn kind_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// A short rendering of a scalar for messages (`"abc"`, `3`, `a list`).
    pub fn preview(&self) -> String {
        match &self.value {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(x) => x.to_string(),
            Value::Str(s) => format!("{s:?}"),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }

    /// The JSON form of the tree, the input of serde typing.
    /// Non-finite floats have no JSON form; the schema check rejects them first.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(x) => serde_json::Number::from_f64(*x).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }
}

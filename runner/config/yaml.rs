//! YAML text to a [`Node`] tree with a position on every key and value.
//!
//! saphyr-parser gives events with spans; this builds the tree itself so that each node keeps
//! its line and column (serde-based YAML crates drop them). Scalars are resolved by the
//! YAML 1.2 core schema: `1e-4` is a number, `yes` is a string.

use std::collections::HashMap;

/// Values aliases may copy into one document, in all: far beyond any recipe, and a bound on
/// what a "billion laughs" file of nested aliases can cost (each level multiplying the last).
pub const MAX_ALIASED_VALUES: usize = 100_000;
/// The largest YAML text read, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 16 << 20;
use std::path::PathBuf;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

use super::diagnostic::Diagnostic;
use super::node::{Entry, Node, Origin, Value};

/// Parse one YAML document. `origin_at` turns a (line, column) of the text into an [`Origin`],
/// so the same code parses files and command-line override values.
pub fn parse_with(
    text: &str,
    origin_at: &dyn Fn(usize, usize) -> Origin,
) -> Result<Node, Diagnostic> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(Diagnostic::error(
            origin_at(1, 1),
            format!(
                "the document has {} bytes, more than the {} a recipe or sweep may have",
                text.len(),
                MAX_DOCUMENT_BYTES
            ),
        )
        .with_hint("a recipe names its data files; it does not hold the data"));
    }
    let mut builder = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        documents: 0,
        aliased: 0,
        origin_at,
    };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| {
            let mark = e.marker();
            let (line, col) = (mark.line(), mark.col() + 1);
            let message = format!("YAML syntax error: {}", e.info());
            match e
                .info()
                .contains("tab")
                .then(|| first_tab_from(text, line))
                .flatten()
            {
                // The scanner stops where the scalar before the tab ended, often on the line
                // above; the tab itself is what to fix.
                Some((line, col)) => Diagnostic::error(origin_at(line, col), message)
                    .with_hint("YAML indents with spaces only; replace this tab with spaces"),
                None => Diagnostic::error(origin_at(line, col), message)
                    .with_hint("check the indentation and quoting around this position"),
            }
        })?;
        builder.event(event, span)?;
    }
    Ok(builder
        .root
        .unwrap_or_else(|| Node::new(Value::Null, origin_at(1, 1))))
}

/// The line and column (1-based) of the first tab on `line` or after it.
fn first_tab_from(text: &str, line: usize) -> Option<(usize, usize)> {
    text.lines()
        .enumerate()
        .skip(line.saturating_sub(1))
        .find_map(|(i, l)| Some((i + 1, l.chars().position(|c| c == '\t')? + 1)))
}

/// Parse a YAML file's text; positions point into `path`.
pub fn parse_file(text: &str, path: &Arc<PathBuf>) -> Result<Node, Diagnostic> {
    parse_with(text, &|line, col| Origin::file(path, line, col))
}

enum Frame {
    Seq {
        items: Vec<Node>,
        origin: Origin,
        anchor: usize,
    },
    Map {
        entries: Vec<Entry>,
        /// Where each key was first set, to find a duplicate in constant time.
        seen: HashMap<String, Origin>,
        origin: Origin,
        anchor: usize,
        key: Option<(String, Origin)>,
    },
}

struct Builder<'a> {
    stack: Vec<Frame>,
    /// Each anchored node, and how many values it holds.
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    documents: usize,
    /// Values copied by aliases so far.
    aliased: usize,
    origin_at: &'a dyn Fn(usize, usize) -> Origin,
}

impl Builder<'_> {
    fn origin(&self, span: &Span) -> Origin {
        (self.origin_at)(span.start.line(), span.start.col() + 1)
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), Diagnostic> {
        let origin = self.origin(&span);
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(Diagnostic::error(
                        origin,
                        "a recipe file holds one YAML document, found a second",
                    )
                    .with_hint(
                        "remove the `---` separator, or split the documents into separate files",
                    ));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let node = scalar(&text, style, tag.as_deref(), origin.clone())
                    .map_err(|message| Diagnostic::error(origin, message))?;
                self.complete(node, anchor)?;
            }
            Event::Alias(id) => {
                let (node, size) = self.anchors.get(&id).ok_or_else(|| {
                    Diagnostic::error(origin.clone(), "alias to an unknown anchor")
                        .with_hint("define the anchor with `&name` before using `*name`")
                })?;
                self.aliased += size;
                if self.aliased > MAX_ALIASED_VALUES {
                    return Err(Diagnostic::error(
                        origin,
                        format!("aliases copy more than {MAX_ALIASED_VALUES} values into this document"),
                    )
                    .with_hint("aliases nested in aliases multiply; write the values out, or use `extends:`"));
                }
                let node = node.clone();
                self.complete(node, 0)?;
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                items: Vec::new(),
                origin,
                anchor,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                entries: Vec::new(),
                seen: HashMap::new(),
                origin,
                anchor,
                key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq {
                        items,
                        origin,
                        anchor,
                    }) => (Node::new(Value::Seq(items), origin), anchor),
                    Some(Frame::Map {
                        entries,
                        origin,
                        anchor,
                        ..
                    }) => (Node::new(Value::Map(entries), origin), anchor),
                    None => return Ok(()),
                };
                self.complete(node, anchor)?;
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
        Ok(())
    }

    /// A finished node goes into its parent: a sequence item, a mapping key, or a mapping value.
    fn complete(&mut self, node: Node, anchor: usize) -> Result<(), Diagnostic> {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), values(&node)));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries, seen, key, ..
            }) => match key.take() {
                None => {
                    let name = match (&node.value, &node.raw) {
                        (Value::Str(s), _) => s.clone(),
                        (_, Some(raw)) => raw.clone(),
                        _ => {
                            return Err(Diagnostic::error(
                                node.origin,
                                "a mapping key must be a plain name",
                            )
                            .with_hint("write keys as plain words, such as `learning_rate:`"))
                        }
                    };
                    if name == "<<" {
                        return Err(Diagnostic::error(
                            node.origin,
                            "YAML merge keys (`<<`) are not supported",
                        )
                        .with_hint("use `extends:` to build on another file or mapping"));
                    }
                    if let Some(first) = seen.get(&name) {
                        return Err(Diagnostic::error(node.origin, format!("duplicate key `{name}`"))
                            .with_hint("remove one of the two; a later file or override can replace a value instead")
                            .with_note(first.clone(), "first set here"));
                    }
                    seen.insert(name.clone(), node.origin.clone());
                    *key = Some((name, node.origin));
                }
                Some((name, key_origin)) => entries.push(Entry {
                    key: name,
                    key_origin,
                    value: node,
                }),
            },
        }
        Ok(())
    }
}

/// How many values a node holds, itself included.
fn values(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(values).sum(),
        Value::Map(entries) => entries.iter().map(|e| values(&e.value)).sum(),
        _ => 0,
    }
}

/// Resolve a scalar by the YAML 1.2 core schema (plain style only; quoted scalars are strings).
fn scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    origin: Origin,
) -> Result<Node, String> {
    if let Some(tag) = tag {
        if tag.is_yaml_core_schema() && tag.suffix == "str" {
            return Ok(Node::new(Value::Str(text.to_string()), origin));
        }
    }
    if style != ScalarStyle::Plain {
        return Ok(Node::new(Value::Str(text.to_string()), origin));
    }
    let value = match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Value::Float(f64::NAN),
        _ if is_core_int(text) => match text.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => return Err(format!("integer `{text}` does not fit in 64 bits")),
        },
        _ if is_core_float(text) => Value::Float(
            text.parse::<f64>()
                .map_err(|e| format!("bad number `{text}`: {e}"))?,
        ),
        _ => Value::Str(text.to_string()),
    };
    let mut node = Node::new(value, origin);
    node.raw = Some(text.to_string());
    Ok(node)
}

/// `[-+]?[0-9]+`
fn is_core_int(s: &str) -> bool {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_core_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => {
            all_digits(int)
                && all_digits(f)
                && !(int.is_empty() && f.is_empty())
                && (!int.is_empty() || !f.is_empty())
        }
        None => !int.is_empty() && all_digits(int),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exponent_ok && (frac.is_some() || exponent.is_some())
}

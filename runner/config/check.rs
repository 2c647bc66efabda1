//! Checking a configuration tree against the JSON Schema of the typed recipe.
//!
//! The Rust types are the one source of truth: schemars turns them into a JSON Schema, and
//! this walks the located tree against it, so every error has the line and column of the key
//! or value that caused it, and all errors come out in one pass (serde stops at the first).
//! It handles the subset schemars emits: `$ref`, `type`, `properties`, `required`,
//! `additionalProperties`, `items`, `minItems`/`maxItems`, `enum`/`const`, `anyOf`/`oneOf`
//! (options, string enums, and enums tagged by a `const` key), numeric bounds and formats.

use serde_json::Value as J;

use super::diagnostic::{did_you_mean, Diagnostic};
use super::node::{Entry, Node, Origin, Value};

/// A JSON Schema document with its `$defs`.
pub struct Schema {
    root: J,
}

/// Whether required keys must all be present (a recipe) or may be missing (a fragment that a
/// recipe extends).
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Mode {
    Complete,
    Fragment,
}

impl Schema {
    pub fn new(root: J) -> Schema {
        Schema { root }
    }

    /// The JSON Schema (draft 2020-12) whose root is `oneOf` the documents that `documents`
    /// generates from Rust types (schemars), with every definition they use under `$defs`.
    pub fn of_documents(
        title: &str,
        description: &str,
        documents: impl FnOnce(&mut schemars::SchemaGenerator) -> Vec<schemars::Schema>,
    ) -> Schema {
        let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
        let documents = documents(&mut generator);
        let defs = generator.take_definitions(true);
        Schema::new(serde_json::json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": title,
            "description": description,
            "oneOf": documents,
            "$defs": defs,
        }))
    }

    pub fn json(&self) -> &J {
        &self.root
    }

    /// The definition named `name` in `$defs`.
    pub fn def(&self, name: &str) -> Option<&J> {
        self.root.get("$defs")?.get(name)
    }

    /// Names of all definitions, for checking fragments against each.
    pub fn def_names(&self) -> Vec<&str> {
        self.root
            .get("$defs")
            .and_then(J::as_object)
            .map(|defs| defs.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Check `node` against `schema` (a part of this document). Plain scalars that a string key
    /// expects (`name: 2024`) are turned into strings in place.
    pub fn check(&self, node: &mut Node, schema: &J, mode: Mode, at: &Origin) -> Vec<Diagnostic> {
        let mut walk = Walk {
            schema: self,
            mode,
            path: Vec::new(),
            errors: Vec::new(),
            more: 0,
        };
        walk.node(node, schema, at);
        if walk.more > 0 {
            walk.errors.push(Diagnostic::error(
                at.clone(),
                format!("… and {} more problems like those above", walk.more),
            ));
        }
        walk.errors
    }

    /// Follow `$ref`s to the schema they name.
    pub fn resolve<'a>(&'a self, mut schema: &'a J) -> &'a J {
        while let Some(reference) = schema.get("$ref").and_then(J::as_str) {
            let name = reference.trim_start_matches("#/$defs/");
            match self.def(name) {
                Some(def) => schema = def,
                None => break,
            }
        }
        schema
    }

    /// The schema of the key at `path` below `schema`, looking through options and tagged enums.
    pub fn property<'a>(&'a self, schema: &'a J, key: &str) -> Option<&'a J> {
        let schema = self.resolve(schema);
        if let Some(found) = schema.get("properties").and_then(|p| p.get(key)) {
            return Some(found);
        }
        if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            return Some(extra);
        }
        alternatives(schema)
            .into_iter()
            .find_map(|alt| self.property(alt, key))
    }

    /// The property names a mapping schema allows (union over its alternatives).
    fn keys<'a>(&'a self, schema: &'a J) -> Vec<&'a str> {
        let schema = self.resolve(schema);
        let mut keys: Vec<&str> = schema
            .get("properties")
            .and_then(J::as_object)
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        for alt in alternatives(schema) {
            for key in self.keys(alt) {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        keys
    }

    /// Dotted paths below `schema` (up to `depth` levels) whose last key is `key`: for
    /// "`lr` belongs under `training.optimizer`".
    fn find_key(&self, schema: &J, key: &str, depth: usize) -> Vec<String> {
        let mut found = Vec::new();
        if depth == 0 {
            return found;
        }
        for name in self.keys(schema) {
            let Some(sub) = self.property(schema, name) else {
                continue;
            };
            if self.keys(sub).contains(&key) {
                found.push(name.to_string());
            }
            for deeper in self.find_key(sub, key, depth - 1) {
                found.push(format!("{name}.{deeper}"));
            }
        }
        found
    }
}

/// The `anyOf`/`oneOf` branches of a schema.
fn alternatives(schema: &J) -> Vec<&J> {
    ["anyOf", "oneOf"]
        .iter()
        .filter_map(|k| schema.get(*k).and_then(J::as_array))
        .flatten()
        .collect()
}

/// The string values a schema allows, when it is a string enum or constant.
fn string_choices(schema: &J) -> Option<Vec<&str>> {
    if let Some(c) = schema.get("const") {
        return c.as_str().map(|s| vec![s]);
    }
    let values = schema.get("enum")?.as_array()?;
    values.iter().map(J::as_str).collect()
}

fn types(schema: &J) -> Vec<&str> {
    match schema.get("type") {
        Some(J::String(t)) => vec![t.as_str()],
        Some(J::Array(ts)) => ts.iter().filter_map(J::as_str).collect(),
        _ => Vec::new(),
    }
}

fn is_null_schema(schema: &J) -> bool {
    types(schema) == ["null"]
}

fn type_phrase(t: &str) -> &'static str {
    match t {
        "integer" => "an integer",
        "number" => "a number",
        "string" => "a string",
        "boolean" => "a boolean",
        "array" => "a list",
        "object" => "a mapping",
        "null" => "null",
        _ => "a value",
    }
}

fn type_hint(t: &str, node: &Node) -> String {
    match (t, &node.value) {
        ("boolean", Value::Str(s))
            if ["yes", "no", "on", "off", "y", "n"].contains(&s.to_lowercase().as_str()) =>
        {
            format!("YAML 1.2 reads `{s}` as a string: write true or false")
        }
        ("integer", Value::Float(_)) => "write a whole number, such as 8".into(),
        ("integer", _) => "write a whole number, such as 8".into(),
        ("number", _) => "write a number, such as 3.0e-4".into(),
        ("boolean", _) => "write true or false".into(),
        ("string", _) => "write text; quote it if it contains `:` or `#`".into(),
        ("array", _) => "write a list, such as [a, b] or one `- item` per line".into(),
        ("object", _) => "write nested `key: value` lines indented under this key".into(),
        _ => "see `runner schema` for the expected form".into(),
    }
}

/// Inclusive bounds implied by a schemars integer format.
fn format_bounds(format: &str) -> Option<(f64, f64)> {
    Some(match format {
        "uint8" => (0.0, u8::MAX as f64),
        "uint16" => (0.0, u16::MAX as f64),
        "uint32" => (0.0, u32::MAX as f64),
        "uint64" | "uint" => (0.0, u64::MAX as f64),
        "int8" => (i8::MIN as f64, i8::MAX as f64),
        "int16" => (i16::MIN as f64, i16::MAX as f64),
        "int32" => (i32::MIN as f64, i32::MAX as f64),
        _ => return None,
    })
}

/// Problems reported one by one; beyond them a file gets one line counting the rest (a file
/// of 100,000 unknown keys would otherwise cost a did-you-mean search each).
const MAX_REPORTED: usize = 100;

struct Walk<'a> {
    schema: &'a Schema,
    mode: Mode,
    path: Vec<String>,
    errors: Vec<Diagnostic>,
    /// Problems found beyond `MAX_REPORTED`.
    more: usize,
}

impl Walk<'_> {
    fn dotted(&self) -> String {
        if self.path.is_empty() {
            "the recipe".into()
        } else {
            format!("`{}`", self.path.join("."))
        }
    }

    fn error(&mut self, origin: &Origin, message: String, hint: String) {
        if !self.counted_only() {
            self.errors
                .push(Diagnostic::error(origin.clone(), message).with_hint(hint));
        }
    }

    /// True, and counted, once `MAX_REPORTED` problems are reported.
    fn counted_only(&mut self) -> bool {
        let full = self.errors.len() >= MAX_REPORTED;
        self.more += usize::from(full);
        full
    }

    /// `at` is where to report problems of the node as a whole (its key, if it has one).
    fn node(&mut self, node: &mut Node, schema: &J, at: &Origin) {
        let schema = self.schema.resolve(schema);
        if schema == &J::Bool(true)
            || schema.as_object().is_some_and(|o| {
                o.keys()
                    .all(|k| k == "description" || k == "default" || k == "title")
            })
        {
            return;
        }
        let alts = alternatives(schema);
        if !alts.is_empty() {
            return self.alternatives(node, &alts, at);
        }
        if let Some(choices) = string_choices(schema) {
            return self.choice(node, &choices);
        }
        let types = types(schema);
        if types.is_empty() {
            return;
        }
        if schema.get("format").and_then(J::as_str) == Some("path") {
            if let Some(raw) = plain_scalar_text(node) {
                // `validation: true` is far likelier a slip than a file named "true".
                let message = format!(
                    "{} expects a file path, found {}",
                    self.dotted(),
                    node.preview_typed()
                );
                let hint =
                    format!("write the file's path; quote it ('{raw}') if a file has that name");
                return self.error(&node.origin.clone(), message, hint);
            }
        }
        coerce_to_string(node, &types);
        let matched = types.iter().copied().find(|t| matches_type(node, t));
        let Some(matched) = matched else {
            let expected: Vec<&str> = types
                .iter()
                .filter(|t| **t != "null")
                .map(|t| type_phrase(t))
                .collect();
            let message = format!(
                "{} expects {}, found {}",
                self.dotted(),
                expected.join(" or "),
                node.preview_typed()
            );
            let hint = type_hint(types[0], node);
            return self.error(&node.origin.clone(), message, hint);
        };
        match matched {
            "integer" | "number" => self.number(node, schema),
            "array" => self.array(node, schema),
            "object" => self.object(node, schema, at),
            _ => {}
        }
    }

    fn number(&mut self, node: &Node, schema: &J) {
        let x = match node.value {
            Value::Int(i) => i as f64,
            Value::Float(x) => x,
            _ => return,
        };
        if !x.is_finite() {
            let message = format!(
                "{} must be a finite number, found {}",
                self.dotted(),
                node.preview()
            );
            return self.error(
                &node.origin,
                message,
                "use null to switch the setting off, where it may be off".into(),
            );
        }
        let mut low = schema.get("minimum").and_then(J::as_f64);
        let mut high = schema.get("maximum").and_then(J::as_f64);
        if let Some((lo, hi)) = schema
            .get("format")
            .and_then(J::as_str)
            .and_then(format_bounds)
        {
            low = Some(low.map_or(lo, |l| l.max(lo)));
            high = Some(high.map_or(hi, |h| h.min(hi)));
        }
        if let Some(low) = low.filter(|low| x < *low) {
            let message = format!(
                "{} must be at least {low}, found {}",
                self.dotted(),
                node.preview()
            );
            self.error(
                &node.origin,
                message,
                format!("use a value of {low} or more"),
            );
        } else if let Some(high) = high.filter(|high| x > *high) {
            let message = format!(
                "{} must be at most {high}, found {}",
                self.dotted(),
                node.preview()
            );
            self.error(
                &node.origin,
                message,
                format!("use a value of {high} or less"),
            );
        }
    }

    fn array(&mut self, node: &mut Node, schema: &J) {
        let Value::Seq(items) = &mut node.value else {
            return;
        };
        let n = items.len() as u64;
        let min = schema.get("minItems").and_then(J::as_u64);
        let max = schema.get("maxItems").and_then(J::as_u64);
        if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
            let wanted = match (min, max) {
                (Some(a), Some(b)) if a == b => format!("exactly {a}"),
                (Some(a), Some(b)) => format!("{a} to {b}"),
                (Some(a), None) => format!("at least {a}"),
                (None, Some(b)) => format!("at most {b}"),
                (None, None) => unreachable!("checked above"),
            };
            let message = format!("{} takes {wanted} items, found {n}", self.dotted());
            self.error(
                &node.origin,
                message,
                format!("write a list of {wanted} items"),
            );
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter_mut().enumerate() {
                self.path.push(i.to_string());
                let at = item.origin.clone();
                self.node(item, item_schema, &at);
                self.path.pop();
            }
        }
    }

    fn object(&mut self, node: &mut Node, schema: &J, at: &Origin) {
        let properties = schema.get("properties").and_then(J::as_object);
        let extra = schema.get("additionalProperties");
        let Value::Map(entries) = &mut node.value else {
            return;
        };
        for entry in entries.iter_mut() {
            let sub = properties
                .and_then(|p| p.get(&entry.key))
                .or(extra.filter(|e| e.is_object()));
            match sub {
                Some(sub) => {
                    self.path.push(entry.key.clone());
                    self.node(&mut entry.value, sub, &entry.key_origin);
                    self.path.pop();
                }
                None if extra == Some(&J::Bool(false)) && self.counted_only() => {}
                None if extra == Some(&J::Bool(false)) => {
                    let names: Vec<&str> = properties
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    let here = if self.path.is_empty() {
                        "at the top level".to_string()
                    } else {
                        format!("in {}", self.dotted())
                    };
                    let message = format!("unknown key `{}` {here}", entry.key);
                    let hint = match did_you_mean(&entry.key, names.iter().copied()) {
                        Some(near) => format!("did you mean `{near}`?"),
                        None => match self.schema.find_key(schema, &entry.key, 3).first() {
                            Some(path) => format!(
                                "`{}` belongs under `{}`",
                                entry.key,
                                self.path
                                    .iter()
                                    .cloned()
                                    .chain([path.clone()])
                                    .collect::<Vec<_>>()
                                    .join(".")
                            ),
                            None => format!("valid keys here: {}", names.join(", ")),
                        },
                    };
                    self.error(&entry.key_origin, message, hint);
                }
                None => {}
            }
        }
        if self.mode == Mode::Fragment {
            return;
        }
        let required = schema
            .get("required")
            .and_then(J::as_array)
            .into_iter()
            .flatten()
            .filter_map(J::as_str);
        for key in required {
            if entries.iter().any(|e| e.key == key) {
                continue;
            }
            let full = self
                .path
                .iter()
                .map(String::as_str)
                .chain([key])
                .collect::<Vec<_>>()
                .join(".");
            let sub = properties
                .and_then(|p| p.get(key))
                .map(|s| self.schema.resolve(s));
            let what = sub
                .and_then(|s| s.get("description"))
                .and_then(J::as_str)
                .map(|d| format!(" ({})", first_sentence(d)))
                .unwrap_or_default();
            let under = if self.path.is_empty() {
                String::new()
            } else {
                format!(" under `{}`", self.path.join("."))
            };
            let message = format!("missing required key `{full}`");
            self.error(at, message, format!("add `{key}:`{under}{what}"));
        }
    }

    /// A string that must be one of a fixed set.
    fn choice(&mut self, node: &mut Node, choices: &[&str]) {
        coerce_to_string(node, &["string"]);
        let found = node.as_str().map(str::to_string);
        if found.as_deref().is_some_and(|s| choices.contains(&s)) {
            return;
        }
        let listed = choices.join(", ");
        let message = format!(
            "{} must be one of {listed}; found {}",
            self.dotted(),
            node.preview_typed()
        );
        let hint = match found
            .as_deref()
            .and_then(|s| did_you_mean(s, choices.iter().copied()))
        {
            Some(near) => format!("did you mean `{near}`?"),
            None => format!("choose one of {listed}"),
        };
        self.error(&node.origin.clone(), message, hint);
    }

    fn alternatives(&mut self, node: &mut Node, alts: &[&J], at: &Origin) {
        let resolved: Vec<&J> = alts.iter().map(|a| self.schema.resolve(a)).collect();
        if matches!(node.value, Value::Null)
            && resolved
                .iter()
                .any(|a| is_null_schema(a) || types(a).contains(&"null"))
        {
            return;
        }
        let real: Vec<&J> = resolved
            .iter()
            .copied()
            .filter(|a| !is_null_schema(a))
            .collect();
        if let [only] = real.as_slice() {
            return self.node(node, only, at);
        }
        if let Some(choices) = real
            .iter()
            .map(|a| string_choices(a))
            .collect::<Option<Vec<_>>>()
        {
            let all: Vec<&str> = choices.into_iter().flatten().collect();
            return self.choice(node, &all);
        }
        if let Some(tag) = discriminator(&real) {
            return self.tagged(node, &real, tag, at);
        }
        self.best_of(node, &real, at);
    }

    /// An enum tagged by a key (`type: lora`): the tag picks the branch to check against.
    fn tagged(&mut self, node: &mut Node, alts: &[&J], tag: &str, at: &Origin) {
        let tags: Vec<&str> = alts
            .iter()
            .filter_map(|a| {
                a["properties"][tag]
                    .get("const")
                    .and_then(J::as_str)
                    .or_else(|| a["properties"][tag]["enum"][0].as_str())
            })
            .collect();
        let Value::Map(_) = node.value else {
            let message = format!(
                "{} expects a mapping with `{tag}: {}`, found {}",
                self.dotted(),
                tags.join(" | "),
                node.preview_typed()
            );
            return self.error(
                &node.origin.clone(),
                message,
                format!("write `{tag}: {}` and its settings as nested keys", tags[0]),
            );
        };
        let chosen = node.get(tag).map(|t| {
            (
                t.as_str().map(str::to_string),
                t.origin.clone(),
                t.preview_typed(),
            )
        });
        match chosen {
            None if self.mode == Mode::Fragment => self.best_of(node, alts, at),
            // `tpye: lora`: the misspelt tag is reported at its own line, and the section is
            // checked as the branch its value names, so every other error comes out too.
            None if self.misspelt_tag(node, alts, tag, &tags, at) => {}
            None => {
                let message = format!(
                    "missing required key `{}`",
                    self.path
                        .iter()
                        .map(String::as_str)
                        .chain([tag])
                        .collect::<Vec<_>>()
                        .join(".")
                );
                self.error(
                    at,
                    message,
                    format!("add `{tag}:` with one of {}", tags.join(", ")),
                );
            }
            Some((value, origin, preview)) => {
                match tags.iter().position(|t| Some(*t) == value.as_deref()) {
                    Some(i) => self.node(node, alts[i], at),
                    None => {
                        let message = format!(
                            "`{}` must be one of {}; found {preview}",
                            self.path
                                .iter()
                                .map(String::as_str)
                                .chain([tag])
                                .collect::<Vec<_>>()
                                .join("."),
                            tags.join(", ")
                        );
                        let near = value
                            .as_deref()
                            .and_then(|v| did_you_mean(v, tags.iter().copied()));
                        let hint = match near {
                            Some(near) => format!("did you mean `{near}`?"),
                            None => format!("choose one of {}", tags.join(", ")),
                        };
                        self.error(&origin, message, hint);
                        // The rest is checked as the branch meant, so its errors come out too.
                        if let Some(i) = near.and_then(|n| tags.iter().position(|t| *t == n)) {
                            let mut trial = node.clone();
                            if let Some(t) = trial.get_mut(tag) {
                                t.value = Value::Str(tags[i].to_string());
                            }
                            self.node(&mut trial, alts[i], at);
                        }
                    }
                }
            }
        }
    }

    /// Reports the keys of a tag-less tagged section that no branch has, each at its line with
    /// a did-you-mean over all branches' keys; when one of them is the tag misspelt, checks the
    /// section as the branch its value names and returns true (else the tag is missing).
    fn misspelt_tag(
        &mut self,
        node: &Node,
        alts: &[&J],
        tag: &str,
        tags: &[&str],
        at: &Origin,
    ) -> bool {
        let mut keys: Vec<&str> = alts
            .iter()
            .filter_map(|a| a.get("properties").and_then(J::as_object))
            .flat_map(|p| p.keys().map(String::as_str))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let Value::Map(entries) = &node.value else {
            return false;
        };
        let here = format!("in {}", self.dotted());
        let mut misspelt = None;
        for e in entries.iter().filter(|e| !keys.contains(&e.key.as_str())) {
            let near = did_you_mean(&e.key, keys.iter().copied());
            let hint = match near {
                Some(near) => format!("did you mean `{near}`?"),
                None => format!("valid keys here: {}", keys.join(", ")),
            };
            self.error(
                &e.key_origin,
                format!("unknown key `{}` {here}", e.key),
                hint,
            );
            if near == Some(tag) {
                misspelt = Some(e);
            }
        }
        let Some(misspelt) = misspelt else {
            return false;
        };
        // The rest is checked as the branch the value names, with the tag spelt as meant and
        // the other unknown keys (reported above) left out.
        let branch = misspelt
            .value
            .as_str()
            .and_then(|v| tags.iter().position(|t| *t == v));
        if let Some(i) = branch {
            let meant: Vec<Entry> = entries
                .iter()
                .filter(|e| e.key == misspelt.key || keys.contains(&e.key.as_str()))
                .map(|e| match e.key == misspelt.key {
                    true => Entry {
                        key: tag.to_string(),
                        ..e.clone()
                    },
                    false => e.clone(),
                })
                .collect();
            let mut trial = Node::new(Value::Map(meant), node.origin.clone());
            self.node(&mut trial, alts[i], at);
        }
        true
    }

    /// Untagged alternatives: the first that fits, or else the errors of the closest one.
    fn best_of(&mut self, node: &mut Node, alts: &[&J], at: &Origin) {
        let mut best: Option<(Vec<Diagnostic>, usize, Node)> = None;
        for alt in alts {
            let mut trial = node.clone();
            let mut walk = Walk {
                schema: self.schema,
                mode: self.mode,
                path: self.path.clone(),
                errors: Vec::new(),
                more: 0,
            };
            walk.node(&mut trial, alt, at);
            if walk.errors.is_empty() {
                *node = trial;
                return;
            }
            let count = walk.errors.len() + walk.more;
            if best
                .as_ref()
                .is_none_or(|(errors, more, _)| count < errors.len() + more)
            {
                best = Some((walk.errors, walk.more, trial));
            }
        }
        if let Some((errors, more, _)) = best {
            self.errors.extend(errors);
            self.more += more;
        }
    }
}

/// The key whose `const` value tells the branches of a tagged enum apart, if there is one.
fn discriminator<'a>(alts: &[&'a J]) -> Option<&'a str> {
    let first = alts.first()?.get("properties")?.as_object()?;
    first.keys().map(String::as_str).find(|key| {
        alts.iter().all(|alt| {
            let p = &alt["properties"][*key];
            p.get("const").is_some() || p["enum"].as_array().is_some_and(|e| e.len() == 1)
        })
    })
}

/// A plain scalar (`2024`, `true`) stands for its text where only a string is expected.
fn coerce_to_string(node: &mut Node, types: &[&str]) {
    if types.contains(&"string") && !types.iter().any(|t| matches_type(node, t)) {
        if let Some(raw) = plain_scalar_text(node).cloned() {
            node.value = Value::Str(raw);
        }
    }
}

/// The text of an unquoted boolean or number (`true`, `2024`, `-3`), as written.
fn plain_scalar_text(node: &Node) -> Option<&String> {
    match node.value {
        Value::Bool(_) | Value::Int(_) | Value::Float(_) => node.raw.as_ref(),
        _ => None,
    }
}

fn matches_type(node: &Node, t: &str) -> bool {
    matches!(
        (t, &node.value),
        ("null", Value::Null)
            | ("boolean", Value::Bool(_))
            | ("integer", Value::Int(_))
            | ("number", Value::Int(_) | Value::Float(_))
            | ("string", Value::Str(_))
            | ("array", Value::Seq(_))
            | ("object", Value::Map(_))
    )
}

fn first_sentence(text: &str) -> &str {
    let text = text.trim();
    match text.find(". ") {
        Some(i) => &text[..i],
        None => text.trim_end_matches('.'),
    }
}

impl Node {
    /// The value and its kind, as a type error names it: `string "abc"`, `integer 3`.
    fn preview_typed(&self) -> String {
        match self.value {
            Value::Seq(_) | Value::Map(_) | Value::Null => self.preview(),
            _ => format!(
                "{} {}",
                self.kind_name()
                    .trim_start_matches("an ")
                    .trim_start_matches("a "),
                self.preview()
            ),
        }
    }
}

//! Writing a resolved plan back out as YAML that this loader (and PyYAML) read the same way.

use serde_json::Value as J;

/// Block-style YAML for a JSON value; lists of scalars are written inline.
pub fn to_yaml(value: &J) -> String {
    let mut out = String::new();
    match value {
        J::Object(map) if !map.is_empty() => block_map(map, 0, &mut out),
        other => {
            out.push_str(&scalar_or_inline(other));
            out.push('\n');
        }
    }
    out
}

fn block_map(map: &serde_json::Map<String, J>, indent: usize, out: &mut String) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&string(key));
        out.push(':');
        block_value(value, indent, out);
    }
}

/// The part after `key:` (or `-`): inline for scalars and short lists, nested otherwise.
fn block_value(value: &J, indent: usize, out: &mut String) {
    match value {
        J::Object(map) if !map.is_empty() => {
            out.push('\n');
            block_map(map, indent + 2, out);
        }
        J::Array(items) if !items.is_empty() && !items.iter().all(is_scalar) => {
            out.push('\n');
            for item in items {
                out.push_str(&" ".repeat(indent + 2));
                out.push('-');
                match item {
                    J::Object(map) if !map.is_empty() => {
                        // The first key sits on the dash line; the rest align under it.
                        let mut nested = String::new();
                        block_map(map, indent + 4, &mut nested);
                        out.push(' ');
                        out.push_str(nested.trim_start());
                    }
                    other => block_value(other, indent + 2, out),
                }
            }
        }
        other => {
            out.push(' ');
            out.push_str(&scalar_or_inline(other));
            out.push('\n');
        }
    }
}

fn is_scalar(value: &J) -> bool {
    !matches!(value, J::Array(_) | J::Object(_))
}

fn scalar_or_inline(value: &J) -> String {
    match value {
        J::Null => "null".into(),
        J::Bool(b) => b.to_string(),
        J::Number(n) => number(n),
        J::String(s) => string(s),
        J::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(scalar_or_inline)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        J::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", string(k), scalar_or_inline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Floats always carry a `.` so YAML 1.1 readers (PyYAML) see numbers too: `1e-5` → `1.0e-5`.
fn number(n: &serde_json::Number) -> String {
    let text = n.to_string();
    if !n.is_f64() || text.contains('.') {
        return text;
    }
    match text.find(['e', 'E']) {
        Some(i) => format!("{}.0{}", &text[..i], &text[i..]),
        None => format!("{text}.0"),
    }
}

/// A string plain when it cannot be mistaken for anything else, double-quoted otherwise.
fn string(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '/' || c == '.')
        && s.chars()
            .all(|c| c.is_alphanumeric() || " _-./{}+".contains(c))
        && !s.ends_with(' ')
        && !s.starts_with('.')
        && !s.contains("{")
        && !matches!(
            s.to_lowercase().as_str(),
            "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "~"
        );
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("strings always serialize")
    }
}

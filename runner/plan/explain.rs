//! `runner explain`: every resolved value with where it came from.

use serde_json::Value as J;

use super::training::BNB_SYNONYMS;
use super::Plan;
use crate::config::emit;
use crate::config::{Node, Origin};

/// One leaf of the plan.
pub struct Line {
    pub key: String,
    /// The value as YAML text.
    pub value: String,
    /// The file position or override that set it; `None` for a default.
    pub origin: Option<Origin>,
    /// Earlier layers it replaced, oldest first.
    pub replaced: Vec<Origin>,
    /// What the key is called elsewhere (BitsAndBytesConfig's names of QLoRA's keys).
    pub also_called: Option<&'static str>,
}

pub fn explain(plan: &Plan) -> Vec<Line> {
    let mut lines = Vec::new();
    walk(
        &plan.recipe.to_json(),
        &mut Vec::new(),
        &plan.tree,
        &mut lines,
    );
    lines
}

fn walk(value: &J, path: &mut Vec<String>, tree: &Node, out: &mut Vec<Line>) {
    match value {
        J::Object(map) if !map.is_empty() => {
            for (key, sub) in map {
                path.push(key.clone());
                walk(sub, path, tree, out);
                path.pop();
            }
        }
        leaf => {
            let mut segments: Vec<&str> = path.iter().map(String::as_str).collect();
            let also_called = bnb_name(&segments);
            let mut node = tree.at(&segments);
            if let (None, Some(bnb)) = (node, also_called) {
                // Set under BitsAndBytesConfig's name: that is where it came from.
                *segments.last_mut().expect("a leaf has a key") = bnb;
                node = tree.at(&segments);
            }
            out.push(Line {
                key: path.join("."),
                value: emit::to_yaml(leaf).trim_end().to_string(),
                origin: node.map(|n| n.origin.clone()),
                replaced: node.map(|n| n.replaced.clone()).unwrap_or_default(),
                also_called,
            });
        }
    }
}

/// BitsAndBytesConfig's name of a `training.adapter.quantize` key, where it has another.
fn bnb_name(path: &[&str]) -> Option<&'static str> {
    let [.., "adapter", "quantize", key] = path else {
        return None;
    };
    BNB_SYNONYMS
        .iter()
        .find(|(ours, _)| ours == key)
        .map(|(_, bnb)| *bnb)
}

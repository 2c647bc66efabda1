//! Deep merge of two layers: mappings merge key by key, anything else is replaced whole.

use super::node::{Node, Value};

/// `over` on top of `base`. The result remembers the origins of the values it replaced.
pub fn merge(base: Node, over: Node) -> Node {
    let mut replaced = base.replaced;
    replaced.push(base.origin);
    match (base.value, over.value) {
        (Value::Map(mut entries), Value::Map(over_entries)) => {
            for entry in over_entries {
                match entries.iter_mut().find(|e| e.key == entry.key) {
                    Some(existing) => {
                        let old = std::mem::replace(
                            &mut existing.value,
                            Node::new(Value::Null, entry.key_origin.clone()),
                        );
                        existing.value = merge(old, entry.value);
                        existing.key_origin = entry.key_origin;
                    }
                    None => entries.push(entry),
                }
            }
            Node {
                value: Value::Map(entries),
                origin: over.origin,
                raw: None,
                replaced,
            }
        }
        (_, value) => {
            replaced.extend(over.replaced);
            Node {
                value,
                origin: over.origin,
                raw: over.raw,
                replaced,
            }
        }
    }
}

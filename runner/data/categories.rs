//! The MLLM-DataEngine loop's two halves, over item categories (an item field such as
//! `category`): an evaluation's error rate per category (`1 − accuracy`, rounded to three
//! places as `vqa_blip2.py` writes `weight.json`), and a later run's training items grouped by
//! category with those rates as sampling weights. A category the weights do not name weighs 1:
//! the DataEngine's default weight, here extended to categories a file leaves out (its
//! `Step2-query_construct.py` would fail on them).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use super::scienceqa::Item;

/// An item's category: the field's string (or other JSON value as text); None when absent.
pub fn category(item: &Item, field: &str) -> Option<String> {
    let value = item.fields.get(field)?;
    Some(
        value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_string),
    )
}

/// `round(wrong / total, 3)` per category, from each item's category and whether it was
/// answered right.
pub fn error_rates(outcomes: &[(String, bool)]) -> BTreeMap<String, f64> {
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (category, right) in outcomes {
        let c = counts.entry(category.clone()).or_default();
        c.0 += usize::from(!right);
        c.1 += 1;
    }
    counts
        .into_iter()
        .map(|(k, (wrong, total))| {
            // Python's round(x, 3): the nearest of the decimal value, ties to even, which
            // formatting computes the same way.
            let rate = format!("{:.3}", wrong as f64 / total as f64);
            (k, rate.parse().unwrap_or(f64::NAN))
        })
        .collect()
}

/// A weights file: a JSON object `{category: weight ≥ 0}`.
pub fn read_weights(path: &str) -> Result<BTreeMap<String, f64>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!("data.category_weights: reading {path}\n  hint: point it at an earlier run's error_rates.json, or at that run's recipe")
    })?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .with_context(|| {
            format!("{path}: expected a JSON object {{category: weight}}, as error_rates.json is")
        })?;
    map.into_iter()
        .map(|(k, v)| match v.as_f64() {
            Some(w) if w >= 0.0 && w.is_finite() => Ok((k, w)),
            _ => bail!("{path}: key `{k}`: expected a weight ≥ 0, found {v}"),
        })
        .collect()
}

/// The training items grouped by category, sorted by name, each group with its weight.
pub fn weighted_groups(
    items: &[Item],
    field: &str,
    weights: &BTreeMap<String, f64>,
    file: &str,
) -> Result<Vec<(f64, Vec<usize>)>> {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let Some(c) = category(item, field) else {
            bail!(
                "{file}: item {}: no `{field}`, which data.category_weights needs\n  hint: give every item a `{field}`, or set data.category_field to a field they have",
                item.id
            );
        };
        groups.entry(c).or_default().push(i);
    }
    let weighted: Vec<(f64, Vec<usize>)> = groups
        .into_iter()
        .map(|(c, members)| (weights.get(&c).copied().unwrap_or(1.0), members))
        .collect();
    if weighted.iter().all(|(w, _)| *w == 0.0) {
        bail!("data.category_weights: every category of {file} weighs 0, so no item can be drawn\n  hint: the model made no mistakes there; train without category_weights");
    }
    Ok(weighted)
}

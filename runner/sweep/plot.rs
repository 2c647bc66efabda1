//! `plot.svg`: the sweep metric against each swept parameter, one panel per parameter, every
//! trial a dot and the mean at each value joined by a line. Numeric axes spanning a factor of
//! ten or more are logarithmic (learning rates); other values are spaced evenly in order.

use std::fmt::Write as _;

use serde_json::Value;

use super::record::{keys, Record};
use super::spec::SweepSpec;

const W: f64 = 360.0;
const H: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 44.0;

/// Where a parameter's values go along the x axis (0..1).
enum Axis {
    Linear(f64, f64),
    Log(f64, f64),
    Categories(Vec<String>),
}

impl Axis {
    fn of(values: &[&Value]) -> Axis {
        let numbers: Option<Vec<f64>> = values.iter().map(|v| v.as_f64()).collect();
        match numbers {
            Some(xs) if !xs.is_empty() => {
                let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                match lo > 0.0 && hi / lo >= 10.0 {
                    true => Axis::Log(lo.ln(), hi.ln()),
                    false => Axis::Linear(lo, hi),
                }
            }
            _ => {
                let mut names: Vec<String> = Vec::new();
                for name in values.iter().map(|v| label(v)) {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                Axis::Categories(names)
            }
        }
    }

    fn position(&self, v: &Value) -> f64 {
        let spread = |x: f64, lo: f64, hi: f64| match hi > lo {
            true => (x - lo) / (hi - lo),
            false => 0.5,
        };
        match self {
            Axis::Linear(lo, hi) => spread(v.as_f64().unwrap_or(*lo), *lo, *hi),
            Axis::Log(lo, hi) => spread(v.as_f64().unwrap_or(1.0).ln(), *lo, *hi),
            Axis::Categories(names) => {
                let i = names.iter().position(|n| *n == label(v)).unwrap_or(0);
                (i as f64 + 0.5) / names.len().max(1) as f64
            }
        }
    }

    /// Tick labels at the ends (numeric) or under each category.
    fn ticks(&self) -> Vec<(f64, String)> {
        match self {
            Axis::Linear(lo, hi) => vec![(0.0, short(*lo)), (1.0, short(*hi))],
            Axis::Log(lo, hi) => vec![(0.0, short(lo.exp())), (1.0, short(hi.exp()))],
            Axis::Categories(names) => names
                .iter()
                .enumerate()
                .map(|(i, n)| ((i as f64 + 0.5) / names.len() as f64, n.clone()))
                .collect(),
        }
    }
}

fn label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn short(x: f64) -> String {
    match x != 0.0 && (x.abs() < 1e-2 || x.abs() >= 1e4) {
        true => format!("{x:.1e}"),
        false => format!("{x:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The whole figure.
pub fn svg(spec: &SweepSpec, records: &[Record]) -> String {
    let keys = keys(records);
    let measured: Vec<(&Record, f64)> = records
        .iter()
        .filter_map(|r| r.metric.map(|m| (r, m)))
        .collect();
    let width = W * keys.len().max(1) as f64;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{H}\" viewBox=\"0 0 {width} {H}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let lo = measured
        .iter()
        .map(|(_, m)| *m)
        .fold(f64::INFINITY, f64::min);
    let hi = measured
        .iter()
        .map(|(_, m)| *m)
        .fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = match (lo.is_finite(), hi > lo) {
        (false, _) => (0.0, 1.0),
        (true, true) => (lo, hi),
        (true, false) => (lo - 0.5, lo + 0.5),
    };
    let y = |m: f64| TOP + (1.0 - (m - lo) / (hi - lo)) * (H - TOP - BOTTOM);
    for (panel, key) in keys.iter().enumerate() {
        let x0 = panel as f64 * W;
        let x = |t: f64| x0 + LEFT + t * (W - LEFT - RIGHT);
        let values: Vec<&Value> = measured
            .iter()
            .filter_map(|(r, _)| r.params.iter().find(|(k, _)| k == key).map(|(_, v)| v))
            .collect();
        let axis = Axis::of(&values);
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"16\" text-anchor=\"middle\" font-weight=\"bold\">{} vs {}</text>",
            x0 + W / 2.0,
            escape(&spec.metric.name),
            escape(key)
        );
        let (bottom, top) = (H - BOTTOM, TOP);
        let _ = writeln!(
            out,
            "<path d=\"M{l} {top} L{l} {bottom} L{r} {bottom}\" stroke=\"black\" fill=\"none\"/>",
            l = x(0.0),
            r = x(1.0)
        );
        for (t, text) in axis.ticks() {
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x(t),
                bottom + 14.0,
                escape(&text)
            );
        }
        let scale = match axis {
            Axis::Log(..) => " (log)",
            _ => "",
        };
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}{scale}</text>",
            x(0.5),
            bottom + 30.0,
            escape(key)
        );
        for (m, anchor) in [(lo, bottom), (hi, top)] {
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                x(0.0) - 4.0,
                anchor + 4.0,
                short(m)
            );
        }
        // Mean at each value, joined in x order.
        let mut means: Vec<(f64, f64, usize)> = Vec::new();
        for (r, m) in &measured {
            let Some((_, v)) = r.params.iter().find(|(k, _)| k == key) else {
                continue;
            };
            let t = axis.position(v);
            match means.iter_mut().find(|(p, _, _)| (*p - t).abs() < 1e-12) {
                Some(entry) => {
                    entry.1 += m;
                    entry.2 += 1;
                }
                None => means.push((t, *m, 1)),
            }
            let _ = writeln!(
                out,
                "<circle cx=\"{:.2}\" cy=\"{:.2}\" r=\"3\" fill=\"#1f77b4\" fill-opacity=\"0.6\"/>",
                x(t),
                y(*m)
            );
        }
        means.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = means
            .iter()
            .enumerate()
            .map(|(i, (t, sum, n))| {
                let command = if i == 0 { 'M' } else { 'L' };
                format!("{command}{:.2} {:.2}", x(*t), y(sum / *n as f64))
            })
            .collect();
        if !path.is_empty() {
            let _ = writeln!(
                out,
                "<path d=\"{}\" stroke=\"#d62728\" fill=\"none\" stroke-width=\"1.5\"/>",
                path.join(" ")
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

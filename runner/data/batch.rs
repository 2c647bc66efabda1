//! Collation: examples padded to the longest of their batch (left or right), an attention
//! mask, and labels that are -100 wherever no loss is wanted.

use tch::{Device, Kind, Tensor};

use crate::models::loss::IGNORE;
use crate::plan::kinds::longlora::Side;

/// One tokenized example: its ids and, position by position, the label the loss sees.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub ids: Vec<i64>,
    pub labels: Vec<i64>,
}

/// A padded batch, `[B, T]` each, plus what a kind needs besides (FiD passages, …).
pub struct Batch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub labels: Tensor,
    pub extra: Vec<(&'static str, Tensor)>,
}

impl Batch {
    /// Real (unpadded) tokens.
    pub fn tokens(&self) -> i64 {
        self.attention_mask.sum(Kind::Int64).int64_value(&[])
    }

    pub fn to_device(&self, device: Device) -> Batch {
        Batch {
            input_ids: self.input_ids.to_device(device),
            attention_mask: self.attention_mask.to_device(device),
            labels: self.labels.to_device(device),
            extra: self
                .extra
                .iter()
                .map(|(n, t)| (*n, t.to_device(device)))
                .collect(),
        }
    }

    /// An extra tensor by name (a kind's own batch layout; absent is a programming error).
    pub fn extra(&self, name: &str) -> &Tensor {
        &self
            .extra
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("batch has no `{name}`"))
            .1
    }
}

/// Pads `examples` to the longest, rounded up to a multiple of `multiple_of` (S²-Attn needs
/// lengths its group count divides), with `pad` ids, mask 0 and label -100.
pub fn collate(examples: &[&Example], pad: i64, side: Side, multiple_of: usize) -> Batch {
    let longest = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let t = longest.div_ceil(multiple_of.max(1)) * multiple_of.max(1);
    let (mut ids, mut mask, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for e in examples {
        let fill = t - e.ids.len();
        let (before, after) = match side {
            Side::Left => (fill, 0),
            Side::Right => (0, fill),
        };
        let padded = |values: &[i64], with: i64| {
            let mut row = vec![with; before];
            row.extend_from_slice(values);
            row.extend(std::iter::repeat_n(with, after));
            row
        };
        ids.extend(padded(&e.ids, pad));
        mask.extend(padded(&vec![1; e.ids.len()], 0));
        labels.extend(padded(&e.labels, IGNORE));
    }
    let shape = [examples.len() as i64, t as i64];
    Batch {
        input_ids: Tensor::from_slice(&ids).view(shape),
        attention_mask: Tensor::from_slice(&mask).view(shape),
        labels: Tensor::from_slice(&labels).view(shape),
        extra: Vec::new(),
    }
}

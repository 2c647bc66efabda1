//! Micro-batches in the plan's order, prepared on a separate thread so the device does not
//! wait for padding and copying. The stream can start at any position, which is how a resumed
//! run continues with exactly the batches it would have seen.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread;

use serde::{Deserialize, Serialize};

use super::batch::{collate, Batch, Example};
use super::order::epoch_order;
use crate::plan::kinds::longlora::Side;

/// Where the stream stands: the next micro-batch is the `offset`-th of epoch `epoch`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub epoch: u64,
    pub offset: usize,
}

#[derive(Clone)]
pub struct Loader {
    pub examples: Arc<Vec<Example>>,
    pub batch_size: usize,
    pub pad: i64,
    pub side: Side,
    /// Padded lengths are a multiple of this.
    pub multiple_of: usize,
    pub seed: u64,
    /// Group examples of similar length into the same batches (see [`group_by_length`]).
    pub group_by_length: bool,
}

impl Loader {
    /// Micro-batches per pass over the data (the last may be smaller).
    pub fn batches_per_epoch(&self) -> usize {
        self.examples.len().div_ceil(self.batch_size.max(1))
    }

    /// The micro-batches from `from` on, forever; each comes with the position after it.
    /// The preparing thread stops when the receiver is dropped.
    pub fn stream(&self, from: Position) -> Receiver<(Position, Batch)> {
        let (send, receive) = sync_channel(4);
        let loader = self.clone();
        thread::spawn(move || {
            let mut at = from;
            loop {
                let mut order = epoch_order(loader.examples.len(), loader.seed, at.epoch);
                if loader.group_by_length {
                    order = group_by_length(&order, &loader.examples, loader.batch_size);
                }
                let starts: Vec<usize> =
                    (0..order.len()).step_by(loader.batch_size.max(1)).collect();
                for (i, &start) in starts.iter().enumerate().skip(at.offset) {
                    let end = (start + loader.batch_size).min(order.len());
                    let members: Vec<&Example> = order[start..end]
                        .iter()
                        .map(|&k| &loader.examples[k])
                        .collect();
                    let batch = collate(&members, loader.pad, loader.side, loader.multiple_of);
                    let next = match i + 1 == starts.len() {
                        true => Position {
                            epoch: at.epoch + 1,
                            offset: 0,
                        },
                        false => Position {
                            epoch: at.epoch,
                            offset: i + 1,
                        },
                    };
                    if send.send((next, batch)).is_err() {
                        return;
                    }
                }
                at = Position {
                    epoch: at.epoch + 1,
                    offset: 0,
                };
                if starts.is_empty() {
                    return;
                }
            }
        });
        receive
    }
}

/// transformers' `LengthGroupedSampler`: the shuffled order cut into megabatches of 50 batches,
/// each sorted longest first, so a batch holds examples of similar length while the order of
/// megabatches stays random.
pub fn group_by_length(order: &[usize], examples: &[Example], batch_size: usize) -> Vec<usize> {
    let mega = 50 * batch_size.max(1);
    order
        .chunks(mega)
        .flat_map(|chunk| {
            let mut chunk = chunk.to_vec();
            chunk.sort_by_key(|&i| std::cmp::Reverse(examples[i].ids.len()));
            chunk
        })
        .collect()
}

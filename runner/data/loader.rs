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

/// Makes the batch of the given example indices (runs on the loader's thread).
pub type MakeBatch = Arc<dyn Fn(&[usize]) -> Batch + Send + Sync>;

#[derive(Clone)]
pub struct Loader {
    /// Examples per epoch.
    pub len: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// Each example's length, when batches should group similar lengths (see [`group_by_length`]).
    pub lengths: Option<Arc<Vec<usize>>>,
    pub make: MakeBatch,
}

impl Loader {
    /// The first micro-batch's example indices (what `runner bench` times).
    pub fn first_batch(&self) -> Vec<usize> {
        (0..self.batch_size.min(self.len)).collect()
    }

    /// Causal-LM examples, padded per batch.
    pub fn causal(
        examples: Vec<Example>,
        batch_size: usize,
        pad: i64,
        side: Side,
        multiple_of: usize,
        seed: u64,
        group: bool,
    ) -> Loader {
        let examples = Arc::new(examples);
        let lengths = group.then(|| Arc::new(examples.iter().map(|e| e.ids.len()).collect()));
        let len = examples.len();
        let make: MakeBatch = Arc::new(move |indices: &[usize]| {
            let members: Vec<&Example> = indices.iter().map(|&i| &examples[i]).collect();
            collate(&members, pad, side, multiple_of)
        });
        Loader {
            len,
            batch_size,
            seed,
            lengths,
            make,
        }
    }

    /// Micro-batches per pass over the data (the last may be smaller).
    pub fn batches_per_epoch(&self) -> usize {
        self.len.div_ceil(self.batch_size.max(1))
    }

    /// The micro-batches from `from` on, forever; each comes with the position after it.
    /// Only those `share` names are made (the others come as `None`: another rank trains
    /// them). The preparing thread stops when the receiver is dropped.
    pub fn stream(&self, from: Position, share: Share) -> Receiver<(Position, Option<Batch>)> {
        let (send, receive) = sync_channel(4);
        let loader = self.clone();
        thread::spawn(move || {
            let mut at = from;
            let mut count = 0u64;
            loop {
                let mut order = epoch_order(loader.len, loader.seed, at.epoch);
                if let Some(lengths) = &loader.lengths {
                    order = group_by_length(&order, lengths, loader.batch_size);
                }
                let starts: Vec<usize> =
                    (0..order.len()).step_by(loader.batch_size.max(1)).collect();
                for (i, &start) in starts.iter().enumerate().skip(at.offset) {
                    let end = (start + loader.batch_size).min(order.len());
                    let batch = share
                        .takes(count)
                        .then(|| (loader.make)(&order[start..end]));
                    count += 1;
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

/// Which micro-batches of a stream one rank trains: of each `period` consecutive ones, counted
/// from where the stream starts, those whose index falls in `mine`.
#[derive(Clone, Debug)]
pub struct Share {
    pub period: u64,
    pub mine: std::ops::Range<u64>,
}

impl Share {
    fn takes(&self, index: u64) -> bool {
        self.mine.contains(&(index % self.period.max(1)))
    }
}

/// transformers' `LengthGroupedSampler`: the shuffled order cut into megabatches of 50 batches,
/// each sorted longest first, so a batch holds examples of similar length while the order of
/// megabatches stays random; the longest example of all then swaps into the first place, so a
/// batch too large for memory fails at once.
pub fn group_by_length(order: &[usize], lengths: &[usize], batch_size: usize) -> Vec<usize> {
    let mega = 50 * batch_size.max(1);
    let mut megabatches: Vec<Vec<usize>> = order
        .chunks(mega)
        .map(|chunk| {
            let mut chunk = chunk.to_vec();
            chunk.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
            chunk
        })
        .collect();
    let longest = |m: &[usize]| m.first().map_or(0, |&i| lengths[i]);
    let top =
        (0..megabatches.len()).max_by_key(|&k| (longest(&megabatches[k]), std::cmp::Reverse(k)));
    if let Some(k) = top.filter(|&k| k > 0) {
        let (first, rest) = megabatches.split_at_mut(k);
        std::mem::swap(&mut first[0][0], &mut rest[0][0]);
    }
    megabatches.concat()
}

//! Gradient checkpointing by recomputation. libtorch's autograd cannot be extended from tch
//! (no custom functions, and `run_backward` takes no output gradients), so the tape does the
//! bookkeeping itself:
//!
//! - forward: each layer ("segment") runs without a graph; the tape keeps only its inputs and
//!   hands on its output as a fresh leaf, so the rest of the model builds a small graph on it;
//! - backward: `loss.backward()` fills the gradients of those leaves; then, newest first, each
//!   segment is re-run with a graph and back-propagated with `(y · ∂L/∂y).sum().backward()`,
//!   which accumulates the parameters' gradients and yields its inputs' gradients.
//!
//! Tensors used by several segments (T5's position bias, the encoder output in the decoder)
//! enter through [`Tape::boundary`], a leaf whose gradient is collected from every user before
//! it is passed on, once, to the graph that made it.
//!
//! Under ZeRO-3 a segment's weights are sharded over the ranks: a [`Gather`] makes them whole
//! around the segment's forward pass and again around its recomputation, after which their
//! gradients are reduced to the shards and the whole copies freed. A collective that fails
//! cannot stop a forward pass halfway (segments return tensors, not results), so the tape
//! keeps the first error, skips what follows, and the trainer reads it with [`Tape::failure`].
//!
//! Dropout must draw the same mask when a segment is recomputed. There is no way to save and
//! restore libtorch's generator state from tch, so while training every segment reseeds the
//! global generator from (step seed, segment index), in both modes, which also makes the two
//! modes draw identical masks.

use std::cell::{Cell, RefCell};

use anyhow::Result;
use tch::Tensor;

/// Makes a segment's sharded weights whole and shards them again (ZeRO-3).
pub trait Gather {
    /// Makes `weights` whole for a forward pass (those it does not shard are left alone).
    fn gather(&self, weights: &[Tensor]) -> Result<()>;
    /// After a segment's backward pass: adds its weights' gradients to their shards.
    fn reduce(&self, weights: &[Tensor]) -> Result<()>;
    /// Frees the whole copies `gather` made.
    fn release(&self, weights: &[Tensor]) -> Result<()>;
}

/// Whether layers keep their activations for the backward pass or recompute them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkpointing {
    Off,
    Recompute,
}

type Segment<'a> = Box<dyn Fn(&[Tensor]) -> Tensor + 'a>;

enum Event<'a> {
    Segment {
        run: Segment<'a>,
        weights: Vec<Tensor>,
        inputs: Vec<Tensor>,
        output: Tensor,
        seed: Option<i64>,
    },
    Boundary {
        made: Tensor,
        leaf: Tensor,
    },
}

/// The record of one forward pass.
pub struct Tape<'a> {
    mode: Checkpointing,
    /// Seed of this step's dropout masks; None when not training.
    seed: Option<i64>,
    events: RefCell<Vec<Event<'a>>>,
    segments: Cell<i64>,
    gather: Option<&'a dyn Gather>,
    /// The first error of a gather, reduction or release.
    failure: RefCell<Option<anyhow::Error>>,
}

impl<'a> Tape<'a> {
    /// A tape for one training step; `seed` derives every dropout mask of the step, also
    /// those drawn outside segments (it reseeds the global generator now).
    pub fn training(mode: Checkpointing, seed: i64) -> Tape<'a> {
        tch::manual_seed(seed);
        Tape {
            mode,
            seed: Some(seed),
            events: RefCell::new(Vec::new()),
            segments: Cell::new(0),
            gather: None,
            failure: RefCell::new(None),
        }
    }

    /// The tape with `gather` making each segment's sharded weights whole (ZeRO-3).
    pub fn gathering(mut self, gather: Option<&'a dyn Gather>) -> Tape<'a> {
        self.gather = gather;
        self
    }

    /// The first error of a collective in this pass, if any (the pass's results are then void).
    pub fn failure(&self) -> Result<()> {
        match self.failure.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs `f` with the gatherer, keeping its first error; false once anything failed.
    fn collective(&self, f: impl FnOnce(&dyn Gather) -> Result<()>) -> bool {
        if self.failure.borrow().is_some() {
            return false;
        }
        let Some(gather) = self.gather else {
            return true;
        };
        match f(gather) {
            Ok(()) => true,
            Err(e) => {
                *self.failure.borrow_mut() = Some(e);
                false
            }
        }
    }

    /// A tape that records nothing: evaluation, or training without reseeding.
    pub fn plain() -> Tape<'a> {
        Tape {
            mode: Checkpointing::Off,
            seed: None,
            events: RefCell::new(Vec::new()),
            segments: Cell::new(0),
            gather: None,
            failure: RefCell::new(None),
        }
    }

    fn recomputing(&self) -> bool {
        self.mode == Checkpointing::Recompute
    }

    /// A tensor that several segments read. Returned as is unless recomputing. Call it once
    /// per tensor: its graph is back-propagated once, after its last reader.
    pub fn boundary(&self, t: &Tensor) -> Tensor {
        if !self.recomputing() || !t.requires_grad() {
            return t.shallow_clone();
        }
        let leaf = t.detach().set_requires_grad(true);
        self.events.borrow_mut().push(Event::Boundary {
            made: t.shallow_clone(),
            leaf: leaf.shallow_clone(),
        });
        leaf
    }

    /// Runs one segment (a layer with its `weights`) on `inputs`, which must be boundaries,
    /// outputs of earlier segments, or tensors that need no gradient. A layer's output has its
    /// input's shape: when gathering its weights failed, the input is passed on unchanged.
    pub fn segment(
        &self,
        weights: &[Tensor],
        inputs: &[&Tensor],
        run: impl Fn(&[Tensor]) -> Tensor + 'a,
    ) -> Tensor {
        let index = self.segments.get() + 1;
        self.segments.set(index);
        let seed = self.seed.map(|s| segment_seed(s, index));
        let inputs: Vec<Tensor> = inputs.iter().map(|t| t.shallow_clone()).collect();
        reseed(seed);
        if !self.collective(|g| g.gather(weights)) {
            return inputs[0].shallow_clone();
        }
        if !self.recomputing() {
            // The graph keeps the whole weights until backward: they stay gathered until the
            // step's end, when the gatherer reduces and frees whatever is still whole.
            return run(&inputs);
        }
        let output = tch::no_grad(|| run(&inputs)).set_requires_grad(true);
        self.collective(|g| g.release(weights));
        self.events.borrow_mut().push(Event::Segment {
            run: Box::new(run),
            weights: weights.iter().map(Tensor::shallow_clone).collect(),
            inputs,
            output: output.shallow_clone(),
            seed,
        });
        output
    }

    /// Back-propagates `loss` through the whole forward pass, recomputing segments as needed.
    pub fn backward(&self, loss: &Tensor) {
        loss.backward();
        let mut events = self.events.borrow_mut();
        while let Some(event) = events.pop() {
            match event {
                Event::Segment {
                    run,
                    weights,
                    inputs,
                    output,
                    seed,
                } => {
                    let grad = output.grad();
                    if !grad.defined() || !self.collective(|g| g.gather(&weights)) {
                        continue;
                    }
                    let copies: Vec<Tensor> = inputs
                        .iter()
                        .map(|x| match x.requires_grad() {
                            true => x.detach().set_requires_grad(true),
                            false => x.shallow_clone(),
                        })
                        .collect();
                    reseed(seed);
                    let y = tch::with_grad(|| run(&copies));
                    if !y.requires_grad() {
                        // Nothing in or before this segment trains (a frozen layer below the
                        // first adapter): no gradient flows further down.
                        self.collective(|g| g.release(&weights));
                        continue;
                    }
                    pull(&y, &grad);
                    drop(y);
                    self.collective(|g| g.reduce(&weights).and_then(|()| g.release(&weights)));
                    for (copy, input) in copies.iter().zip(&inputs) {
                        let g = copy.grad();
                        if copy.requires_grad() && g.defined() {
                            // Inputs are leaves (earlier outputs or boundaries): this
                            // accumulates into their gradient.
                            debug_assert!(input.is_leaf(), "segment inputs must be leaves");
                            pull(input, &g);
                        }
                    }
                }
                Event::Boundary { made, leaf } => {
                    let grad = leaf.grad();
                    if grad.defined() {
                        pull(&made, &grad);
                    }
                }
            }
        }
    }
}

/// Back-propagates `grad` (∂L/∂t) into the graph that made `t`.
fn pull(t: &Tensor, grad: &Tensor) {
    (t * grad.to_kind(t.kind())).sum(t.kind()).backward();
}

fn reseed(seed: Option<i64>) {
    if let Some(s) = seed {
        tch::manual_seed(s);
    }
}

/// A seed per (step, segment), mixed so that neighbouring steps do not share masks.
fn segment_seed(step_seed: i64, index: i64) -> i64 {
    let mut x = (step_seed as u64) ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x >> 1) as i64
}

//! What attaching HyperLoRA records in the store, for `Linear::load` to build each adapted
//! layer's branch. Kept apart from the hypernetworks so the store need not know them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tch::Tensor;

use crate::plan::hypernet::Site;

/// The current batch's features `[B, whiten_dim]`, shared by every adapted layer of a model.
/// The task sets them before each forward pass or generation (IAG's `set_features`): passing
/// them through every T5 call would thread one argument through the whole model for the sake
/// of one adapter kind.
#[derive(Clone, Default)]
pub struct Features(Arc<Mutex<Option<Tensor>>>);

impl Features {
    pub fn set(&self, features: &Tensor) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(features.shallow_clone());
    }

    pub fn get(&self) -> Tensor {
        let slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref()
            .map(Tensor::shallow_clone)
            .expect("HyperLoRA features are set before the model runs")
    }
}

/// What `attach` records in the store for `Linear::load`.
pub struct HyperSettings {
    /// Dropout on the frozen projection's output.
    pub dropout: f64,
    /// Adapted module → its hypernetwork and layer index.
    pub sites: BTreeMap<String, Site>,
    pub features: Features,
}

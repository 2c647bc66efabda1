//! What is specific to one paper: how its recipe kind builds a model, data and loss for the
//! generic trainer (`train::Task`).

pub mod longlora;

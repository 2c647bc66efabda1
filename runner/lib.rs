//! runner: YAML recipes → typed, checked, hashed plans → libtorch runs → artifacts.
//!
//! Data flows one way: `config` (files and overrides into a located tree) → `plan` (typed
//! recipe kinds, semantic checks, hash, estimates) → execution. `commands` holds one function
//! per subcommand; `main.rs` only parses arguments.

pub mod artifacts;
pub mod commands;
pub mod config;
pub mod data;
pub mod digest;
pub mod distributed;
pub mod document;
pub mod eval;
pub mod files;
pub mod methods;
pub mod models;
pub mod plan;
pub mod shim;
pub mod sweep;
pub mod train;

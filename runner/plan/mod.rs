//! Plans: recipe kinds and their sections, resolution into a typed plan, semantic checks,
//! the content hash, parameter inventories and cost estimates.

pub mod arch;
pub mod checks;
pub mod common;
pub mod estimate;
pub mod explain;
pub mod hypernet;
pub mod inventory;
pub mod kinds;
pub mod layout;
pub mod parts;
pub mod recipe;
pub mod resolve;
pub mod schema;
pub mod training;

pub use recipe::Recipe;
pub use resolve::resolve;

use std::path::PathBuf;

use crate::config::Node;

/// The contract between configuration and execution: every value typed and filled in.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The recipe file it came from.
    pub source: PathBuf,
    pub recipe: Recipe,
    /// The located tree it was typed from, for `explain` and for locating check failures.
    pub tree: Node,
    /// blake3 of the canonical JSON of `recipe`: independent of key order, comments and
    /// formatting, changed by any value.
    pub hash: String,
    /// Settings that cannot make the run wrong but are likely slips; printed, never fatal
    /// (except under `validate --strict`).
    pub warnings: Vec<crate::config::Diagnostic>,
}

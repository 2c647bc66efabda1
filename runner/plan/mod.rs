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
pub mod recipe;
pub mod resolve;
pub mod schema;
pub mod training;

pub use recipe::Recipe;
pub use resolve::{resolve, Document, Plan};

//! Configuration: YAML files and overrides into one located tree.
//!
//! `yaml` parses with positions, `load` resolves `extends:` and merges layers (`merge`),
//! `overrides` applies `KEY.PATH=VALUE`, `check` types the tree against the schema, and
//! `diagnostic` renders errors as `file:line:col: error: …`. Nothing here knows recipe kinds:
//! that is the `plan` module's business.

pub mod check;
pub mod diagnostic;
pub mod emit;
pub mod load;
pub mod merge;
pub mod node;
pub mod overrides;
pub mod safe;
pub mod yaml;

pub use check::{Mode, Schema};
pub use diagnostic::Diagnostic;
pub use node::{Entry, Node, Origin, Value};
pub use overrides::Override;

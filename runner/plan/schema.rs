//! The JSON Schema of the recipe kinds, generated from the Rust types (doc comments become
//! descriptions); `config::check` validates recipe trees against it. The whole schema of the
//! project's files (recipes and sweeps) is `document::schema`.

use std::sync::OnceLock;

use schemars::SchemaGenerator;

use super::recipe::{CoeRecipe, IagRecipe, LongloraRecipe};
use crate::config::Schema;

/// The recipes' schema: `oneOf` the three recipe kinds.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        Schema::of_documents("runner recipe", "A recipe of one of the kinds.", documents)
    })
}

/// The schema of each recipe kind, from `generator`.
pub fn documents(generator: &mut SchemaGenerator) -> Vec<schemars::Schema> {
    vec![
        generator.subschema_for::<IagRecipe>(),
        generator.subschema_for::<LongloraRecipe>(),
        generator.subschema_for::<CoeRecipe>(),
    ]
}

/// The `$defs` name of the schema of a recipe `kind`.
pub fn def_for_kind(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "iag_distill" => "IagDistillRecipe",
        "longlora_sft" => "LongloraSftRecipe",
        "coe_multitask" => "CoeMultitaskRecipe",
        _ => return None,
    })
}

//! The JSON Schema of the recipe kinds, generated from the Rust types (doc comments become
//! descriptions); `config::check` validates recipe trees against it. The whole schema of the
//! project's files (recipes and sweeps) is `document::schema`.

use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::json;

use super::recipe::{CoeRecipe, IagRecipe, LongloraRecipe};
use crate::config::Schema;

/// The recipes' schema: `oneOf` the three recipe kinds.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let mut generator = SchemaSettings::draft2020_12().into_generator();
        let documents = [
            generator.subschema_for::<IagRecipe>(),
            generator.subschema_for::<LongloraRecipe>(),
            generator.subschema_for::<CoeRecipe>(),
        ];
        let defs = generator.take_definitions(true);
        Schema::new(json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "runner recipe",
            "oneOf": documents,
            "$defs": defs,
        }))
    })
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

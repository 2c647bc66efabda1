//! The JSON Schema of recipes and sweep files, generated from the Rust types (doc comments
//! become descriptions). `runner schema` prints it; `config::check` validates against it.

use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::json;

use super::recipe::{CoeRecipe, IagRecipe, LongloraRecipe};
use crate::config::Schema;
use crate::sweep::spec::SweepSpec;

/// The one schema document: `oneOf` the three recipe kinds and the sweep file.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let mut generator = SchemaSettings::draft2020_12().into_generator();
        let documents = [
            generator.subschema_for::<IagRecipe>(),
            generator.subschema_for::<LongloraRecipe>(),
            generator.subschema_for::<CoeRecipe>(),
            generator.subschema_for::<SweepSpec>(),
        ];
        let defs = generator.take_definitions(true);
        Schema::new(json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "runner recipe or sweep",
            "description": "A recipe (kind: iag_distill, longlora_sft or coe_multitask) or a sweep file (kind: sweep).",
            "oneOf": documents,
            "$defs": defs,
        }))
    })
}

/// The `$defs` name of the document schema for a `kind` value.
pub fn def_for_kind(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "iag_distill" => "IagDistillRecipe",
        "longlora_sft" => "LongloraSftRecipe",
        "coe_multitask" => "CoeMultitaskRecipe",
        "sweep" => "SweepSpec",
        _ => return None,
    })
}

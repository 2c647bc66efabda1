//! `runner schema`: the JSON Schema of recipes and sweep files, for editors (yaml-language-server).

use std::io::Write;

use super::OK;
use crate::document::schema;

pub fn run(out: &mut dyn Write) -> std::io::Result<i32> {
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(schema().json()).expect("JSON values serialize")
    )?;
    Ok(OK)
}

//! `response_format` on `/v1/chat/completions` and `/v1/completions`: `text`, `json_object`,
//! and `json_schema` (`{"name", "description"?, "schema"?, "strict"?}`). The engine enforces
//! the format while decoding and refuses (400) schema keywords it cannot enforce; an upstream
//! server gets the format as sent.

use backend::OutputFormat;

use super::tools::bounded_schema;
use crate::error::{ApiError, Result};
use crate::validate::Fields;

/// The request's output format (`Text` without `response_format`).
pub fn parse(fields: &Fields<'_>) -> Result<OutputFormat> {
    let Some(format) = fields.object("response_format")? else {
        return Ok(OutputFormat::Text);
    };
    let format = Fields::nested(format, fields.param("response_format"));
    format.deny_unknown(&["type", "json_schema"])?;
    match format.required_string("type")? {
        "text" => Ok(OutputFormat::Text),
        "json_object" => Ok(OutputFormat::JsonObject),
        "json_schema" => {
            let spec = format.object("json_schema")?.ok_or_else(|| {
                ApiError::invalid(
                    format.param("json_schema"),
                    "Missing required parameter: 'response_format.json_schema'.",
                )
            })?;
            let spec = Fields::nested(spec, format.param("json_schema"));
            spec.deny_unknown(&["name", "description", "schema", "strict"])?;
            super::tools::checked_name(&spec, "name")?;
            spec.string("description")?;
            spec.bool("strict")?;
            match spec.object("schema")? {
                Some(schema) => Ok(OutputFormat::JsonSchema(bounded_schema(
                    &spec.param("schema"),
                    schema,
                )?)),
                // No schema: any JSON document would do; an object is what clients expect.
                None => Ok(OutputFormat::JsonObject),
            }
        }
        other => {
            let param = format.param("type");
            Err(ApiError::invalid(
                param.clone(),
                format!(
                    "Invalid '{param}': '{other}' is not one of 'text', 'json_object', 'json_schema'."
                ),
            ))
        }
    }
}

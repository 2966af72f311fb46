//! Which JSON Schemas the engine can enforce. llama.cpp's converter (`json_schema_to_grammar`)
//! silently drops some keywords (a number's bounds, `uniqueItems`, unsupported `pattern`s fall
//! back to "any string"); a schema the grammar would not enforce whole is refused here, naming
//! the keyword and where it is, instead of being loosened behind the client's back.
//!
//! Keywords JSON Schema does not define (`optional`, vendor `x-…` fields) are annotations, as
//! every validator treats them: they constrain nothing, so they are accepted and left out of
//! the grammar ([`enforced`]). So are OpenAPI's numeric formats (`float`, `double`, `int32`,
//! `int64`), which many tool converters add; `int32`/`int64` become the integer bounds they
//! mean.

// Keywords JSON Schema defines that the grammar does not enforce (refused) are shared with the
// gateway, which strips them from schemas offered on someone's behalf.
use backend::UNENFORCEABLE_SCHEMA_KEYWORDS as UNENFORCED;
use serde_json::{Map, Value};

/// Keywords the grammar enforces (checked further below where their values matter).
const ENFORCED: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "anyOf",
    "allOf",
    "$ref",
    "$defs",
    "definitions",
    "minLength",
    "maxLength",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
];

const TYPES: &[&str] = &[
    "object", "array", "string", "number", "integer", "boolean", "null",
];
/// String formats the grammar has rules for.
const FORMATS: &[&str] = &["date", "time", "date-time", "uuid"];
/// OpenAPI's numeric formats: `float`/`double` add nothing to `number`; the integer ones are
/// enforced as the bounds they name.
const NUMERIC_FORMATS: &[(&str, Option<(i64, i64)>)] = &[
    ("float", None),
    ("double", None),
    ("int32", Some((i32::MIN as i64, i32::MAX as i64))),
    // The grammar's integers have at most 16 digits: always within int64.
    ("int64", None),
];
/// Largest `maxLength`/`maxItems`/`minItems`/`minLength` enforced: the grammar unrolls them.
pub const MAX_REPEAT: u64 = 1024;
/// Deepest nesting of schemas within schemas.
const MAX_DEPTH: usize = 24;

/// Whether the grammar can enforce `schema`; the error names the keyword and its JSON pointer.
pub fn check(schema: &Value) -> Result<(), String> {
    visit(schema, "", 0)
}

fn visit(schema: &Value, at: &str, depth: usize) -> Result<(), String> {
    let here = if at.is_empty() { "/" } else { at };
    if depth > MAX_DEPTH {
        return Err(format!(
            "the schema nests subschemas deeper than {MAX_DEPTH} levels (at {here})"
        ));
    }
    let map = match schema {
        Value::Object(map) => map,
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) if depth > 0 => return Ok(()),
        Value::Bool(false) => {
            return Err(format!(
                "the schema 'false' at {here} accepts nothing, so no output could satisfy it"
            ))
        }
        other => {
            return Err(format!(
                "expected a schema (an object) at {here}, got {}",
                kind(other)
            ))
        }
    };
    if let Some(key) = map.keys().find(|k| UNENFORCED.contains(&k.as_str())) {
        return Err(unsupported(key, at));
    }
    let types = types(map, at)?;
    if let Some(format) = map.get("format") {
        let numeric = types.as_ref().is_some_and(|t| {
            t.iter()
                .all(|t| matches!(*t, "number" | "integer" | "null"))
        });
        match format.as_str() {
            Some(f) if FORMATS.contains(&f) => {}
            Some(f) if numeric && NUMERIC_FORMATS.iter().any(|(n, _)| *n == f) => {}
            _ => {
                return Err(format!(
                    "'format' {format} at {here} cannot be enforced; the formats enforced are {} on strings and {} on numbers",
                    FORMATS.join(", "),
                    NUMERIC_FORMATS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ))
            }
        }
    }
    let bounds = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"];
    if let Some(bound) = bounds.iter().find(|b| map.contains_key(**b)) {
        let integer_only = types.as_deref() == Some(&["integer"][..]);
        if !integer_only || !map[*bound].is_i64() {
            return Err(format!(
                "'{bound}' at {here} can be enforced only on an integer schema ({{\"type\": \"integer\"}}) with an integer bound"
            ));
        }
    }
    for key in ["minLength", "maxLength", "minItems", "maxItems"] {
        if let Some(v) = map.get(key) {
            match v.as_u64() {
                Some(n) if n <= MAX_REPEAT => {}
                _ => {
                    return Err(format!(
                        "'{key}' at {here} must be an integer from 0 to {MAX_REPEAT} to be enforced"
                    ))
                }
            }
        }
    }
    if let Some(required) = map.get("required") {
        let names = required
            .as_array()
            .filter(|r| r.iter().all(Value::is_string));
        if names.is_none() {
            return Err(format!(
                "'required' at {here} must be an array of property names"
            ));
        }
    }
    for key in ["enum", "anyOf", "allOf", "prefixItems"] {
        if let Some(v) = map.get(key) {
            if v.as_array().is_none_or(Vec::is_empty) {
                return Err(format!("'{key}' at {here} must be a non-empty array"));
            }
        }
    }
    if let Some(r) = map.get("$ref") {
        match r.as_str() {
            Some(r) if r.starts_with("#/$defs/") || r.starts_with("#/definitions/") => {}
            _ => {
                return Err(format!(
                    "'$ref' {r} at {here} cannot be followed; only references into this schema's '$defs' or 'definitions' are"
                ))
            }
        }
    }
    for key in ["properties", "$defs", "definitions"] {
        if let Some(children) = map.get(key) {
            let Some(children) = children.as_object() else {
                return Err(format!("'{key}' at {here} must be an object of schemas"));
            };
            for (name, child) in children {
                visit(child, &format!("{at}/{key}/{}", escape(name)), depth + 1)?;
            }
        }
    }
    for key in ["anyOf", "allOf", "prefixItems"] {
        if let Some(Value::Array(children)) = map.get(key) {
            for (i, child) in children.iter().enumerate() {
                visit(child, &format!("{at}/{key}/{i}"), depth + 1)?;
            }
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = map.get(key) {
            visit(child, &format!("{at}/{key}"), depth + 1)?;
        }
    }
    Ok(())
}

/// `schema` as the grammar is built from it: only the keywords it enforces (annotations and
/// unknown keywords left out), numeric formats as the integer bounds they mean, and objects
/// that list their properties and say nothing of others closed (`additionalProperties:
/// false`), so that what is generated stays valid and the model cannot wander into properties
/// nobody asked for. Run on a schema [`check`] accepted.
pub fn enforced(mut schema: Value) -> Value {
    fn walk(v: &mut Value) {
        let Value::Object(map) = v else { return };
        map.retain(|key, _| ENFORCED.contains(&key.as_str()));
        let numeric = map
            .get("format")
            .and_then(Value::as_str)
            .and_then(|f| NUMERIC_FORMATS.iter().find(|(n, _)| *n == f));
        if let Some((_, bounds)) = numeric {
            let integer = map.get("type").and_then(Value::as_str) == Some("integer");
            if let (Some((low, high)), true) = (bounds, integer) {
                map.entry("minimum").or_insert(Value::from(*low));
                map.entry("maximum").or_insert(Value::from(*high));
            }
            map.remove("format");
        }
        if map.contains_key("properties") && !map.contains_key("additionalProperties") {
            map.insert("additionalProperties".into(), Value::Bool(false));
        }
        for key in ["properties", "$defs", "definitions"] {
            if let Some(Value::Object(children)) = map.get_mut(key) {
                children.values_mut().for_each(walk);
            }
        }
        for key in ["anyOf", "allOf", "prefixItems"] {
            if let Some(Value::Array(children)) = map.get_mut(key) {
                children.iter_mut().for_each(walk);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(child) = map.get_mut(key) {
                walk(child);
            }
        }
    }
    walk(&mut schema);
    schema
}

/// The names in `type` (a string or an array of them), if any.
fn types(map: &Map<String, Value>, at: &str) -> Result<Option<Vec<&'static str>>, String> {
    let Some(kind) = map.get("type") else {
        return Ok(None);
    };
    let names: Vec<&Value> = match kind {
        Value::Array(names) if !names.is_empty() => names.iter().collect(),
        other => vec![other],
    };
    names
        .into_iter()
        .map(|name| {
            name.as_str()
                .and_then(|n| TYPES.iter().find(|t| **t == n).copied())
                .ok_or_else(|| {
                    format!(
                        "'type' {name} at {} is not one of {}",
                        if at.is_empty() { "/" } else { at },
                        TYPES.join(", ")
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn unsupported(key: &str, at: &str) -> String {
    let here = if at.is_empty() { "/" } else { at };
    let hint = match key {
        "oneOf" => " (use 'anyOf': exclusive alternatives cannot be enforced)",
        "pattern" => " (use 'enum' or 'maxLength', or leave the pattern out)",
        _ => "",
    };
    format!("the JSON Schema keyword '{key}' at {here} cannot be enforced by this server's constrained decoding{hint}; remove it")
}

/// A JSON pointer's escaping of one name.
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::{check, enforced};
    use serde_json::json;

    #[test]
    fn what_the_grammar_enforces_passes() {
        let schema = json!({
            "type": "object",
            "title": "weather",
            "properties": {
                "city": { "type": "string", "maxLength": 40, "description": "a city" },
                "unit": { "enum": ["c", "f"] },
                "days": { "type": "integer", "minimum": 1, "maximum": 7 },
                "tags": { "type": "array", "items": { "type": "string" }, "maxItems": 3 },
                "when": { "type": ["string", "null"], "format": "date" },
                "home": { "$ref": "#/$defs/place" },
                "any": {}
            },
            "required": ["city"],
            "additionalProperties": false,
            "$defs": { "place": { "anyOf": [{ "type": "string" }, { "const": 3 }] } }
        });
        assert_eq!(check(&schema), Ok(()));
    }

    #[test]
    fn what_it_would_loosen_is_named() {
        let cases = [
            (
                json!({ "type": "string", "pattern": "^a+$" }),
                "'pattern' at /",
            ),
            (
                json!({ "properties": { "x": { "type": "number", "minimum": 0 } } }),
                "'minimum' at /properties/x",
            ),
            (json!({ "oneOf": [{}, {}] }), "'oneOf' at /"),
            (
                json!({ "type": "array", "uniqueItems": true }),
                "'uniqueItems'",
            ),
            (
                json!({ "type": "string", "format": "email" }),
                "'format' \"email\"",
            ),
            (
                json!({ "type": "string", "format": "float" }),
                "'format' \"float\"",
            ),
            (json!({ "type": "dict" }), "'type' \"dict\""),
            (
                json!({ "type": "string", "maxLength": 100000 }),
                "'maxLength'",
            ),
            (json!({ "$ref": "https://example.com/s.json" }), "'$ref'"),
            (json!(false), "accepts nothing"),
            (
                json!({ "properties": { "a/b": { "not": {} } } }),
                "/properties/a~1b",
            ),
        ];
        for (schema, needle) in cases {
            let err = check(&schema).expect_err(&schema.to_string());
            assert!(err.contains(needle), "{err} should contain {needle}");
        }
    }

    #[test]
    fn annotations_and_numeric_formats_pass_and_are_left_out_of_the_grammar() {
        // What BFCL's converter (and many agent frameworks) send.
        let schema = json!({
            "type": "object",
            "properties": {
                "x": { "type": "number", "format": "float", "description": "x" },
                "n": { "type": "integer", "format": "int32", "optional": true },
                "m": { "type": "integer", "format": "int32", "minimum": 0 },
                "big": { "type": "integer", "format": "int64", "x-vendor": { "pattern": 1 } },
                "pattern": { "type": "string" }
            },
            "required": ["x"],
            "optional": false
        });
        assert_eq!(check(&schema), Ok(()));
        let grammar_schema = enforced(schema);
        assert_eq!(
            grammar_schema,
            json!({
                "type": "object",
                "properties": {
                    "x": { "type": "number" },
                    "n": { "type": "integer", "minimum": i32::MIN, "maximum": i32::MAX },
                    "m": { "type": "integer", "minimum": 0, "maximum": i32::MAX },
                    "big": { "type": "integer" },
                    "pattern": { "type": "string" }
                },
                "required": ["x"],
                "additionalProperties": false
            })
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_recursed_into() {
        let mut schema = json!({ "type": "string" });
        for _ in 0..100 {
            schema = json!({ "type": "array", "items": schema });
        }
        assert!(check(&schema).unwrap_err().contains("deeper"));
    }
}

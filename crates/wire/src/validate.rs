//! Strict reading of untrusted JSON: every refusal names the offending parameter.
//!
//! Request bodies are parsed to a `serde_json::Value` first and then read field by field, so a
//! wrong type, a value out of range, an unknown field and a parameter this server does not
//! implement each get their own clear 400 with `param` set.

use backend::SamplingParams;
use serde_json::{Map, Value};

use crate::error::{ApiError, Result};

/// Most stop sequences one request may carry.
pub const MAX_STOP_SEQUENCES: usize = 16;
/// Longest stop sequence, in bytes. Every sequence is looked for after every generated token
/// on the engine's one worker thread, which all requests of a model share, so stop sequences
/// are bounded in length as well as number.
pub const MAX_STOP_BYTES: usize = 256;
/// Most bytes of all of one request's stop sequences together.
pub const MAX_STOP_TOTAL_BYTES: usize = 1024;

/// Parses a request body that must be a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        let what = if body.iter().all(u8::is_ascii_whitespace) {
            "the request body is empty".to_string()
        } else {
            e.to_string()
        };
        ApiError::new(
            crate::error::Code::InvalidRequest,
            format!("We could not parse the JSON body of your request: {what}. Send a JSON object with Content-Type: application/json."),
        )
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::new(
            crate::error::Code::InvalidRequest,
            format!(
                "The request body must be a JSON object, but got {} instead.",
                kind(&other)
            ),
        )),
    }
}

/// "a string", "an array", … for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON object being read, with the path that names its fields in errors (`""` at the root,
/// `"messages[2]"` inside).
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Fields<'a> {
    pub fn root(map: &'a Map<String, Value>) -> Self {
        Self {
            map,
            path: String::new(),
        }
    }

    pub fn nested(map: &'a Map<String, Value>, path: String) -> Self {
        Self { map, path }
    }

    /// The full parameter name of `key`.
    pub fn param(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`; `null` counts as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Whether `key` is present with an explicit `null` (PATCH: "remove this setting").
    pub fn is_null(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(Value::is_null)
    }

    /// Refuses any key not in `allowed`.
    pub fn deny_unknown(&self, allowed: &[&str]) -> Result<()> {
        match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            None => Ok(()),
            Some(key) => {
                let param = self.param(key);
                let message = if key.is_empty() {
                    format!("Unrecognized request argument supplied: '{param}' (an empty key); remove it.")
                } else {
                    format!("Unrecognized request argument supplied: {param}")
                };
                Err(ApiError::invalid(param, message))
            }
        }
    }

    fn type_error(&self, key: &str, expected: &str, got: &Value) -> ApiError {
        let param = self.param(key);
        ApiError::invalid(
            param.clone(),
            format!(
                "Invalid type for '{param}': expected {expected}, but got {} instead.",
                kind(got)
            ),
        )
    }

    pub fn required(&self, key: &str) -> Result<&'a Value> {
        self.get(key).ok_or_else(|| {
            let param = self.param(key);
            ApiError::invalid(
                param.clone(),
                format!("Missing required parameter: '{param}'."),
            )
        })
    }

    pub fn string(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.type_error(key, "a string", other)),
        }
    }

    /// Checks that each of `keys`, where present, is a string (fields accepted as no-ops).
    pub fn strings(&self, keys: &[&str]) -> Result<()> {
        keys.iter().try_for_each(|key| self.string(key).map(drop))
    }

    pub fn required_string(&self, key: &str) -> Result<&'a str> {
        let value = self.required(key)?;
        value
            .as_str()
            .ok_or_else(|| self.type_error(key, "a string", value))
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.type_error(key, "a boolean", other)),
        }
    }

    pub fn object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(other) => Err(self.type_error(key, "an object", other)),
        }
    }

    pub fn array(&self, key: &str) -> Result<Option<&'a Vec<Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(self.type_error(key, "an array", other)),
        }
    }

    pub fn required_array(&self, key: &str) -> Result<&'a Vec<Value>> {
        let value = self.required(key)?;
        value
            .as_array()
            .ok_or_else(|| self.type_error(key, "an array", value))
    }

    /// A number within `range`; the error says which bound it broke.
    pub fn number(&self, key: &str, range: NumberRange) -> Result<Option<f64>> {
        let value = match self.get(key) {
            None => return Ok(None),
            Some(v) => v,
        };
        let x = value
            .as_f64()
            .ok_or_else(|| self.type_error(key, "a number", value))?;
        let low_ok = if range.min_inclusive {
            x >= range.min
        } else {
            x > range.min
        };
        if !low_ok || x > range.max {
            let param = self.param(key);
            let lower = if range.min_inclusive { ">=" } else { ">" };
            return Err(ApiError::invalid(
                param.clone(),
                format!(
                    "Invalid value for '{param}': expected a number {lower} {} and <= {}, but got {x} instead.",
                    range.min, range.max
                ),
            ));
        }
        Ok(Some(x))
    }

    /// An integer in `[min, max]`.
    pub fn integer(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>> {
        let value = match self.get(key) {
            None => return Ok(None),
            Some(v) => v,
        };
        let x = match value {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_u64().map(|_| i64::MAX))
                .ok_or_else(|| self.type_error(key, "an integer", value))?,
            other => return Err(self.type_error(key, "an integer", other)),
        };
        if x < min || x > max {
            let param = self.param(key);
            return Err(ApiError::invalid(
                param.clone(),
                format!("Invalid value for '{param}': expected an integer >= {min} and <= {max}, but got {value} instead."),
            ));
        }
        Ok(Some(x))
    }

    /// A seed: any JSON integer; negative ones are reinterpreted as their 64-bit pattern.
    pub fn seed(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(value @ Value::Number(n)) => n
                .as_u64()
                .or_else(|| n.as_i64().map(|i| i as u64))
                .map(Some)
                .ok_or_else(|| self.type_error(key, "an integer", value)),
            Some(other) => Err(self.type_error(key, "an integer", other)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct NumberRange {
    pub min: f64,
    pub min_inclusive: bool,
    pub max: f64,
}

const fn closed(min: f64, max: f64) -> NumberRange {
    NumberRange {
        min,
        min_inclusive: true,
        max,
    }
}

/// The message for a parameter this server does not implement.
pub fn unsupported(param: &str) -> ApiError {
    ApiError::invalid(
        param,
        format!("'{param}' is not supported yet by this server"),
    )
}

/// A parameter this server refuses unless it holds its no-op value.
pub struct Refused {
    pub key: &'static str,
    /// Whether the (non-null) value asks for nothing, so it may pass.
    pub is_noop: fn(&Value) -> bool,
}

pub fn never(_: &Value) -> bool {
    false
}

pub fn is_false(v: &Value) -> bool {
    v == &Value::Bool(false)
}

pub fn is_empty_object(v: &Value) -> bool {
    v.as_object().is_some_and(Map::is_empty)
}

pub fn is_empty_array(v: &Value) -> bool {
    v.as_array().is_some_and(Vec::is_empty)
}

/// Refuses any field in `refused` that is present, not null and not at its no-op value.
pub fn deny_refused(fields: &Fields<'_>, refused: &[Refused]) -> Result<()> {
    for r in refused {
        if let Some(value) = fields.get(r.key) {
            if !(r.is_noop)(value) {
                return Err(unsupported(&fields.param(r.key)));
            }
        }
    }
    Ok(())
}

/// The sampling and length parameters shared by both endpoints.
pub struct Generation {
    pub sampling: SamplingParams,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// `stream_options.continuous_usage_stats` (vLLM's extension): every chunk carries the
    /// usage so far, so a client knows what it has been billed for if the stream breaks.
    pub continuous_usage: bool,
}

/// `top_p` as the sampler takes it: an f64 too small for an f32 (1e-85) would round to 0,
/// outside the open interval the wire promised, so it becomes the smallest positive f32.
pub fn top_p(x: f64) -> f32 {
    (x as f32).max(f32::MIN_POSITIVE)
}

/// Reads the parameters both endpoints share. `max_token_keys` lists the length keys this
/// endpoint accepts, in order of precedence.
pub fn generation(fields: &Fields<'_>, max_token_keys: &[&str]) -> Result<Generation> {
    let defaults = SamplingParams::default();
    let penalty = closed(-2.0, 2.0);
    let sampling = SamplingParams {
        temperature: fields
            .number("temperature", closed(0.0, 2.0))?
            .map_or(defaults.temperature, |x| x as f32),
        top_p: fields
            .number(
                "top_p",
                NumberRange {
                    min: 0.0,
                    min_inclusive: false,
                    max: 1.0,
                },
            )?
            .map_or(defaults.top_p, top_p),
        top_k: match fields.integer("top_k", 0, i64::from(i32::MAX))? {
            Some(k) => i32::try_from(k).unwrap_or(i32::MAX),
            None => defaults.top_k,
        },
        min_p: fields
            .number("min_p", closed(0.0, 1.0))?
            .map_or(defaults.min_p, |x| x as f32),
        seed: fields.seed("seed")?,
        presence_penalty: fields
            .number("presence_penalty", penalty)?
            .map_or(defaults.presence_penalty, |x| x as f32),
        frequency_penalty: fields
            .number("frequency_penalty", penalty)?
            .map_or(defaults.frequency_penalty, |x| x as f32),
        ignore_eos: fields.bool("ignore_eos")?.unwrap_or(defaults.ignore_eos),
        ..defaults
    };

    let mut max_tokens = None;
    for key in max_token_keys {
        let value = fields.integer(key, 1, i64::from(u32::MAX))?;
        if max_tokens.is_none() {
            max_tokens = value.and_then(|v| u32::try_from(v).ok());
        }
    }

    let stream = fields.bool("stream")?.unwrap_or(false);
    let (include_usage, continuous_usage) = match fields.object("stream_options")? {
        None => (false, false),
        Some(_) if !stream => {
            return Err(ApiError::invalid(
                "stream_options",
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            ))
        }
        Some(options) => {
            let options = Fields::nested(options, fields.param("stream_options"));
            options.deny_unknown(&[
                "include_usage",
                "include_obfuscation",
                "continuous_usage_stats",
            ])?;
            options.bool("include_obfuscation")?;
            (
                options.bool("include_usage")?.unwrap_or(false),
                options.bool("continuous_usage_stats")?.unwrap_or(false),
            )
        }
    };

    Ok(Generation {
        sampling,
        max_tokens,
        stop: stop(fields, "stop")?,
        stream,
        include_usage,
        continuous_usage,
    })
}

/// `stop` (or another `key`): a string or an array of up to [`MAX_STOP_SEQUENCES`] non-empty strings, each at
/// most [`MAX_STOP_BYTES`] long and all together at most [`MAX_STOP_TOTAL_BYTES`].
pub fn stop(fields: &Fields<'_>, key: &str) -> Result<Vec<String>> {
    let param = fields.param(key);
    let stops = match fields.get(key) {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![(param.clone(), s)],
        Some(Value::Array(items)) => {
            if items.len() > MAX_STOP_SEQUENCES {
                return Err(ApiError::invalid(
                    param.clone(),
                    format!(
                        "Invalid value for '{param}': at most {MAX_STOP_SEQUENCES} stop sequences are allowed, but got {}.",
                        items.len()
                    ),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok((format!("{param}[{i}]"), s)),
                    other => Err(ApiError::invalid(
                        format!("{param}[{i}]"),
                        format!(
                            "Invalid type for '{param}[{i}]': expected a string, but got {} instead.",
                            kind(other)
                        ),
                    )),
                })
                .collect::<Result<Vec<_>>>()?
        }
        Some(other) => {
            return Err(ApiError::invalid(
                param.clone(),
                format!(
                    "Invalid type for '{param}': expected a string or an array of strings, but got {} instead.",
                    kind(other)
                ),
            ))
        }
    };
    let mut total = 0;
    for (p, s) in &stops {
        if s.is_empty() {
            return Err(ApiError::invalid(
                p.clone(),
                format!("Invalid value for '{p}': stop sequences must not be empty."),
            ));
        }
        if s.len() > MAX_STOP_BYTES {
            return Err(ApiError::invalid(
                p.clone(),
                format!(
                    "Invalid value for '{p}': a stop sequence may be at most {MAX_STOP_BYTES} bytes long, but this one has {}. Use a shorter one.",
                    s.len()
                ),
            ));
        }
        total += s.len();
    }
    if total > MAX_STOP_TOTAL_BYTES {
        return Err(ApiError::invalid(
            param.clone(),
            format!(
                "Invalid value for '{param}': the stop sequences may have at most {MAX_STOP_TOTAL_BYTES} bytes together, but these have {total}. Use fewer or shorter ones."
            ),
        ));
    }
    Ok(stops.into_iter().map(|(_, s)| s.clone()).collect())
}

/// `n`: how many answers (1 to [`backend::MAX_CHOICES`]).
pub fn n(fields: &Fields<'_>) -> Result<u32> {
    let max = backend::MAX_CHOICES;
    match fields.integer("n", 1, i64::MAX)? {
        Some(n) if n > i64::from(max) => Err(ApiError::invalid(
            "n",
            format!("Invalid value for 'n': at most {max} answers per request, but {n} were asked for; send several requests."),
        )),
        Some(n) => Ok(n as u32),
        None => Ok(1),
    }
}

/// The object at `path` in a list (`messages[2]`, `tools[0]`), ready to read; anything else is
/// a 400 naming it.
pub fn object_item(item: &Value, path: String) -> Result<Fields<'_>> {
    match item.as_object() {
        Some(map) => Ok(Fields::nested(map, path)),
        None => Err(ApiError::invalid(
            path.clone(),
            format!(
                "Invalid type for '{path}': expected an object, but got {} instead.",
                kind(item)
            ),
        )),
    }
}

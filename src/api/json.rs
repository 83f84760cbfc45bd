//! Reading client JSON with errors that name the exact field (`messages[2].content`) and
//! say what was expected, which serde's own messages do not.

use crate::chat::ChatError;
use serde_json::{Map, Value};

/// The JSON type name used in error messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses the body as a JSON object.
pub fn parse_object(body: &[u8], hint: &str) -> Result<Map<String, Value>, ChatError> {
    // A UTF-8 byte-order mark (some Windows tools write one) is not part of the JSON.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let value: Value = serde_json::from_slice(body).map_err(|e| ChatError::InvalidRequest {
        message: json_error(&e, hint),
        param: None,
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ChatError::InvalidRequest {
            message: format!(
                "The request body must be a JSON object, got {}. {hint}",
                type_name(&other)
            ),
            param: None,
        }),
    }
}

/// What is wrong with a body serde_json could not read, in words a client can act on.
fn json_error(error: &serde_json::Error, hint: &str) -> String {
    let text = error.to_string();
    let at = format!("line {} column {}", error.line(), error.column());
    if text.starts_with("recursion limit exceeded") {
        format!("The request body is nested too deeply (more than 128 levels of arrays and objects, at {at}); flatten it.")
    } else if text.contains("surrogate") || text.contains("hex escape") {
        format!("The request body has a bad \\u escape at {at}: a lone UTF-16 surrogate (\\uD800-\\uDFFF without its pair) or fewer than four hex digits; JSON strings must be valid Unicode.")
    } else {
        format!("The request body is not valid JSON ({text}). {hint}")
    }
}

/// `path` is the field's full name in messages (`messages[0].role`).
pub fn wrong_type(path: &str, expected: &str, got: &Value) -> ChatError {
    ChatError::invalid(
        path,
        format!("`{path}` must be {expected}, got {}.", type_name(got)),
    )
}

/// Joins a parent path and a key.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Accessors over one JSON object, each naming `path.key` in its errors.
pub struct Obj<'a> {
    /// The object.
    pub map: &'a Map<String, Value>,
    /// Its path (`""` for the body).
    pub path: String,
}

/// A search tool's `user_location` (`{type: "approximate", city, region, country,
/// timezone}`, each part optional) as words for the model: `Berlin, BE, DE (Europe/Berlin)`.
pub fn user_location(tool: &Obj<'_>) -> Result<Option<String>, ChatError> {
    let Some(value) = tool.get("user_location").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let location = Obj::new(value, tool.at("user_location"))?;
    if let Some(kind) = location.str("type")? {
        if kind != "approximate" {
            return Err(ChatError::invalid(
                location.at("type"),
                format!(
                    "`{}` is `{kind}`; allowed: approximate.",
                    location.at("type")
                ),
            ));
        }
    }
    let mut words = Vec::new();
    for key in ["city", "region", "country"] {
        if let Some(part) = location.str(key)?.filter(|p| !p.trim().is_empty()) {
            words.push(part.trim().to_owned());
        }
    }
    let mut text = words.join(", ");
    if let Some(zone) = location.str("timezone")?.filter(|z| !z.trim().is_empty()) {
        text = format!("{text} ({})", zone.trim()).trim().to_owned();
    }
    Ok((!text.is_empty()).then_some(text))
}

impl<'a> Obj<'a> {
    /// Wraps `value`, which must be an object.
    pub fn new(value: &'a Value, path: String) -> Result<Self, ChatError> {
        match value {
            Value::Object(map) => Ok(Self { map, path }),
            other => Err(wrong_type(&path, "an object", other)),
        }
    }

    /// A field, treating `null` as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Path of a field.
    pub fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// An optional string.
    pub fn str(&self, key: &str) -> Result<Option<&'a str>, ChatError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(&self.at(key), "a string", other)),
        }
    }

    /// A required, non-empty string.
    pub fn required_str(&self, key: &str) -> Result<&'a str, ChatError> {
        match self.str(key)? {
            Some(s) if !s.is_empty() => Ok(s),
            Some(_) => Err(ChatError::invalid(
                self.at(key),
                format!("`{}` must not be empty.", self.at(key)),
            )),
            None => Err(self.missing(key)),
        }
    }

    /// The error for an absent required field.
    fn missing(&self, key: &str) -> ChatError {
        ChatError::invalid(self.at(key), format!("`{}` is required.", self.at(key)))
    }

    /// A required field of any type.
    pub fn required(&self, key: &str) -> Result<&'a Value, ChatError> {
        self.get(key).ok_or_else(|| self.missing(key))
    }

    /// A required object.
    pub fn required_obj(&self, key: &str) -> Result<Obj<'a>, ChatError> {
        Obj::new(self.required(key)?, self.at(key))
    }

    /// An optional boolean.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ChatError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(&self.at(key), "a boolean", other)),
        }
    }

    /// An optional non-negative integer that fits in u32.
    pub fn u32(&self, key: &str) -> Result<Option<u32>, ChatError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => value
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| wrong_type(&self.at(key), "a non-negative integer", value)),
        }
    }

    /// An optional number within `range`.
    pub fn number(&self, key: &str, min: f64, max: f64) -> Result<Option<f64>, ChatError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => match value.as_f64() {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                Some(n) => Err(ChatError::invalid(
                    self.at(key),
                    format!(
                        "`{}` must be between {min} and {max}, got {n}.",
                        self.at(key)
                    ),
                )),
                None => Err(wrong_type(&self.at(key), "a number", value)),
            },
        }
    }

    /// An optional array.
    pub fn array(&self, key: &str) -> Result<Option<&'a Vec<Value>>, ChatError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(other) => Err(wrong_type(&self.at(key), "an array", other)),
        }
    }

    /// `key` as an array of strings (empty when absent); an item that is not a string is an
    /// error naming it (`key[i]`).
    pub fn strings(&self, key: &str) -> Result<Vec<String>, ChatError> {
        self.array(key)?
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(wrong_type(
                    &format!("{}[{i}]", self.at(key)),
                    "a string",
                    other,
                )),
            })
            .collect()
    }

    /// Refuses any key but `allowed`, naming the first other one: it is not a field of
    /// `what`, which `takes` the keys listed in words.
    pub fn only(&self, allowed: &[&str], what: &str, takes: &str) -> Result<(), ChatError> {
        match self.map.keys().find(|key| !allowed.contains(&key.as_str())) {
            Some(key) => Err(ChatError::invalid(
                self.at(key),
                format!(
                    "`{}` is not a field of {what} here; it takes {takes}.",
                    self.at(key)
                ),
            )),
            None => Ok(()),
        }
    }
}

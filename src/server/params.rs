//! MLflow REST request parameters: a `GET` (or a body-less `DELETE`) carries them in the query
//! string, with repeated keys for lists (`stages=Production&stages=Staging`); every other method
//! carries a JSON object body. Accessors check types and presence and answer with MLflow's
//! messages ("Missing value for required parameter 'name'. ...").

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::Method;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::registry::{RegistryError, Tag};

/// The parameters of one MLflow REST request, as a JSON object.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Map<String, Value>);

const API_DOCS_HINT: &str = " See the API docs for more information about request parameters.";

fn invalid(message: String) -> RegistryError {
    RegistryError::InvalidParameter(message)
}

fn wrong_type(key: &str, v: &Value) -> RegistryError {
    let ty = match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    };
    invalid(format!(
        "Invalid value {v} for parameter '{key}' supplied:  Hint: Value was of type '{ty}'.{API_DOCS_HINT}"
    ))
}

impl Params {
    /// Parse a query string; a key given more than once becomes a list.
    pub fn from_query(query: &str) -> Params {
        let mut map = Map::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode_component(k), decode_component(v));
            match map.get_mut(&k) {
                Some(Value::Array(list)) => list.push(Value::String(v)),
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, Value::String(v)]);
                }
                None => {
                    map.insert(k, Value::String(v));
                }
            }
        }
        Params(map)
    }

    /// Parse a JSON object body (an empty body is an empty object).
    pub fn from_json(body: &[u8]) -> Result<Params, RegistryError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Params::default());
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Params(map)),
            // Old clients double-encode: a JSON string holding the object.
            Ok(Value::String(inner)) => match serde_json::from_str::<Value>(&inner) {
                Ok(Value::Object(map)) => Ok(Params(map)),
                _ => Err(invalid("The request body must be a JSON object.".into())),
            },
            Ok(_) => Err(invalid("The request body must be a JSON object.".into())),
            Err(e) => Err(invalid(format!("The request body is not valid JSON: {e}"))),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// A required, non-empty string.
    pub fn required_str(&self, key: &str) -> Result<String, RegistryError> {
        match self.opt_str(key)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(invalid(format!("Missing value for required parameter '{key}'.{API_DOCS_HINT}"))),
        }
    }

    /// An optional string; a single-element list (a query key given once) counts as a string.
    pub fn opt_str(&self, key: &str) -> Result<Option<String>, RegistryError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Array(list)) if list.len() == 1 => match &list[0] {
                Value::String(s) => Ok(Some(s.clone())),
                other => Err(wrong_type(key, other)),
            },
            Some(other) => Err(wrong_type(key, other)),
        }
    }

    /// A string, or "" when absent.
    pub fn str_or_empty(&self, key: &str) -> Result<String, RegistryError> {
        Ok(self.opt_str(key)?.unwrap_or_default())
    }

    /// The required `version` parameter: a positive integer given as a string or a number.
    pub fn version(&self) -> Result<u64, RegistryError> {
        let raw = match self.get("version") {
            None => None,
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => self.opt_str("version")?,
        };
        let raw = raw
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid(format!("Missing value for required parameter 'version'.{API_DOCS_HINT}")))?;
        raw.trim().parse::<u64>().map_err(|_| invalid(format!("Parameter 'version' must be an integer, got '{raw}'.")))
    }

    /// An optional integer given as a number or a numeric string.
    pub fn opt_i64(&self, key: &str) -> Result<Option<i64>, RegistryError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                n.as_i64().map(Some).ok_or_else(|| invalid(format!("Parameter '{key}' must be an integer, got '{n}'.")))
            }
            Some(v) => match self.opt_str(key)? {
                Some(s) if s.is_empty() => Ok(None),
                Some(s) => s.trim().parse::<i64>().map(Some).map_err(|_| wrong_type(key, v)),
                None => Ok(None),
            },
        }
    }

    /// An optional number (metric values); `NaN`/`Infinity` strings are accepted as MLflow's
    /// client may send them.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, RegistryError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(v) => match self.opt_str(key)? {
                Some(s) => s.trim().parse::<f64>().map(Some).map_err(|_| wrong_type(key, v)),
                None => Ok(None),
            },
        }
    }

    /// An optional boolean: `true`/`false` or the strings "true"/"false" (any case).
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, RegistryError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => match self.opt_str(key)?.as_deref().map(str::to_ascii_lowercase) {
                Some(s) if s == "true" => Ok(Some(true)),
                Some(s) if s == "false" => Ok(Some(false)),
                Some(s) => Err(invalid(format!("Invalid boolean value: {s}, must be 'true' or 'false'."))),
                None => Ok(None),
            },
        }
    }

    /// A list of strings (a single string is a one-element list; absent is empty).
    pub fn str_list(&self, key: &str) -> Result<Vec<String>, RegistryError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(wrong_type(key, other)),
                })
                .collect(),
            Some(other) => Err(wrong_type(key, other)),
        }
    }

    /// A list of JSON objects (`tags`, `metrics`, `models`, ...).
    pub fn objects(&self, key: &str) -> Result<Vec<Params>, RegistryError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| match v {
                    Value::Object(m) => Ok(Params(m.clone())),
                    other => Err(wrong_type(key, other)),
                })
                .collect(),
            Some(other) => Err(wrong_type(key, other)),
        }
    }

    /// `[{"key": ..., "value": ...}]`; a missing value is "".
    pub fn tags(&self, key: &str) -> Result<Vec<Tag>, RegistryError> {
        self.objects(key)?
            .into_iter()
            .map(|t| Ok(Tag { key: t.required_str("key")?, value: t.str_or_empty("value")? }))
            .collect()
    }

    /// `max_results`: `default` when absent; at least 1 and at most `limit`.
    pub fn max_results(&self, default: usize, limit: usize) -> Result<usize, RegistryError> {
        match self.opt_i64("max_results")? {
            None => Ok(default),
            Some(n) if n >= 1 && n as u64 <= limit as u64 => Ok(n as usize),
            Some(n) => Err(invalid(format!(
                "Invalid value {n} for parameter 'max_results' supplied: it must be between 1 and {limit}."
            ))),
        }
    }
}

/// Percent-decode one query component (`+` is a space).
fn decode_component(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let query = Params::from_query(req.uri().query().unwrap_or(""));
        if req.method() == Method::GET {
            return Ok(query);
        }
        let body = Bytes::from_request(req, state).await.map_err(|e| match e.status() {
            axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit: BODY_LIMIT },
            _ => ApiError::Registry(invalid(format!("Could not read the request body: {e}"))),
        })?;
        let mut params = Params::from_json(&body)?;
        // Query parameters fill in what the body does not say (a body-less DELETE uses them).
        for (k, v) in query.0 {
            params.0.entry(k).or_insert(v);
        }
        Ok(params)
    }
}

/// The default request body limit of axum's extractors (JSON bodies; uploads stream).
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_with_repeated_keys() {
        let p = Params::from_query("name=a+b&stages=Production&stages=Staging&x=%27q%27");
        assert_eq!(p.required_str("name").unwrap(), "a b");
        assert_eq!(p.str_list("stages").unwrap(), ["Production", "Staging"]);
        assert_eq!(p.opt_str("x").unwrap().as_deref(), Some("'q'"));
        let one = Params::from_query("stages=Production");
        assert_eq!(one.str_list("stages").unwrap(), ["Production"]);
    }

    #[test]
    fn messages_match_mlflow() {
        let p = Params::from_query("version=abc");
        assert_eq!(p.version().unwrap_err().to_string(), "Parameter 'version' must be an integer, got 'abc'.");
        assert_eq!(
            p.required_str("name").unwrap_err().to_string(),
            "Missing value for required parameter 'name'. See the API docs for more information about request parameters."
        );
        let j = Params::from_json(br#"{"name": 5, "version": 3, "flag": "TRUE"}"#).unwrap();
        assert!(j.required_str("name").unwrap_err().to_string().contains("type 'int'"));
        assert_eq!(j.version().unwrap(), 3);
        assert_eq!(j.opt_bool("flag").unwrap(), Some(true));
        assert!(Params::from_json(b"[1]").is_err());
        assert!(Params::from_json(b"{").is_err());
        assert!(Params::from_json(b"").unwrap().0.is_empty());
    }

    #[test]
    fn max_results_bounds() {
        let p = Params::from_query("max_results=1001");
        assert!(p.max_results(100, 1000).is_err());
        assert!(Params::from_query("max_results=0").max_results(100, 1000).is_err());
        assert!(Params::from_query("max_results=x").max_results(100, 1000).is_err());
        assert_eq!(Params::default().max_results(100, 1000).unwrap(), 100);
    }
}

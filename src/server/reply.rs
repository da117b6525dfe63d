//! MLflow REST replies: a JSON object written field by field, so fields keep the order of the
//! Rust structs (which follow MLflow's protobuf order), empty lists and absent values left out,
//! `{}` for an empty reply.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;

pub type Reply = Result<Response, ApiError>;

/// A JSON object under construction.
pub struct JsonReply {
    buf: Vec<u8>,
}

fn internal(e: serde_json::Error) -> ApiError {
    ApiError::Internal(format!("serializing a reply: {e}"))
}

impl JsonReply {
    pub fn new() -> Self {
        JsonReply { buf: b"{".to_vec() }
    }

    /// Add `key: value`.
    pub fn field<T: Serialize + ?Sized>(mut self, key: &str, value: &T) -> Result<Self, ApiError> {
        if self.buf.len() > 1 {
            self.buf.push(b',');
        }
        serde_json::to_writer(&mut self.buf, key).map_err(internal)?;
        self.buf.push(b':');
        serde_json::to_writer(&mut self.buf, value).map_err(internal)?;
        Ok(self)
    }

    /// Add `key: [...]` unless the list is empty.
    pub fn list<T: Serialize>(self, key: &str, items: &[T]) -> Result<Self, ApiError> {
        if items.is_empty() {
            Ok(self)
        } else {
            self.field(key, items)
        }
    }

    /// Add `key: value` when there is a value.
    pub fn opt<T: Serialize>(self, key: &str, value: Option<&T>) -> Result<Self, ApiError> {
        match value {
            Some(v) => self.field(key, v),
            None => Ok(self),
        }
    }

    pub fn finish(mut self) -> Reply {
        self.buf.push(b'}');
        Ok(([(header::CONTENT_TYPE, "application/json")], self.buf).into_response())
    }
}

impl Default for JsonReply {
    fn default() -> Self {
        Self::new()
    }
}

/// `{key: value}`.
pub fn one<T: Serialize + ?Sized>(key: &str, value: &T) -> Reply {
    JsonReply::new().field(key, value)?.finish()
}

/// `{}`.
pub fn empty() -> Reply {
    JsonReply::new().finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct S {
        b: u8,
        a: u8,
    }

    #[tokio::test]
    async fn keeps_field_order_and_leaves_out_empties() {
        let r = JsonReply::new()
            .field("z", &S { b: 1, a: 2 })
            .unwrap()
            .list::<u8>("empty", &[])
            .unwrap()
            .opt::<String>("none", None)
            .unwrap()
            .finish()
            .unwrap();
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], br#"{"z":{"b":1,"a":2}}"#);
    }
}

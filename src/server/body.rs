//! Request bodies. Every body the REST API takes is one JSON object; serde alone would
//! also fill a struct from an array by position (`["x"]` as `{"display_name": "x"}`), so
//! the shape is checked here, once, before the fields are read.

use axum::Json;
use axum::extract::{FromRequest, Request};
use gatehouse_signaling::ErrorCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// A JSON object body (with `Content-Type: application/json`), read into `T`.
/// Anything but an object is 400 `bad_request`; a syntax error or a missing content
/// type is 400 `malformed_json`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<Value>::from_request(req, state).await?;
        object_body(value).map(JsonBody)
    }
}

/// A body that may be left out: no bytes at all is `None`; otherwise it must be a JSON
/// object as for [`JsonBody`] (the content type is not required).
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
        if bytes.is_empty() {
            return Ok(OptionalJsonBody(None));
        }
        let value = serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| ApiError::new(ErrorCode::MalformedJson, format!("the body is not JSON: {e}")))?;
        object_body(value).map(|t| OptionalJsonBody(Some(t)))
    }
}

/// Reads `T` from a parsed body that must be a JSON object.
pub fn object_body<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    let shape = match &value {
        Value::Object(_) => None,
        Value::Array(_) => Some("an array"),
        Value::String(_) => Some("a string"),
        Value::Number(_) => Some("a number"),
        Value::Bool(_) => Some("a boolean"),
        Value::Null => Some("null"),
    };
    if let Some(shape) = shape {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("the body must be a JSON object, not {shape}"),
        ));
    }
    T::deserialize(value).map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("invalid body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Redeem {
        display_name: String,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(default)]
    struct AllOptional {
        title: Option<String>,
    }

    fn code<T: std::fmt::Debug>(r: Result<T, ApiError>) -> ErrorCode {
        r.expect_err("refused").0.code
    }

    #[test]
    fn only_objects_are_bodies() {
        assert_eq!(
            object_body::<Redeem>(json!({ "display_name": "Ada" })).unwrap(),
            Redeem {
                display_name: "Ada".into()
            }
        );
        // Each of these would fill the struct by position, or a struct of optional fields
        // from nothing, if serde were asked directly.
        for bad in [json!(["x"]), json!([]), json!("x"), json!(1), json!(true), json!(null)] {
            assert_eq!(code(object_body::<Redeem>(bad.clone())), ErrorCode::BadRequest, "{bad}");
            assert_eq!(
                code(object_body::<AllOptional>(bad.clone())),
                ErrorCode::BadRequest,
                "{bad}"
            );
        }
        assert_eq!(object_body::<AllOptional>(json!({})).unwrap(), AllOptional::default());
    }

    #[test]
    fn objects_of_the_wrong_shape_are_bad_requests() {
        for bad in [
            json!({}),
            json!({ "display_name": 1 }),
            json!({ "display_name": "a", "x": 1 }),
        ] {
            assert_eq!(code(object_body::<Redeem>(bad.clone())), ErrorCode::BadRequest, "{bad}");
        }
    }
}

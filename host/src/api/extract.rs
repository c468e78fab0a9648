//! Extractors that turn every malformed request into an [`ApiError`]
//! envelope: JSON bodies, query strings and path parameters.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// A JSON body whose every failure (bad syntax, wrong content type, wrong
/// types, missing or unknown fields, too large) becomes an [`ApiError`].
///
/// Bodies are strict: where the type declares an object, only a JSON object
/// is accepted. serde reads a struct from an array of its fields in order,
/// so the body is parsed to JSON first, decoded, and the decoded value's
/// shape compared with what was sent: an array where the type has an
/// object is refused with 422, wherever it is nested.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned + Serialize,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(body) = Json::<Value>::from_request(req, state).await?;
        decode_strict(body).map(Self)
    }
}

/// Decodes `body` into `T`, refusing arrays where `T` has objects.
pub fn decode_strict<T: DeserializeOwned + Serialize>(mut body: Value) -> Result<T, ApiError> {
    whole_numbers_as_integers(&mut body);
    if !body.is_object() {
        return Err(ApiError::invalid(format!(
            "the request body must be a JSON object, not {}",
            kind_of(&body)
        )));
    }
    let decoded: T = serde_path_to_error::deserialize(&body).map_err(|err| {
        let path = err.path().to_string();
        if path == "." {
            ApiError::invalid(err.inner().to_string())
        } else {
            ApiError::invalid(format!("`{path}`: {}", err.inner()))
        }
    })?;
    let echoed = serde_json::to_value(&decoded).map_err(ApiError::internal)?;
    same_shape(&body, &echoed, &mut String::new()).map_err(ApiError::invalid)?;
    Ok(decoded)
}

/// Writes `834.0` as `834` wherever it occurs. JSON has one number type and
/// JSON Schema's `integer` admits both spellings, but serde reads an
/// integer field only from the second, so a client that writes whole
/// numbers with a fraction would be refused for a field it got right.
fn whole_numbers_as_integers(value: &mut Value) {
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            Value::Number(number) if number.is_f64() => {
                let float = number.as_f64().unwrap_or(f64::NAN);
                let whole = float.fract() == 0.0 && float.abs() < 9.0e15;
                if whole {
                    *value = Value::from(float as i64);
                }
            }
            Value::Array(items) => pending.extend(items.iter_mut()),
            Value::Object(map) => pending.extend(map.values_mut()),
            _ => {}
        }
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Fails where `sent` has an array and `decoded` (what the type made of it)
/// has an object. Fields the type renamed, skipped or defaulted are simply
/// not compared.
fn same_shape(sent: &Value, decoded: &Value, path: &mut String) -> Result<(), String> {
    match (sent, decoded) {
        (Value::Array(_), Value::Object(_)) => Err(format!(
            "`{}` must be a JSON object, not an array",
            if path.is_empty() { "." } else { path }
        )),
        (Value::Object(sent), Value::Object(decoded)) => {
            for (key, value) in decoded {
                if let Some(sent_value) = sent.get(key) {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                    same_shape(sent_value, value, path)?;
                    path.truncate(len);
                }
            }
            Ok(())
        }
        (Value::Array(sent), Value::Array(decoded)) => {
            for (index, (sent_item, item)) in sent.iter().zip(decoded).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{index}]"));
                same_shape(sent_item, item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Query parameters whose every failure becomes a 400 [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_query",
                        rejection.body_text(),
                    )
                })?;
        Ok(Self(value))
    }
}

/// Path parameters, typically [`crate::names::Name`]s, checked before the
/// handler runs. A parameter that is not a valid name cannot name anything
/// that exists: 404, or 422 on `PUT`, which would create it. A parameter
/// that is not UTF-8 is a 400. Every refusal is the envelope.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::path::ErrorKind;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(PathRejection::FailedToDeserializePathParams(err)) => {
                let text = err.body_text();
                Err(match err.into_kind() {
                    ErrorKind::InvalidUtf8InPathParam { key } => ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_path",
                        format!("path parameter `{key}` is not valid UTF-8"),
                    ),
                    ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::DeserializeError { key, .. } => {
                        bad_name(&parts.method, &format!("path parameter `{key}`: {text}"))
                    }
                    _ => bad_name(&parts.method, &text),
                })
            }
            Err(other) => Err(ApiError::internal(other.body_text())),
        }
    }
}

fn bad_name(method: &Method, message: &str) -> ApiError {
    let message = message.to_owned();
    if method == Method::PUT {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_name", message)
    } else {
        ApiError::not_found(message)
    }
}

/// Largest page a list gives.
pub const MAX_PAGE: usize = 500;

/// Checks a list's `limit`: 1 to [`MAX_PAGE`], or absent; 400 otherwise.
pub fn check_page_limit(limit: Option<usize>) -> Result<(), ApiError> {
    if limit.is_some_and(|limit| !(1..=MAX_PAGE).contains(&limit)) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("`limit` must be 1 to {MAX_PAGE}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        name: String,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Outer {
        id: String,
        #[serde(default)]
        steps: Vec<Inner>,
        data: Option<Value>,
    }

    fn message(err: ApiError) -> String {
        format!("{err:?}")
    }

    #[test]
    fn objects_decode() {
        let outer: Outer =
            decode_strict(json!({"id": "a", "steps": [{"name": "s"}], "data": [1, 2]})).unwrap();
        assert_eq!(outer.steps[0].name, "s");
    }

    #[test]
    fn arrays_are_refused_where_objects_are_declared() {
        let err = decode_strict::<Outer>(json!(["a", [], null])).unwrap_err();
        assert!(message(err).contains("must be a JSON object, not an array"));
        let err = decode_strict::<Outer>(json!({"id": "a", "steps": [["s"]]})).unwrap_err();
        assert!(message(err).contains("`steps[0]` must be a JSON object"));
    }

    #[test]
    fn free_form_values_keep_their_arrays() {
        let outer: Outer = decode_strict(json!({"id": "a", "data": [["x"]]})).unwrap();
        assert_eq!(outer.data, Some(json!([["x"]])));
    }

    #[test]
    fn whole_numbers_written_with_a_fraction_are_integers() {
        #[derive(Debug, Deserialize, Serialize)]
        struct Count {
            n: u32,
        }
        let count: Count = decode_strict(json!({"n": 834.0})).unwrap();
        assert_eq!(count.n, 834);
        assert!(decode_strict::<Count>(json!({"n": 834.5})).is_err());
    }

    #[test]
    fn errors_name_the_field() {
        let err = decode_strict::<Outer>(json!({"id": "a", "steps": [{"name": 5}]})).unwrap_err();
        assert!(message(err).contains("steps[0].name"));
    }
}

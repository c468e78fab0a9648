//! The OpenAPI document as the API really answers.
//!
//! Routes declare their own bodies and the statuses particular to them (see
//! the `#[utoipa::path]` on each handler). What every route shares is added
//! here, in one place, so the document cannot drift from the code: every
//! success body is wrapped in the envelope `{"success": true, "data": …}`
//! that `error::ok`/`created` send, and every operation lists the error
//! statuses the layers around it can answer (a bad token, a rate limit, a
//! timeout, a malformed body or path), each with the error envelope.

use serde_json::{Map, Value, json};

/// Error statuses any operation can answer, whatever its route: a bad or
/// revoked token, a rate limit, a request timeout, the host's own failure.
const EVERY_OPERATION: [(&str, &str); 4] = [
    ("401", "No, a bad or a revoked token"),
    (
        "429",
        "The token sent more requests than its rate limit allows",
    ),
    ("500", "The host failed; its log has the details"),
    (
        "503",
        "The request was not answered within the request timeout, the plugin's call slots stayed busy, or the store cannot take writes now (`storage_unavailable`, with `Retry-After` in seconds)",
    ),
];

/// Error statuses of an operation with a JSON or form body.
const WITH_BODY: [(&str, &str); 5] = [
    ("400", "The body is not well-formed JSON"),
    ("408", "The body stalled past the body timeout"),
    ("413", "The body is over the size limit"),
    (
        "415",
        "The body's content type is not the one the operation takes",
    ),
    (
        "422",
        "A field is missing, unknown, of the wrong type, or not allowed",
    ),
];

/// Error statuses of an operation with path parameters.
const WITH_PATH: [(&str, &str); 2] = [
    ("400", "A path parameter is not UTF-8"),
    (
        "404",
        "Nothing has that name or id, or it belongs to another team",
    ),
];

/// The document served at `/openapi.json`, built from utoipa's, whose
/// paths are registered under `base` (the document's server URL): the
/// document lists them relative to it.
pub fn document(generated: utoipa::openapi::OpenApi, base: &str) -> Value {
    let mut doc = serde_json::to_value(generated).expect("the OpenAPI document is JSON");
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        *paths = std::mem::take(paths)
            .into_iter()
            .map(|(path, item)| match path.strip_prefix(base) {
                Some(relative) => (relative.to_owned(), item),
                None => (path, item),
            })
            .collect();
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in item.iter_mut() {
                if !matches!(method.as_str(), "get" | "put" | "post" | "delete" | "patch") {
                    continue;
                }
                complete_operation(path, operation);
            }
        }
    }
    doc
}

fn complete_operation(path: &str, operation: &mut Value) {
    let has_body = operation.get("requestBody").is_some();
    let has_query = operation
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|params| params.iter().any(|p| p["in"] == "query"));
    let is_team_owned = operation["tags"]
        .as_array()
        .is_some_and(|tags| !tags.iter().any(|tag| tag == "system"));
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (status, response) in responses.iter_mut() {
        if status.starts_with('2') {
            wrap_success(response);
        }
    }
    let mut errors: Vec<(&str, &str)> = EVERY_OPERATION.to_vec();
    if has_body {
        errors.extend(WITH_BODY);
    }
    if path.contains('{') {
        errors.extend(WITH_PATH);
    }
    if has_query {
        errors.push(("400", "A query parameter has an unknown name or value"));
    }
    if is_team_owned {
        errors.push((
            "403",
            "The token's role does not allow this, or a body names another team",
        ));
    }
    for (status, description) in errors {
        responses
            .entry(status)
            .or_insert_with(|| error_response(description));
    }
}

/// Puts a success response's JSON schema inside the envelope; a response
/// declared without a body gets an envelope whose `data` is any JSON.
fn wrap_success(response: &mut Value) {
    let Some(response) = response.as_object_mut() else {
        return;
    };
    let content = response
        .entry("content")
        .or_insert_with(|| json!({"application/json": {}}));
    let Some(content) = content.as_object_mut() else {
        return;
    };
    if let Some(json_body) = content
        .get_mut("application/json")
        .and_then(Value::as_object_mut)
    {
        let data = json_body.remove("schema").unwrap_or_else(|| json!({}));
        json_body.insert("schema".into(), envelope(data));
    }
}

fn envelope(data: Value) -> Value {
    let mut properties = Map::new();
    properties.insert(
        "success".into(),
        json!({"type": "boolean", "enum": [true], "description": "Always `true`."}),
    );
    properties.insert("data".into(), data);
    json!({
        "type": "object",
        "required": ["success", "data"],
        "properties": properties,
    })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_bodies_get_the_envelope_and_every_operation_its_errors() {
        let mut operation = json!({
            "tags": ["workers"],
            "requestBody": {},
            "responses": {
                "201": {"description": "made", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Worker"}}}},
                "409": {"description": "taken"}
            }
        });
        complete_operation("/workers/{id}", &mut operation);
        let created = &operation["responses"]["201"]["content"]["application/json"]["schema"];
        assert_eq!(created["required"], json!(["success", "data"]));
        assert_eq!(
            created["properties"]["data"]["$ref"],
            "#/components/schemas/Worker"
        );
        for status in [
            "400", "401", "403", "404", "408", "413", "415", "422", "429", "500", "503",
        ] {
            assert!(operation["responses"].get(status).is_some(), "{status}");
        }
        assert_eq!(operation["responses"]["409"]["description"], "taken");
    }
}

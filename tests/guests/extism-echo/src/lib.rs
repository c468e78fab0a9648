//! `ping` as an Extism plugin: parses its JSON input and answers
//! `{"pong":true}`, the same work as `guest-echo`'s `ping`.

use extism_pdk::{FnResult, Json, plugin_fn};
use serde::Serialize;

/// The answer of `ping`.
#[derive(Serialize)]
pub struct Pong {
    pong: bool,
}

/// Answers `{"pong":true}` to any JSON input.
#[plugin_fn]
pub fn ping(Json(_input): Json<serde_json::Value>) -> FnResult<Json<Pong>> {
    Ok(Json(Pong { pong: true }))
}

//! The real host: calls the `host-imports` world's imports.
//!
//! Only the import-only world is generated here. The export worlds are
//! generated in the plugin's crate by the export macros, because wit-component
//! merges every component-type section linked into a module: an export world
//! generated in the SDK would demand its exports from every plugin.

use crate::commands::CommandOutput;
use crate::http::{HttpError, MAX_RESPONSE_BYTES, Request, Response};
use crate::kv::KvError;
use crate::log::Level;

/// Bindings for the imports; the export macros point their `with` option here
/// so that a plugin does not generate the import glue a second time.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    reason = "generated code; the WIT carries the documentation"
)]
pub mod bindings {
    __autoagent_generate!({
        world: "host-imports",
        runtime_path: "crate::wit_bindgen::rt",
    });
}

use bindings::autoagent::plugin as wit;

pub(crate) fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let level = match level {
        Level::Trace => wit::log::Level::Trace,
        Level::Debug => wit::log::Level::Debug,
        Level::Info => wit::log::Level::Info,
        Level::Warn => wit::log::Level::Warn,
        Level::Error => wit::log::Level::Error,
    };
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    wit::log::log(level, message, &fields);
}

fn kv_error(err: wit::kv::KvError) -> KvError {
    match err {
        wit::kv::KvError::Denied(m) => KvError::Denied(m),
        wit::kv::KvError::QuotaExceeded(m) => KvError::QuotaExceeded(m),
        wit::kv::KvError::Storage(m) => KvError::Storage(m),
    }
}

pub(crate) fn kv_get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    wit::kv::get(key).map_err(kv_error)
}

pub(crate) fn kv_set(key: &str, value: &[u8]) -> Result<(), KvError> {
    wit::kv::set(key, value).map_err(kv_error)
}

pub(crate) fn kv_delete(key: &str) -> Result<(), KvError> {
    wit::kv::delete(key).map_err(kv_error)
}

pub(crate) fn kv_list_keys(prefix: &str) -> Result<Vec<String>, KvError> {
    wit::kv::list_keys(prefix).map_err(kv_error)
}

pub(crate) fn config_get(key: &str) -> Result<Option<String>, String> {
    wit::config::get(key)
}

pub(crate) fn commands_run(program: &str, args: &[&str]) -> Result<CommandOutput, String> {
    let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
    wit::commands::run(program, &args).map(|out| CommandOutput {
        status: out.status,
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

/// Sends a request through `wasi:http/outgoing-handler`.
pub(crate) fn http_send(request: &Request, url: &::http::Uri) -> Result<Response, HttpError> {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
    };
    use wasip2::io::streams::StreamError;

    let invalid = |what: &str| HttpError::InvalidRequest(what.to_owned());
    let entries: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone().into_bytes()))
        .collect();
    let headers = Fields::from_list(&entries)
        .map_err(|err| HttpError::InvalidRequest(format!("header refused: {err:?}")))?;
    let outgoing = OutgoingRequest::new(headers);
    let method = match request.method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_owned()),
    };
    outgoing
        .set_method(&method)
        .map_err(|()| invalid("method refused"))?;
    let scheme = if url.scheme_str() == Some("https") {
        Scheme::Https
    } else {
        Scheme::Http
    };
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme refused"))?;
    outgoing
        .set_authority(url.authority().map(|a| a.as_str()))
        .map_err(|()| invalid("authority refused"))?;
    outgoing
        .set_path_with_query(Some(url.path_and_query().map_or("/", |p| p.as_str())))
        .map_err(|()| invalid("path refused"))?;
    let body = outgoing.body().map_err(|()| invalid("body taken twice"))?;

    let code = |code: ErrorCode| match code {
        ErrorCode::HttpRequestDenied => HttpError::Denied(format!(
            "{} is not allowed by the manifest (http-hosts)",
            url.authority().map_or("", |a| a.as_str())
        )),
        other => HttpError::Failed(format!("{other:?}")),
    };
    // Hand the request over first: the host reads the body while it is
    // written, so a large body never waits on a full buffer.
    let options = match request.timeout {
        Some(timeout) => {
            let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
            let options = RequestOptions::new();
            options
                .set_connect_timeout(Some(nanos))
                .and_then(|()| options.set_first_byte_timeout(Some(nanos)))
                .and_then(|()| options.set_between_bytes_timeout(Some(nanos)))
                .map_err(|()| invalid("timeout refused"))?;
            Some(options)
        }
        None => None,
    };
    let pending = outgoing_handler::handle(outgoing, options).map_err(code)?;
    let sent = (|| {
        {
            let stream = body
                .write()
                .map_err(|()| invalid("body stream taken twice"))?;
            for chunk in request.body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|err| HttpError::Failed(format!("sending the body: {err:?}")))?;
            }
        }
        OutgoingBody::finish(body, None).map_err(code)
    })();

    pending.subscribe().block();
    // A request the host refused (or could not send) closes the body
    // stream; its own error says why, better than the closed stream.
    if let Err(err) = sent {
        return Err(match pending.get() {
            Some(Ok(Err(refused))) => code(refused),
            _ => err,
        });
    }
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(err))) => return Err(code(err)),
        Some(Err(())) | None => return Err(HttpError::Failed("no response".into())),
    };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| HttpError::Failed("response body taken twice".into()))?;
    let mut body = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| HttpError::Failed("response stream taken twice".into()))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(HttpError::Failed(format!(
                            "response body is over {MAX_RESPONSE_BYTES} bytes"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(err)) => {
                    return Err(HttpError::Failed(format!(
                        "reading the response: {}",
                        err.to_debug_string()
                    )));
                }
            }
        }
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

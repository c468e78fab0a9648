//! The one error type of the API and the JSON envelope it becomes.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::plans::PlanError;
use crate::plugins::{ErrorKind, InvokeError, LoadError, RemoveError};
use crate::recovery::RecoveryError;
use crate::store::StoreError;
use crate::tasks::TaskError;
use crate::workers::WorkerError;
use crate::workflows::WorkflowError;

/// The success envelope: `{"success": true, "data": ...}`.
#[derive(Debug, Serialize)]
pub struct Envelope<T> {
    success: bool,
    data: T,
}

/// Wraps `data` in the success envelope with status 200.
pub fn ok<T: Serialize>(data: T) -> Response {
    (
        StatusCode::OK,
        Json(Envelope {
            success: true,
            data,
        }),
    )
        .into_response()
}

/// Wraps `data` in the success envelope with status 201.
pub fn created<T: Serialize>(data: T) -> Response {
    (
        StatusCode::CREATED,
        Json(Envelope {
            success: true,
            data,
        }),
    )
        .into_response()
}

/// The error body: `{"success": false, "error": {"code", "message"}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    /// Always `false`.
    success: bool,
    /// What went wrong.
    error: ErrorBody,
}

/// The `error` member of [`ErrorEnvelope`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`.
    code: String,
    /// One sentence for people.
    message: String,
}

/// Every way a request can fail, each with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for a `Retry-After` header, when waiting can help.
    retry_after_secs: Option<u64>,
}

/// Marks a response refused because the store is faulted. The store logs
/// such an episode once, so the request log leaves these answers out of its
/// ERROR lines (see `api::count_requests`).
#[derive(Debug, Clone, Copy)]
pub struct StorageRefusal;

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// 503 `storage_unavailable` with `Retry-After`: the store is faulted (a
    /// full disk, an I/O error) and reopens itself; the same request may
    /// succeed later. Not logged: the store logs the episode once.
    pub fn storage_unavailable(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                format!(
                    "the host cannot store data now (the disk may be full); \
                     retry in {retry_after_secs} s"
                ),
            )
        }
    }

    /// 404 for a missing resource.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 422 for a well-formed request with a value that is not allowed.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    /// 500; the detail goes to the log, not to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error; the host log has the details",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorEnvelope {
            success: false,
            error: ErrorBody {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.code == "storage_unavailable" {
            response.extensions_mut().insert(StorageRefusal);
        }
        response
    }
}

/// The one mapping of store errors every domain error goes through: a
/// faulted store is 503 `storage_unavailable`, anything else the host's own
/// failure (500).
impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable {
                retry_after_secs, ..
            } => Self::storage_unavailable(retry_after_secs),
            other => Self::internal(other),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = match status {
            StatusCode::BAD_REQUEST => "invalid_json",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
            _ => "bad_request",
        };
        let message = match status {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                "expected a request with `Content-Type: application/json`".to_owned()
            }
            StatusCode::PAYLOAD_TOO_LARGE => format!(
                "request body is larger than the limit of {} bytes",
                super::MAX_BODY_BYTES
            ),
            _ => rejection.body_text(),
        };
        Self::new(status, code, message)
    }
}

impl From<WorkerError> for ApiError {
    fn from(err: WorkerError) -> Self {
        match err {
            WorkerError::Invalid { .. } => Self::invalid(err.to_string()),
            WorkerError::AlreadyExists(_) => {
                Self::new(StatusCode::CONFLICT, "conflict", err.to_string())
            }
            WorkerError::NotFound(_) => Self::not_found(err.to_string()),
            WorkerError::Store(store) => store.into(),
        }
    }
}

impl From<TaskError> for ApiError {
    fn from(err: TaskError) -> Self {
        match err {
            TaskError::Invalid { .. } => Self::invalid(err.to_string()),
            TaskError::NotFound(_) => Self::not_found(err.to_string()),
            TaskError::AlreadyEnded { .. } => {
                Self::new(StatusCode::CONFLICT, "conflict", err.to_string())
            }
            TaskError::Store(store) => store.into(),
            TaskError::Internal(message) => Self::internal(message),
        }
    }
}

impl From<WorkflowError> for ApiError {
    fn from(err: WorkflowError) -> Self {
        match err {
            WorkflowError::Invalid { .. } => Self::invalid(err.to_string()),
            WorkflowError::NotFound(_) => Self::not_found(err.to_string()),
            WorkflowError::AlreadyExists(_) => {
                Self::new(StatusCode::CONFLICT, "conflict", err.to_string())
            }
            WorkflowError::Store(store) => store.into(),
        }
    }
}

impl From<PlanError> for ApiError {
    fn from(err: PlanError) -> Self {
        match err {
            PlanError::Invalid { .. } => Self::invalid(err.to_string()),
            PlanError::NotFound(_) | PlanError::TemplateNotFound(_) => {
                Self::not_found(err.to_string())
            }
            PlanError::TemplateExists(_) => {
                Self::new(StatusCode::CONFLICT, "conflict", err.to_string())
            }
            PlanError::Conflict { code, .. } => {
                Self::new(StatusCode::CONFLICT, code, err.to_string())
            }
            PlanError::Store(store) => store.into(),
        }
    }
}

impl From<RecoveryError> for ApiError {
    fn from(err: RecoveryError) -> Self {
        match err {
            RecoveryError::Invalid { .. } => Self::invalid(err.to_string()),
            RecoveryError::CheckNotFound(_) | RecoveryError::IncidentNotFound(_) => {
                Self::not_found(err.to_string())
            }
            RecoveryError::Conflict { code, .. } => {
                Self::new(StatusCode::CONFLICT, code, err.to_string())
            }
            RecoveryError::Store(store) => store.into(),
        }
    }
}

impl From<InvokeError> for ApiError {
    fn from(err: InvokeError) -> Self {
        let message = err.to_string();
        match err {
            InvokeError::NotFound { .. } | InvokeError::UnknownCapability { .. } => {
                Self::not_found(message)
            }
            InvokeError::Call(call) => Self::new(status_of(call.kind()), call.code(), message),
        }
    }
}

/// The status a failed plugin call answers with, by its kind: the caller's
/// input or an export the plugin does not have (422), a plugin that failed (502), one that ran out of time (504),
/// or a host that has no room or no plugin for it now (503).
fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        // Asking a plugin for an export of another kind (a check of a
        // strategy) is the caller's mistake, like an unknown capability.
        ErrorKind::InvalidInput | ErrorKind::Unsupported | ErrorKind::WrongKind => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Busy | ErrorKind::HostMemory | ErrorKind::Unavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorKind::Failed
        | ErrorKind::Denied
        | ErrorKind::MemoryLimit
        | ErrorKind::Trap
        | ErrorKind::OutputTooLarge
        | ErrorKind::InvalidOutput
        | ErrorKind::Host => StatusCode::BAD_GATEWAY,
    }
}

impl From<LoadError> for ApiError {
    fn from(err: LoadError) -> Self {
        let code = match &err {
            LoadError::Manifest(_) => "invalid_manifest",
            LoadError::Compile(_) | LoadError::Compiler(_) => "invalid_component",
            LoadError::WrongWorld { .. } => "wrong_world",
            LoadError::Mismatch(_) => "manifest_mismatch",
            LoadError::Forbidden(_) => {
                return Self::new(StatusCode::FORBIDDEN, "forbidden", err.to_string());
            }
            LoadError::Io { .. } => return Self::internal(err),
        };
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, err.to_string())
    }
}

impl From<RemoveError> for ApiError {
    fn from(err: RemoveError) -> Self {
        match err {
            RemoveError::NotFound { .. } => Self::not_found(err.to_string()),
            RemoveError::Forbidden(_) => {
                Self::new(StatusCode::FORBIDDEN, "forbidden", err.to_string())
            }
            RemoveError::Io(_) => Self::internal(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_faulted_store_answers_503_with_retry_after_wherever_it_was_met() {
        let unavailable = || StoreError::Unavailable {
            reason: "I/O error: No space left on device".into(),
            retry_after_secs: 2,
        };
        // Every domain error goes through the one mapping.
        for error in [
            ApiError::from(unavailable()),
            ApiError::from(TaskError::Store(unavailable())),
            ApiError::from(WorkerError::Store(unavailable())),
            ApiError::from(WorkflowError::Store(unavailable())),
        ] {
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], "2");
            assert!(response.extensions().get::<StorageRefusal>().is_some());
        }
    }

    #[test]
    fn other_store_failures_stay_internal_errors() {
        let response =
            ApiError::from(TaskError::Store(StoreError::Backend("boom".into()))).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
        assert!(response.extensions().get::<StorageRefusal>().is_none());
    }
}

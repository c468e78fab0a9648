//! The tower layers around the API router: request body and whole-request
//! timeouts and the panic net, each answering in the API's error envelope.
//!
//! tower-http times request bodies and catches panics; the small middlewares
//! here turn what those report (a failed body read, a panic payload) into an
//! [`ApiError`] and a log line, and put the whole request under its
//! deadline. They run on every request, so the common case (a request
//! without a body, answered in time) allocates nothing.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::{TimeoutBody, TimeoutError};

use super::Limits;
use crate::api::ApiError;

/// Wraps `router` in the request body timeout, the whole-request deadline
/// and the panic net of `limits`, outermost last:
///
/// 0. `answer_past_deadline`: a request still running after
///    [`Limits::request_timeout`] is dropped and answered 503
///    `server_timeout`.
/// 1. [`CatchPanicLayer`]: a panic anywhere below becomes a 500
///    `internal_error` and one ERROR line naming the panic.
/// 2. `guard_body`, for a request with a body: a read that waits longer
///    than [`Limits::body_timeout`] for its next chunk fails, and the
///    request is answered 408 `request_timeout` whatever the handler made
///    of the failure; a response sent before the body was read to its end
///    says `Connection: close`.
///
/// Two small middlewares rather than one per concern: they run on every
/// request, and each layer costs a boxed future and a clone of the rest of
/// the stack.
pub fn with_limits(router: Router, limits: &Limits) -> Router {
    router
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            answer_past_deadline,
        ))
        .layer(CatchPanicLayer::custom(answer_panic))
        .layer(middleware::from_fn_with_state(
            limits.body_timeout,
            guard_body,
        ))
}

/// The body's two guards; a request without a body passes straight on.
///
/// - A body read that waits longer than `body_timeout` for its next chunk
///   fails. Handlers turn a failed body read into their own rejection (a
///   400 from the JSON extractor, for one); noting the timeout on the way
///   lets this answer what really happened: 408.
/// - A response sent before the body was read to its end (an upload refused
///   before its body was looked at, a timeout) is marked `Connection:
///   close`. hyper then closes the connection with the body unread, and a
///   client that sees no `close` would put the connection back in its pool
///   and send its next request into a socket the host has shut (the client
///   sees a broken pipe).
async fn guard_body(
    State(body_timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    // hyper knows a request without a body (no length, or length 0) by its
    // headers: nothing to time out on, nothing left unread.
    if http_body::Body::is_end_stream(request.body()) {
        return next.run(request).await;
    }
    let finished = Arc::new(AtomicBool::new(false));
    let stalled = Arc::new(AtomicBool::new(false));
    let seen = stalled.clone();
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let (parts, body) = request.into_parts();
    let timed = TimeoutBody::new(body_timeout, body).map_err(move |err| {
        if err.is::<TimeoutError>() {
            seen.store(true, Ordering::Relaxed);
        }
        axum::Error::new(err)
    });
    let tracked = Body::new(ReadToEnd {
        inner: Body::new(timed),
        finished: finished.clone(),
    });
    let mut response = next.run(Request::from_parts(parts, tracked)).await;
    if stalled.load(Ordering::Relaxed) {
        tracing::warn!(%method, path = uri.path(), "request body stalled; answered 408");
        response = ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body sent nothing for {} s; the host stopped waiting",
                body_timeout.as_secs()
            ),
        )
        .into_response();
    }
    if !finished.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that notes when it has been read to its end.
struct ReadToEnd {
    inner: Body,
    finished: Arc<AtomicBool>,
}

impl http_body::Body for ReadToEnd {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) {
            self.finished.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.finished.store(true, Ordering::Release);
        }
        end
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Runs the request under its deadline; past it the handler is dropped
/// (its future, and whatever it was waiting for) and the request answered
/// 503 `server_timeout`. Most requests are answered in their first poll,
/// so the timer is armed only for one that was not: setting one up and
/// tearing it down is a measurable part of a small request.
async fn answer_past_deadline(
    State(request_timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let mut answer = std::pin::pin!(next.run(request));
    let first = std::future::poll_fn(|cx| Poll::Ready(answer.as_mut().poll(cx))).await;
    if let Poll::Ready(response) = first {
        return response;
    }
    match tokio::time::timeout(request_timeout, answer).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(%method, path = uri.path(), "request took too long; answered 503");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_timeout",
                format!(
                    "the host did not finish this request within {} s and abandoned it",
                    request_timeout.as_secs()
                ),
            )
            .into_response()
        }
    }
}

/// The panic net's answer. `ApiError::new` rather than `ApiError::internal`:
/// this line is the one log line of the panic, whatever the API's own
/// logging of internal errors does.
fn answer_panic(payload: Box<dyn Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)");
    tracing::error!(panic = %message, "request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "internal error; the host log has the details",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use axum::routing::{get, post};
    use tower::ServiceExt;

    use super::*;

    /// Log lines written while a test runs, captured instead of printed.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn limits() -> Limits {
        Limits {
            body_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
            ..Limits::DEFAULT
        }
    }

    fn app() -> Router {
        let router = Router::new()
            .route("/panic", get(panics))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "never"
                }),
            )
            .route("/echo", post(|body: String| async move { body }));
        with_limits(router, &limits())
    }

    async fn panics() -> &'static str {
        panic!("the handler broke")
    }

    async fn envelope(response: Response) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_the_envelope_and_logs_one_error() {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let request = Request::get("/panic").body(Body::empty()).unwrap();
        let response = app().oneshot(request).await.unwrap();

        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = envelope(response).await;
        assert_eq!(body["success"], false);
        assert_eq!(body["error"]["code"], "internal_error");
        let text = log.text();
        let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "log: {text}");
        assert!(errors[0].contains("the handler broke"), "log: {text}");
    }

    #[tokio::test]
    async fn a_request_past_the_request_timeout_answers_503_in_the_envelope() {
        let request = Request::get("/slow").body(Body::empty()).unwrap();
        let response = app().oneshot(request).await.unwrap();

        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = envelope(response).await;
        assert_eq!(body["error"]["code"], "server_timeout");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("within 2 s")
        );
    }

    #[tokio::test]
    async fn a_body_that_stalls_answers_408_in_the_envelope() {
        let request = Request::post("/echo")
            .body(Body::new(Stalling { sent: false }))
            .unwrap();
        let response = app().oneshot(request).await.unwrap();

        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        let body = envelope(response).await;
        assert_eq!(body["error"]["code"], "request_timeout");
    }

    /// A body that yields one chunk and then never another, as a client that
    /// stops sending would.
    struct Stalling {
        sent: bool,
    }

    impl hyper::body::Body for Stalling {
        type Data = axum::body::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
            if self.sent {
                // The body timeout's timer is what wakes the request.
                return std::task::Poll::Pending;
            }
            self.sent = true;
            let chunk = axum::body::Bytes::from_static(b"0123456789");
            std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))))
        }
    }

    #[tokio::test]
    async fn answers_within_the_limits_pass_unchanged() {
        let request = Request::post("/echo").body(Body::from("hello")).unwrap();
        let response = app().oneshot(request).await.unwrap();

        assert_eq!(response.status(), StatusCode::OK);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello");
    }
}
